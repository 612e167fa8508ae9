"""Time generating, sealing and storing a randomization list of 1,000 strata x 1,000 slots.

Usage: python bench/bench_lists.py [DATABASE_URL ...]   (default: a temporary SQLite file)
Target (issue 4): under 60 s with peak memory under 500 MB, on SQLite and on PostgreSQL.

The trial is the IFN-gamma definition with 10 sites and a 100-level factor (1,000 strata), blocks
{2, 4, 6}, 1,000 slots requested per stratum (whole blocks, so a little more are generated).
"""

from __future__ import annotations

import re
import resource
import sys
import tempfile
import time
from pathlib import Path

from allocator import crypto, migrate
from allocator.audit import Actor
from allocator.db import Database
from allocator.services import trials
from allocator.services.context import ServiceContext
from allocator.services.lists import generation, integrity
from allocator.settings import Environment, Settings

ROOT = Path(__file__).resolve().parent.parent
ACTOR = Actor(user_id=None, username="bench", name="Benchmark", role="system", request_id="bench")


def definition() -> str:
    text = (ROOT / "trials" / "ifn-gamma-pais.toml").read_text(encoding="utf-8")
    levels = ",\n".join(
        f'  {{ code = "l{i:03d}", label = {{ en = "L{i}", fr = "L{i}" }} }}' for i in range(100)
    )
    text = re.sub(r"levels = \[\n.*?\n\]", f"levels = [\n{levels},\n]", text, count=1, flags=re.S)
    text = text.replace("slots_per_stratum = 120", "slots_per_stratum = 1000")
    sites = "".join(
        f'\n[[sites]]\ncode = "S{i:02d}"\nname = "Site {i}"\ncity = "Paris"\nprincipal_investigator = "Dr {i}"\n'
        for i in range(3, 11)
    )
    return text.replace("# --- What the public record", sites + "\n# --- What the public record")


def run(url: str, key_dir: Path) -> None:
    migrate.upgrade(url)
    settings = Settings(env=Environment.TEST, database_url=url, key_dir=key_dir)
    db = Database.connect(url)
    ctx = ServiceContext.build(settings, db, crypto.KeyRing.load(key_dir))
    trials.load_trial(ctx, ACTOR, definition(), source_name="bench.toml")
    started = time.perf_counter()
    generated = generation.generate_lists(ctx, ACTOR, "IFNG-PAIS", "test")
    elapsed = time.perf_counter() - started
    check_started = time.perf_counter()
    (result,) = integrity.check_integrity(ctx, ACTOR, "IFNG-PAIS")
    check = time.perf_counter() - check_started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{db.dialect}: {generated.strata:,} strata, {generated.slots:,} slots generated, sealed and stored in "
        f"{elapsed:.1f} s ({generated.slots / elapsed:,.0f} slots/s); integrity check {check:.1f} s "
        f"({'intact' if result.ok else 'FAILED'}); peak memory of the process so far {peak_mb:.0f} MB"
    )
    db.dispose()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        key_dir = Path(tmp) / "keys"
        crypto.KeyRing.create_missing(key_dir)
        urls = sys.argv[1:] or [f"sqlite:///{Path(tmp) / 'bench.db'}"]
        for url in urls:
            run(url, key_dir)


if __name__ == "__main__":
    main()
