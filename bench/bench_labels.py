"""Benchmark: one label sheet of 1,000 kit labels (target: under 2 s per sheet).

Run from the repository root:  .venv/bin/python bench/bench_labels.py [--count N] [--repeat R]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

# The script is run by path, so the repository root is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kits import (
    IMMEDIATE_LAYOUT,
    OUTER_LAYOUT,
    Bilingual,
    DocumentMeta,
    Expiry,
    KitLabel,
    LabelKind,
    TrialLabelInfo,
    build_payload,
    generate_kit_numbers,
    render_label_sheet,
)

TARGET_SECONDS = 2.0
_KEY = secrets.token_bytes(32)


def _mac(message: bytes) -> bytes:
    return hmac.new(_KEY, message, hashlib.sha256).digest()


def _trial() -> TrialLabelInfo:
    return TrialLabelInfo(
        trial_code="APHP220672",
        sponsor_name="Assistance Publique \u2013 H\u00f4pitaux de Paris (AP-HP)",
        sponsor_address="1 avenue Victoria, 75004 Paris, France",
        main_contact_name="DRCI AP-HP",
        main_contact_phone="+33 1 40 27 00 00",
        emergency_phone="+33 1 40 05 48 48",
        eu_ct_number="2023-506725-11-00",
        protocol_code="APHP220672",
        nct_number="NCT06694740",
        short_title="Interf\u00e9ron gamma-1b versus placebo (PAIS)",
        product_name=Bilingual(
            "Interf\u00e9ron gamma-1b 2 x 10^6 UI ou placebo", "Interferon gamma-1b 2 x 10^6 IU or placebo"
        ),
        pharmaceutical_form=Bilingual("Solution injectable", "Solution for injection"),
        route=Bilingual("Voie sous-cutan\u00e9e", "Subcutaneous use"),
        quantity=Bilingual("1 seringue", "1 syringe"),
        storage=Bilingual("Entre 2 \u00b0C et 8 \u00b0C", "Store at 2 \u00b0C to 8 \u00b0C"),
        directions=Bilingual("Selon le protocole", "As per protocol"),
        clinical_trial_use=Bilingual("Pour essai clinique uniquement", "For clinical trial use only"),
        print_keep_out_of_reach=False,
        test_mode=False,
        software_version="bench",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trial = _trial()
    numbers = generate_kit_numbers(args.count)
    labels = [
        KitLabel(
            kit_number=number,
            qr_payload=build_payload(trial.trial_code, number, f"D{index % 3 + 1}", _mac),
            batch="BL-2409A",
            expiry=Expiry(2027, 3),
            unit=f"D{index % 3 + 1}",
            site_code="75-01",
        )
        for index, number in enumerate(numbers)
    ]
    document = DocumentMeta("BENCH-0001", datetime(2025, 3, 1, tzinfo=UTC))
    worst = 0.0
    for kind, layout in ((LabelKind.IMMEDIATE, IMMEDIATE_LAYOUT), (LabelKind.OUTER, OUTER_LAYOUT)):
        times = []
        pdf = b""
        for _ in range(args.repeat):
            start = time.perf_counter()
            pdf = render_label_sheet(trial, labels, kind=kind, document=document, layout=layout)
            times.append(time.perf_counter() - start)
        best = min(times)
        worst = max(worst, best)
        pages = -(-len(labels) // layout.per_page)
        print(
            f"{kind.value:9s} labels: {len(labels)} labels, {pages} pages, best of {args.repeat}: "
            f"{best:.2f} s ({best / len(labels) * 1000:.2f} ms/label), {len(pdf) / 1024:.0f} KiB"
        )
    verdict = "OK" if worst < TARGET_SECONDS else "SLOWER THAN TARGET"
    print(f"target {TARGET_SECONDS:.1f} s per sheet: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
