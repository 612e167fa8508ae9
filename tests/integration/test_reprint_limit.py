"""LBL-12: every printed document carries its reprint number in its duplicate marking, laid out for
at most 999 reprints (kits.MAX_REPRINT_NUMBER). The 1000th reprint used to reach the renderer and
fail there (LabelDataError, a 500); it is now refused as a 409 `reprint-limit` problem in plain
words, before anything is signed, rendered or written. The earlier prints are added as rows (999
real prints would take minutes)."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

import kits as kitlib
from allocator.models import AuditEvent, PrintedDocument, Signature
from allocator.permissions import Scope
from allocator.services import codebreak, dispensing, documents, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import ReprintLimitReached
from allocator.services.subjects import confirmation
from allocator.services.supply import kit_lists
from tests.support import CLI_ACTOR, GOOD_PASSWORD, TRIAL, load_ifn, person, randomization, ready_trial
from tests.unit.kits.kits_testdata import all_text, flat

ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)
pytestmark = pytest.mark.req("LBL-12")


def add_earlier_prints(ctx: ServiceContext, like: str, count: int, *, reprint_of: str | None = None) -> None:
    """`count` more printed documents like `like` (same kind, subject, items), as if printed before."""
    with ctx.db.unit_of_work() as s:
        model = s.execute(select(PrintedDocument).where(PrintedDocument.document_id == like)).scalar_one()
        s.add_all(
            PrintedDocument(
                trial_id=model.trial_id,
                kind=model.kind,
                document_id=f"OLD-{like}-{n}",
                subject_id=model.subject_id,
                items=list(model.items),
                reprint_of=reprint_of,
                reprint_number=n,
                content_sha256=model.content_sha256,
                printed_at=model.printed_at,
                printed_by_id=model.printed_by_id,
                printed_by_name=model.printed_by_name,
            )
            for n in range(1, count + 1)
        )


def counts(ctx: ServiceContext) -> tuple[int, int, int]:
    with ctx.db.reading() as s:
        return tuple(  # type: ignore[return-value]
            s.execute(select(func.count()).select_from(model)).scalar_one()
            for model in (PrintedDocument, AuditEvent, Signature)
        )


def test_the_limit_is_the_renderers_and_the_message_says_it() -> None:
    assert kitlib.MAX_REPRINT_NUMBER == 999
    assert f" {kitlib.MAX_REPRINT_NUMBER} times" in documents.REPRINT_LIMIT_MESSAGE
    assert documents.checked_reprint_number(999) == 999
    with pytest.raises(ReprintLimitReached) as refused:
        documents.checked_reprint_number(1000)
    assert refused.value.status == 409 and refused.value.slug == "reprint-limit"


def test_the_1000th_reprint_of_a_code_break_sheet_is_refused_cleanly(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    kit_lists.generate_kit_list(ctx, CLI_ACTOR, TRIAL, count=4, lot_code="LOT-CB", expiry=date(2027, 6, 30))
    stat = person(ctx, "stat", "unblinded_statistician")
    original, _, _ = codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED)
    add_earlier_prints(ctx, original, 998, reprint_of=original)
    last_id, pdf, _ = codebreak.reprint_document(
        ctx, stat, TRIAL, original, reason="jammed", signature=SIGNED
    )
    assert pdf.startswith(b"%PDF")  # reprint no. 999 still prints
    before = counts(ctx)
    with pytest.raises(ReprintLimitReached) as refused:
        codebreak.reprint_document(ctx, stat, TRIAL, last_id, reason="jammed again", signature=SIGNED)
    assert "999 times" in refused.value.detail
    assert counts(ctx) == before  # nothing signed, printed or audited


def test_the_1000th_reprint_of_a_dispensation_sheet_and_a_confirmation_is_refused(
    ctx: ServiceContext,
) -> None:
    ready = ready_trial(ctx)
    result = randomization(ctx, ready.investigator, "P1-0001")
    number, kits = result.subject_number, {k.day: k.kit_number for k in result.kits}
    dispensing.dispense(ctx, ready.pharmacist, TRIAL, number, kits, scope=ALL, signature=SIGNED)
    sheet, _ = dispensing.dispensation_sheet(ctx, ready.pharmacist, TRIAL, number, ALL)
    add_earlier_prints(ctx, sheet, 999, reprint_of=sheet)
    before = counts(ctx)
    with pytest.raises(ReprintLimitReached):
        dispensing.dispensation_sheet(ctx, ready.pharmacist, TRIAL, number, ALL)
    assert counts(ctx) == before

    printed, _ = confirmation.print_confirmation(ctx, ready.investigator, TRIAL, number, ALL)
    add_earlier_prints(ctx, printed, 998)
    _, last = confirmation.print_confirmation(ctx, ready.investigator, TRIAL, number, ALL)
    text = " ".join(flat(all_text(last)).split())
    assert "DUPLICATA – réimpression n° 999 / DUPLICATE – reprint no. 999" in text
    before = counts(ctx)
    with pytest.raises(ReprintLimitReached):
        confirmation.print_confirmation(ctx, ready.investigator, TRIAL, number, ALL)
    assert counts(ctx) == before
