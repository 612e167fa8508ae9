"""Print kit labels, each printed document recorded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import select

import kits as kitlib
from allocator.audit import Actor
from allocator.models import Batch, Kit, PrintedDocument, Site
from allocator.permissions import Scope
from allocator.services import documents
from allocator.services.context import ServiceContext
from allocator.services.documents import next_document_id
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import current_definition, get_trial
from allocator.services.supply.kit_rules import KIT_UNIT, label_info, mac, number_from_scan, unreadable

# --- labels (LBL-01..LBL-04, LBL-12) ---------------------------------------------------------


def _expiry(value: date | None) -> kitlib.Expiry:
    if value is None:  # pragma: no cover - every stored kit has an expiry
        raise Conflict("a kit without an expiry date cannot be labelled")
    return kitlib.Expiry(value.year, value.month)


def print_kit_labels(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    kit_numbers: Sequence[str],
    *,
    kind: str,
    scope: Scope,
    depot: bool,
) -> tuple[str, bytes]:
    """Labels for the given kits (outer or immediate, French first). A kit printed before makes
    the document a reprint, marked DUPLICATA, numbered by that kit's reprints and counted (LBL-12);
    new kits and reprints go in separate documents. Returns (document id, PDF)."""
    try:
        label_kind = kitlib.LabelKind(kind)
    except ValueError:
        raise ValidationFailed(
            "unknown label kind", errors=[FieldProblem("kind", "outer or immediate")]
        ) from None
    problems = []
    numbers = []
    for index, raw in enumerate(kit_numbers):
        try:
            number = number_from_scan(raw, trial_code, ctx)  # typed or scanned (LBL-09)
        except (kitlib.KitNumberError, kitlib.PayloadError) as exc:
            problems.append(FieldProblem(f"kits[{index}]", unreadable(exc)))
        else:
            if number not in numbers:
                numbers.append(number)
    if problems or not numbers:
        raise ValidationFailed(
            "invalid kit numbers", errors=problems or [FieldProblem("kits", "give at least one")]
        )
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        rows = session.execute(
            select(Kit, Batch.lot_code)
            .join(Batch, Batch.id == Kit.batch_id)
            .where(Kit.trial_id == trial.id, Kit.kit_number.in_(numbers))
        ).all()
        found = {
            kit.kit_number: (kit, lot)
            for kit, lot in rows
            if (kit.site_id is None and depot) or (kit.site_id is not None and scope.allows_site(kit.site_id))
        }
        unknown = [n for n in numbers if n not in found]
        if unknown:
            raise NotFound(
                "unknown kits",
                errors=[
                    FieldProblem("kits", f"no kit {kitlib.format_kit_number(n)} within your reach")
                    for n in unknown
                ],
            )
        sites = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        labels = [
            kitlib.KitLabel(
                kit_number=n,
                qr_payload=kitlib.build_payload(trial.code, n, KIT_UNIT, mac(ctx)),
                batch=found[n][1],
                expiry=_expiry(found[n][0].expiry_date),
                unit=KIT_UNIT,
                site_code=sites.get(found[n][0].site_id or -1, "DEPOT"),
            )
            for n in numbers
        ]
        # How many earlier documents of this kind carried each kit: a kit's n-th reprint is numbered n.
        printed_before = dict.fromkeys(numbers, 0)
        for items in session.execute(
            select(PrintedDocument.items).where(
                PrintedDocument.trial_id == trial.id,
                PrintedDocument.kind == documents.kit_labels_kind(label_kind),
            )
        ).scalars():
            for item in set(items) & printed_before.keys():
                printed_before[item] += 1
        duplicates = {n for n, times in printed_before.items() if times}
        if duplicates and duplicates != set(numbers):
            # One document is either all originals or all DUPLICATA, so that the reconciliation counts
            # every label as printed or reprinted correctly (LBL-11, LBL-12).
            raise ValidationFailed(
                "print new labels and reprints separately",
                errors=[
                    FieldProblem(
                        "kits",
                        "already printed, reprint separately: "
                        + ", ".join(kitlib.format_kit_number(n) for n in sorted(duplicates)),
                    )
                ],
            )
        document_id = next_document_id(session, trial, "LBL")
        meta = kitlib.DocumentMeta(
            document_id=document_id,
            created_at=now,
            reprint_number=documents.checked_reprint_number(max(printed_before.values())),
        )
        pdf = kitlib.render_label_sheet(
            label_info(definition, ctx.settings.env), labels, kind=label_kind, document=meta
        )
        documents.record_print(
            ctx,
            session,
            actor,
            trial,
            kind=documents.kit_labels_kind(label_kind),
            document_id=document_id,
            pdf=pdf,
            items=numbers,
            now=now,
            reprint_number=meta.reprint_number,
            audit={
                "kind": documents.kit_labels_kind(label_kind),
                "kits": len(numbers),
                "reprint": meta.reprint_number,
            },
        )
        return document_id, pdf
