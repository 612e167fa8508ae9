"""Offline code-break sheets (UNB-06, UNB-07): signed and audited generation, reprints and
replacements; one sheet per kit with the kit's own arm under the seal; scoped checks; a
reconciliation that balances against the truth and flags sheets opened without a registered offline
unblinding; no site activation and no shipment before the sheets exist.

The tests open kit arms with the key ring to know the truth; the application reads them only through
`arm_access`."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pypdf
import pytest
from click.testing import CliRunner
from sqlalchemy import Boolean, String, create_engine, func, literal, select
from sqlalchemy.orm import Session

import kits as kitlib
from allocator.audit import Actor
from allocator.models import (
    AuditEvent,
    CodeBreakCheck,
    CodeBreakCheckStatus,
    CodeBreakSheet,
    Kit,
    LoginThrottle,
    PrintedDocument,
    Signature,
    Site,
    Trial,
)
from allocator.permissions import Scope
from allocator.services import auth, codebreak, unblinding
from allocator.services import sites as services_sites
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, NotFound, ValidationFailed
from allocator.services.reports.filters import Window
from allocator.services.signatures import SignatureRefused, SignatureRequest
from allocator.services.subjects import randomize
from allocator.services.supply import kit_lists, shipments
from kits.codebreak import SEALED_BOX
from tests.support import (
    CLI_ACTOR,
    CODE_BREAK_EVIDENCE,
    ELIGIBLE,
    GOOD_PASSWORD,
    Clock,
    arm_of,
    code_break_sheets,
    load_ifn,
    person,
    ready_trial,
)
from tests.unit.kits.kits_testdata import decode_qr_codes, flat, page_count, text_runs
from tests.unit.kits.test_kit_codebreak import beside

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = SignatureRequest(password=GOOD_PASSWORD)
HERE = auth.Client("192.0.2.1", "pytest", "req")
LABELS = {"A": "Interferon gamma-1b", "B": "Placebo"}
ARM_WORDS = ("placebo", "interferon", "interféron", "gamma")


def audit(ctx: ServiceContext, action: str) -> list[AuditEvent]:
    with ctx.db.reading() as s:
        return list(
            s.execute(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
            ).scalars()
        )


def sheets_by_kit(ctx: ServiceContext) -> dict[str, list[str]]:
    """kit number -> its sheet numbers, oldest first."""
    with ctx.db.reading() as s:
        rows = s.execute(
            select(Kit.kit_number, CodeBreakSheet.sheet_number)
            .join(CodeBreakSheet, CodeBreakSheet.kit_id == Kit.id)
            .order_by(CodeBreakSheet.id)
        ).all()
    out: dict[str, list[str]] = {}
    for kit_number, sheet_number in rows:
        out.setdefault(kit_number, []).append(sheet_number)
    return out


def site_scope(ctx: ServiceContext, code: str) -> Scope:
    with ctx.db.reading() as s:
        return Scope(
            all_sites=False,
            site_ids=frozenset({s.execute(select(Site.id).where(Site.code == code)).scalar_one()}),
        )


def page_sheet(pdf: bytes, page: int) -> tuple[str, str, str, str]:
    """(QR code, kit number printed beside its caption, text in the sealed box, every other text) of
    one page."""
    runs = text_runs(pdf, page)
    left, bottom, width, height = SEALED_BOX

    def inside(x: float, y: float) -> bool:
        return left <= x <= left + width and bottom <= y <= bottom + height

    sealed = " ".join(r.text for r in runs if inside(r.x, r.y))
    visible = " ".join(r.text for r in runs if not inside(r.x, r.y))
    (code,) = decode_qr_codes(pdf, page, scale=2.0)
    return code.text, beside(runs, "N\u00b0 de kit / Kit no."), sealed, visible


def first_page_text(pdf: bytes) -> str:
    return flat(pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text())


def no_arm_in(text: str) -> None:
    lowered = text.lower()
    for word in ARM_WORDS:
        assert word not in lowered, word


@pytest.fixture
def stat(ctx: ServiceContext) -> Actor:
    """The trial loaded, 16 kits at the depot without sheets, and the unblinded statistician."""
    load_ifn(ctx)
    kit_lists.generate_kit_list(ctx, CLI_ACTOR, TRIAL, count=16, lot_code="LOT-CB", expiry=date(2027, 6, 30))
    return person(ctx, "stat", "unblinded_statistician")


# --- generation ----------------------------------------------------------------------------------


@pytest.mark.req("UNB-06", "ACC-12")
def test_generation_is_signed_and_a_wrong_password_is_audited_and_counts_toward_lockout(
    ctx: ServiceContext, stat: Actor
) -> None:
    with pytest.raises(ValidationFailed) as unsigned:
        codebreak.generate_sheets(ctx, stat, TRIAL, signature=None)
    assert [e.field for e in unsigned.value.errors] == ["password"]
    with pytest.raises(SignatureRefused) as wrong:
        codebreak.generate_sheets(ctx, stat, TRIAL, signature=SignatureRequest("not my password at all"))
    assert [e.field for e in wrong.value.errors] == ["password"]
    (failed,) = audit(ctx, "signature.failed")
    assert json.loads(failed.new_values or "{}") == {"meaning": codebreak.GENERATION_MEANING}
    assert failed.actor_username == "stat"
    with ctx.db.reading() as s:
        assert (
            s.execute(select(LoginThrottle.failures).where(LoginThrottle.key == "account:stat")).scalar_one()
            == 1
        )
        assert s.execute(select(func.count()).select_from(CodeBreakSheet)).scalar_one() == 0
    assert audit(ctx, "arm.read") == [] and audit(ctx, "code_break.generated") == []
    # A person without a password of their own (the command line) cannot sign either.
    with pytest.raises(SignatureRefused):
        codebreak.generate_sheets(ctx, CLI_ACTOR, TRIAL, signature=SIGNED)


@pytest.mark.req("UNB-06", "BLD-08", "BLD-01", "BLD-03")
def test_one_sheet_per_kit_unique_numbers_audited_arm_read_and_the_kits_own_arm_under_the_seal(
    ctx: ServiceContext, stat: Actor
) -> None:
    with ctx.db.reading() as s:
        before = s.execute(select(func.max(AuditEvent.id))).scalar_one()
    document_id, pdf, count = codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED)
    assert count == 16 and document_id == f"CBDOC-{TRIAL}-000001"
    with ctx.db.reading() as s:
        rows = s.execute(
            select(CodeBreakSheet, Kit.kit_number)
            .join(Kit, Kit.id == CodeBreakSheet.kit_id)
            .order_by(CodeBreakSheet.sheet_number)
        ).all()
        kits_total = s.execute(select(func.count()).select_from(Kit)).scalar_one()
        (printed,) = s.execute(select(PrintedDocument)).scalars()
        signature = s.execute(select(Signature)).scalar_one()
    numbers = [sheet.sheet_number for sheet, _ in rows]
    assert numbers == [f"CB-{TRIAL}-{i:06d}" for i in range(1, 17)]
    assert len({kit for _, kit in rows}) == kits_total == 16  # every kit exactly once
    # Numbered in kit-number order (random), not in the block order of the kit list (BLD-03).
    assert [kit for _, kit in rows] == sorted(kit for _, kit in rows)
    assert {sheet.document_id for sheet, _ in rows} == {document_id}
    assert {sheet.signature_id for sheet, _ in rows} == {signature.id}
    assert (signature.meaning, signature.username, signature.object_id) == (
        codebreak.GENERATION_MEANING,
        "stat",
        document_id,
    )
    assert (printed.kind, printed.document_id, printed.items, printed.reprint_number) == (
        "code_break_sheets",
        document_id,
        numbers,
        0,
    )
    # The stored digest is keyed: a plain hash of a deterministic PDF would be an oracle for the arm.
    assert printed.content_sha256 != hashlib.sha256(pdf).hexdigest()

    (read,) = audit(ctx, "arm.read")
    assert json.loads(read.new_values or "{}") == {"purpose": "code-break sheets", "kits": 16}
    assert read.actor_username == "stat"
    (generated,) = audit(ctx, "code_break.generated")
    values = json.loads(generated.new_values or "{}")
    assert values == {
        "kind": "code_break_sheets",
        "sheets": 16,
        "first": numbers[0],
        "last": numbers[-1],
        "reprint": 0,
        "signature": signature.id,
    }
    with ctx.db.reading() as s:
        entries = list(s.execute(select(AuditEvent).where(AuditEvent.id > before)).scalars())
    assert [e.action for e in entries] == ["signature.applied", "arm.read", "code_break.generated"]
    for entry in entries:  # no arm in clear, nor sealed, in what the generation wrote
        no_arm_in(f"{entry.object_id} {entry.old_values} {entry.new_values} {entry.reason}")
        assert entry.sealed_values is None
        assert not {"A", "B"} & set(json.loads(entry.new_values or "{}").values())

    # The PDF: one page per kit, QR = sheet number, the kit printed beside it, its own arm sealed.
    assert page_count(pdf) == 16
    seen_arms: Counter[str] = Counter()
    visible: dict[str, str] = {}
    for page, (sheet, kit_number) in enumerate(rows):
        code, kit, sealed, text = page_sheet(pdf, page)
        assert code == sheet.sheet_number
        assert kit == kitlib.format_kit_number(kit_number)
        arm = arm_of(ctx, kit_number)
        assert sealed == LABELS[arm]
        seen_arms[arm] += 1
        # What is visible, numbers masked, is the same for both arms.
        text = text.replace(kitlib.format_kit_number(kit_number), "####-####")
        text = text.replace(sheet.sheet_number, "CB-######").replace(f"Page {page + 1}/16", "Page #/16")
        visible.setdefault(arm, text)
        assert text == visible[arm]
    assert seen_arms == {"A": 8, "B": 8}
    assert visible["A"] == visible["B"]


@pytest.mark.req("UNB-06")
def test_generation_covers_only_kits_without_a_sheet_and_refuses_when_there_is_nothing_to_do(
    ctx: ServiceContext, stat: Actor
) -> None:
    assert sheets_by_kit(ctx) == {}
    codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED)
    with pytest.raises(Conflict, match="nothing to generate"):
        codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED)
    kit_lists.generate_kit_list(ctx, CLI_ACTOR, TRIAL, count=4, lot_code="LOT-CB2", expiry=date(2027, 6, 30))
    assert codebreak.missing_sheets(ctx, TRIAL) == 4
    new = sorted(sheets_by_kit(ctx))
    with ctx.db.reading() as s:
        fresh = sorted(set(s.execute(select(Kit.kit_number)).scalars()) - set(new))
    assert len(new) == 16 and len(fresh) == 4
    # Given kits: a kit that already has a sheet, an unknown kit, a mistyped kit are refused by name.
    with pytest.raises(Conflict) as covered:
        codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED, kit_numbers=[fresh[0], new[0]])
    assert [e.field for e in covered.value.errors] == ["kits"] and "CB-" in covered.value.errors[0].message
    unknown = kitlib.generate_kit_numbers(1, set(new) | set(fresh))[0]
    with pytest.raises(NotFound):
        codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED, kit_numbers=[unknown])
    mistyped = fresh[0][:7] + str((int(fresh[0][7]) + 1) % 10)
    with pytest.raises(ValidationFailed) as bad:
        codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED, kit_numbers=[mistyped])
    assert [e.field for e in bad.value.errors] == ["kits[0]"]
    with pytest.raises(ValidationFailed):
        codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED, kit_numbers=["  "])
    # One kit by its display form, then the rest.
    _, _, one = codebreak.generate_sheets(
        ctx, stat, TRIAL, signature=SIGNED, kit_numbers=[kitlib.format_kit_number(fresh[0])]
    )
    _, _, rest = codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED)
    assert (one, rest) == (1, 3)
    assert sheets_by_kit(ctx)[fresh[0]] == [f"CB-{TRIAL}-000017"]
    assert codebreak.missing_sheets(ctx, TRIAL) == 0
    assert len(audit(ctx, "code_break.generated")) == 3


@pytest.mark.req("AUD-01")
@pytest.mark.req("UNB-06", "LBL-12")
def test_a_reprint_is_reasoned_signed_marked_duplicata_audited_and_counted(
    ctx: ServiceContext, stat: Actor
) -> None:
    document_id, _, _ = codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED)
    with pytest.raises(ValidationFailed) as no_reason:
        codebreak.reprint_document(ctx, stat, TRIAL, document_id, reason=" ", signature=SIGNED)
    assert [e.field for e in no_reason.value.errors] == ["reason"]
    with pytest.raises(ValidationFailed) as unsigned:
        codebreak.reprint_document(ctx, stat, TRIAL, document_id, reason="jammed printer", signature=None)
    assert [e.field for e in unsigned.value.errors] == ["password"]
    with pytest.raises(NotFound) as unknown:
        codebreak.reprint_document(ctx, stat, TRIAL, "CBDOC-NOPE", reason="x", signature=SIGNED)
    assert [e.field for e in unknown.value.errors] == ["document_id"]
    with pytest.raises(SignatureRefused):
        codebreak.reprint_document(
            ctx,
            stat,
            TRIAL,
            document_id,
            reason="jammed printer",
            signature=SignatureRequest("wrong password!"),
        )
    assert len(audit(ctx, "signature.failed")) == 1

    first_id, first, count = codebreak.reprint_document(
        ctx, stat, TRIAL, document_id, reason="jammed printer", signature=SIGNED
    )
    second_id, second, _ = codebreak.reprint_document(
        ctx, stat, TRIAL, first_id, reason="coffee on page 3", signature=SIGNED
    )
    assert count == 16 and page_count(first) == 16
    assert "DUPLICATA \u2013 r\u00e9impression n\u00b0 1" in first_page_text(first)
    assert "DUPLICATA \u2013 r\u00e9impression n\u00b0 2" in first_page_text(second)
    with ctx.db.reading() as s:
        documents = [
            (d.document_id, d.reprint_of, d.reprint_number)
            for d in s.execute(select(PrintedDocument).order_by(PrintedDocument.id)).scalars()
        ]
    assert documents == [(document_id, None, 0), (first_id, document_id, 1), (second_id, document_id, 2)]
    printed = audit(ctx, "document.printed")
    assert [(json.loads(e.new_values or "{}")["reprint"], e.reason) for e in printed] == [
        (1, "jammed printer"),
        (2, "coffee on page 3"),
    ]
    assert len(audit(ctx, "arm.read")) == 3
    report = codebreak.reconciliation(ctx, TRIAL, ALL)
    assert {row.copies for row in report.sheets} == {3}
    (depot,) = report.sites
    assert (depot.site, depot.generated, depot.reprints) == ("depot", 16, 32)
    assert [d.reprint_number for d in codebreak.documents(ctx, TRIAL)] == [2, 1, 0]


@pytest.mark.req("UNB-06")
def test_a_lost_sheet_is_replaced_by_a_new_signed_sheet_and_the_old_one_stays(
    ctx: ServiceContext, stat: Actor
) -> None:
    document_id, _, _ = codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED)
    lost = f"CB-{TRIAL}-000003"
    with pytest.raises(ValidationFailed) as no_reason:
        codebreak.replace_sheet(ctx, stat, TRIAL, lost, reason="", signature=SIGNED)
    assert [e.field for e in no_reason.value.errors] == ["reason"]
    with pytest.raises(NotFound) as unknown:
        codebreak.replace_sheet(ctx, stat, TRIAL, "CB-NOPE-1", reason="lost", signature=SIGNED)
    assert [e.field for e in unknown.value.errors] == ["sheet_number"]
    new_document, pdf, count = codebreak.replace_sheet(
        ctx, stat, TRIAL, lost.lower(), reason="lost at the monitoring visit", signature=SIGNED
    )
    assert count == 1 and page_count(pdf) == 1
    with ctx.db.reading() as s:
        old = s.execute(select(CodeBreakSheet).where(CodeBreakSheet.sheet_number == lost)).scalar_one()
        new = s.execute(select(CodeBreakSheet).where(CodeBreakSheet.replaces_id == old.id)).scalar_one()
        kit_number = s.execute(select(Kit.kit_number).where(Kit.id == old.kit_id)).scalar_one()
        signature = s.get(Signature, new.signature_id)
    assert (new.sheet_number, new.kit_id, new.document_id) == (f"CB-{TRIAL}-000017", old.kit_id, new_document)
    assert signature is not None and signature.meaning == codebreak.REPLACEMENT_MEANING
    code, kit, sealed, _ = page_sheet(pdf, 0)
    assert (code, kit, sealed) == (
        new.sheet_number,
        kitlib.format_kit_number(kit_number),
        LABELS[arm_of(ctx, kit_number)],
    )
    assert beside(text_runs(pdf, 0), "Remplace la fiche / Replaces sheet") == lost
    with pytest.raises(Conflict, match="already replaced"):
        codebreak.replace_sheet(ctx, stat, TRIAL, lost, reason="again", signature=SIGNED)
    generated = audit(ctx, "code_break.generated")[-1]
    assert json.loads(generated.new_values or "{}")["replaces"] == lost
    assert generated.reason == "lost at the monitoring visit"
    # A reprint of the original document leaves the replaced sheet out.
    _, reprint, reprinted = codebreak.reprint_document(
        ctx, stat, TRIAL, document_id, reason="r", signature=SIGNED
    )
    assert reprinted == page_count(reprint) == 15
    with ctx.db.reading() as s:
        items = s.execute(select(PrintedDocument.items).order_by(PrintedDocument.id.desc())).scalars().first()
    assert items is not None and lost not in items and new.sheet_number not in items
    states = {row.sheet_number: row.state for row in codebreak.reconciliation(ctx, TRIAL, ALL).sheets}
    assert states[lost] == codebreak.REPLACED and states[new.sheet_number] == codebreak.NEVER_CHECKED


# --- checks and reconciliation -----------------------------------------------------------------------


def request(number: str) -> randomize.RandomizationRequest:
    return randomize.RandomizationRequest(
        site="P1", screening_number=number, eligibility=ELIGIBLE, strata={"admission_cause": "septic"}
    )


@pytest.mark.req("UNB-06", "BLD-01", "AUD-05")
def test_checks_and_the_reconciliation_balance_against_the_truth_and_flag_unregistered_openings(
    ctx: ServiceContext, clock: Clock
) -> None:
    ready = ready_trial(ctx)  # 24 kits at P1, 24 at P2, 8 at the depot, every one with its sheet
    monitor = person(ctx, "mon", "monitor")
    pharmacist = ready.pharmacist  # at P1
    p1 = site_scope(ctx, "P1")
    with ctx.db.reading() as s:
        where = {
            sheet: code or "depot"
            for sheet, code in s.execute(
                select(CodeBreakSheet.sheet_number, Site.code)
                .join(Kit, Kit.id == CodeBreakSheet.kit_id)
                .outerjoin(Site, Site.id == Kit.site_id)
            )
        }
        sheet_of = dict(
            s.execute(
                select(Kit.kit_number, CodeBreakSheet.sheet_number).join(
                    CodeBreakSheet, CodeBreakSheet.kit_id == Kit.id
                )
            ).all()
        )
    truth = dict.fromkeys(where, codebreak.NEVER_CHECKED)
    at = {site: sorted(n for n, w in where.items() if w == site) for site in ("P1", "P2", "depot")}
    randomized = randomize.randomize(ctx, ready.investigator, TRIAL, request("P1-0001"), ALL)
    opened = sheet_of[randomized.kits[0].kit_number]
    others_p1 = [n for n in at["P1"] if n != opened]

    def check(
        who: Actor, number: str, status: str, scope: Scope = ALL, note: str = "seen"
    ) -> codebreak.CheckRecorded:
        clock.advance(minutes=1)
        return codebreak.record_check(ctx, who, TRIAL, number, status, note, scope)

    # P1: one registered opening, one opening nobody registered, two intact (one after being missed).
    # The opening is registered through the real offline path (UNB-05/06: same record, channel offline).
    clock.advance(hours=4)
    recorded = unblinding.register_offline(
        ctx,
        ready.investigator,
        TRIAL,
        opened,
        opened_at=ctx.now() - timedelta(hours=3),
        opened_by="Dr Nuit",
        opened_by_role="investigator",
        reason_category="serious_adverse_event",
        reason="anaphylaxis while the service was down",
        signature=SIGNED,
        scope=p1,
    )
    assert (recorded.channel, recorded.sheet_number) == ("offline", opened)
    assert check(monitor, opened, "opened").discrepancy is None
    truth[opened] = codebreak.OPENED_REGISTERED
    flagged = check(pharmacist, others_p1[0], "opened", p1, note="seal broken")
    assert flagged.discrepancy and "protocol deviation" in flagged.discrepancy
    truth[others_p1[0]] = codebreak.OPENED_UNREGISTERED
    check(pharmacist, others_p1[1], "intact", p1, note="")
    truth[others_p1[1]] = codebreak.INTACT
    check(monitor, others_p1[2], "missing", note="not in the binder")
    check(monitor, others_p1[2], "intact", note="found in the safe")
    truth[others_p1[2]] = codebreak.INTACT
    # P2: a missing sheet replaced, a missing one not replaced, one intact then found opened.
    check(monitor, at["P2"][0], "missing", note="not in the binder")
    codebreak.replace_sheet(ctx, ready.statistician, TRIAL, at["P2"][0], reason="lost", signature=SIGNED)
    truth[at["P2"][0]] = codebreak.REPLACED
    with ctx.db.reading() as s:
        replacement = s.execute(
            select(CodeBreakSheet.sheet_number).where(CodeBreakSheet.replaces_id.is_not(None))
        ).scalar_one()
    truth[replacement] = codebreak.NEVER_CHECKED
    where[replacement] = "P2"
    check(monitor, at["P2"][1], "missing", note="not in the binder")
    truth[at["P2"][1]] = codebreak.MISSING
    check(monitor, at["P2"][2], "intact")
    check(monitor, at["P2"][2], "opened", note="seal broken")
    truth[at["P2"][2]] = codebreak.OPENED_UNREGISTERED
    # The depot: only trial-wide roles reach it.
    check(monitor, at["depot"][0], "intact")
    truth[at["depot"][0]] = codebreak.INTACT

    # Scope and bad input: refused by name, nothing recorded.
    with ctx.db.reading() as s:
        checks_before = s.execute(select(func.count()).select_from(CodeBreakCheck)).scalar_one()
    for number, scope in ((at["P2"][3], p1), (at["depot"][1], p1)):
        with pytest.raises(NotFound) as away:
            codebreak.record_check(ctx, pharmacist, TRIAL, number, "intact", "", scope)
        assert [e.field for e in away.value.errors] == ["sheet_number"]
    for number, status, note, field in (
        (at["P1"][5], "torn", "x", "status"),
        (at["P1"][5], "opened", " ", "note"),
        ("", "intact", "", "sheet_number"),
    ):
        with pytest.raises(ValidationFailed) as bad:
            codebreak.record_check(ctx, monitor, TRIAL, number, status, note, ALL)
        assert field in [e.field for e in bad.value.errors]
    with pytest.raises(NotFound):
        codebreak.record_check(ctx, monitor, TRIAL, "CB-IFNG-PAIS-999999", "intact", "", ALL)
    with ctx.db.reading() as s:
        assert s.execute(select(func.count()).select_from(CodeBreakCheck)).scalar_one() == checks_before
    checked = audit(ctx, "code_break.checked")
    assert len(checked) == 10
    assert checked[1].object_id == others_p1[0] and checked[1].site_code == "P1"
    assert checked[1].reason == "seal broken"

    # The report against the truth: per sheet, then per site, and every state adds up.
    report = codebreak.reconciliation(ctx, TRIAL, ALL)
    assert {row.sheet_number: row.state for row in report.sheets} == truth
    expected: dict[str, Counter[str]] = {}
    for number, state in truth.items():
        expected.setdefault(where[number], Counter())[state] += 1
    assert [s.site for s in report.sites] == ["P1", "P2", "depot"]
    for summary in report.sites:
        assert summary.counts == {state: expected[summary.site][state] for state in codebreak.STATES}
        assert summary.generated == sum(expected[summary.site].values()) == sum(summary.counts.values())
    assert [s.generated for s in report.sites] == [24, 25, 8]
    flagged_rows = {row.sheet_number for row in report.sheets if row.discrepancy}
    assert flagged_rows == {others_p1[0], at["P2"][1], at["P2"][2]}
    assert not report.balanced and report.total.discrepancies == 3
    rows = {row.sheet_number: row for row in report.sheets}
    assert rows[opened].registered_opening and rows[opened].kit_status == "allocated"
    assert rows[at["P2"][0]].replaced_by == replacement and rows[replacement].replaces == at["P2"][0]
    assert rows[others_p1[2]].last_check_by == "Mon" and rows[others_p1[2]].last_check == "intact"

    # A page of the sheets (issue 21): the window's rows of the same report, whose counts and
    # discrepancies still cover every sheet.
    for start in (0, 5, 50, len(report.sheets) - 2, len(report.sheets) + 3):
        page = codebreak.reconciliation(ctx, TRIAL, ALL, window=Window(start, 7))
        assert page.sheets == report.sheets[start : start + 7]
        assert (page.sites, page.discrepancies, page.kits_without_sheet) == (
            report.sites,
            report.discrepancies,
            report.kits_without_sheet,
        )
        assert page.total_sheets == len(report.sheets) == 57 and not page.balanced
    assert len(report.discrepancies) == 3
    assert {number for number, _ in report.flagged} == flagged_rows  # named, for the page's list

    # The site pharmacist sees only the sheets of the kits at the site.
    mine = codebreak.reconciliation(ctx, TRIAL, p1)
    assert [s.site for s in mine.sites] == ["P1"] and len(mine.sheets) == 24 and mine.kits_without_sheet == 0

    # CSV: one row per sheet, the summaries, formula cells neutralised, never an arm.
    prankster = Actor(user_id=monitor.user_id, username="mon", name="=HYPERLINK(1)", role="monitor")
    codebreak.record_check(ctx, prankster, TRIAL, at["depot"][2], "intact", "", ALL)
    text = codebreak.reconciliation_csv(codebreak.reconciliation(ctx, TRIAL, ALL))
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == list(codebreak.CSV_COLUMNS)
    assert len([r for r in table[1:] if r and r[0].startswith("CB-")]) == 57
    assert "'=HYPERLINK(1)" in text and ",=HYPERLINK" not in text
    summary_rows = [r for r in table if r and r[0] == "SUMMARY"]
    assert [r[1] for r in summary_rows] == ["site", "P1", "P2", "depot", "total"]
    assert summary_rows[-1][2] == "57"
    no_arm_in(text)
    assert not [cell for row in table for cell in row if cell in ("A", "B")]


# --- UNB-07: activation and shipments ------------------------------------------------------------


@pytest.mark.req("UNB-07", "RND-14")
def test_a_site_is_activated_only_with_evidence_and_once_every_kit_has_its_sheet(
    ctx: ServiceContext, stat: Actor
) -> None:
    def activate(evidence: str) -> None:
        services_sites.activate_site(
            ctx,
            CLI_ACTOR,
            TRIAL,
            "P1",
            approval_date=date(2026, 1, 5),
            delegation_log_date=date(2026, 2, 1),
            code_break_evidence=evidence,
            scope=ALL,
            reason="approved",
        )

    with pytest.raises(ValidationFailed) as no_evidence:
        activate("   ")
    assert [e.field for e in no_evidence.value.errors] == ["code_break_evidence"]
    with pytest.raises(ValidationFailed):
        activate("x" * 1001)
    with pytest.raises(Conflict, match="generate the code-break sheets first"):
        activate(CODE_BREAK_EVIDENCE)
    assert [s.status for s in services_sites.sites(ctx, TRIAL)] == ["pending", "pending"]
    assert audit(ctx, "site.activated") == []
    codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED)
    activate(f"  {CODE_BREAK_EVIDENCE}  ")
    p1 = services_sites.sites(ctx, TRIAL)[0]
    assert (p1.status, p1.code_break_evidence) == ("active", CODE_BREAK_EVIDENCE)
    (entry,) = audit(ctx, "site.activated")
    assert json.loads(entry.new_values or "{}")["code_break_evidence"] == CODE_BREAK_EVIDENCE


@pytest.mark.req("UNB-07", "BLD-04")
def test_a_shipment_takes_only_kits_that_have_their_sheet(ctx: ServiceContext, stat: Actor) -> None:
    manager = person(ctx, "tman", "trial_manager")
    codebreak.generate_sheets(ctx, stat, TRIAL, signature=SIGNED)  # the fixture's 16 kits
    kit_lists.generate_kit_list(ctx, CLI_ACTOR, TRIAL, count=16, lot_code="LOT-NEW", expiry=date(2027, 6, 30))
    with_sheet = set(sheets_by_kit(ctx))
    assert len(with_sheet) == 16
    view = shipments.create_shipment(ctx, manager, TRIAL, "P1", 16)
    assert set(view.kits) == with_sheet  # all of them, and nothing else
    with pytest.raises(Conflict, match="code-break sheet"):
        shipments.create_shipment(ctx, manager, TRIAL, "P2", 2)  # 16 kits left, none with a sheet
    code_break_sheets(ctx, stat)
    assert len(shipments.create_shipment(ctx, manager, TRIAL, "P2", 2).kits) == 2


@pytest.mark.req("UNB-07", "UNB-06")
def test_the_demo_generates_the_signed_sheets_before_it_activates_its_sites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from allocator.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, ["demo", "--no-serve", "--dir", str(tmp_path / "demo")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    engine = create_engine(f"sqlite:///{tmp_path / 'demo' / 'allocator-demo.db'}")
    try:
        with Session(engine) as s:
            kits_total = s.execute(select(func.count()).select_from(Kit)).scalar_one()
            sheets = s.execute(select(func.count()).select_from(CodeBreakSheet)).scalar_one()
            signers = set(
                s.execute(
                    select(Signature.username, Signature.meaning).join(
                        CodeBreakSheet, CodeBreakSheet.signature_id == Signature.id
                    )
                ).all()
            )
            # The IFN-gamma trial's sites (the demo's observational cohort has no code-break sheets).
            sites = s.execute(
                select(Site.status, Site.code_break_evidence)
                .join(Trial, Trial.id == Site.trial_id)
                .where(Trial.code == "IFNG-PAIS")
            ).all()
            order = [
                action
                for (action,) in s.execute(
                    select(AuditEvent.action)
                    .where(
                        AuditEvent.action.in_(
                            ["code_break.generated", "site.activated", "shipment.prepared"]
                        ),
                        AuditEvent.chain == "IFNG-PAIS",
                    )
                    .order_by(AuditEvent.id)
                )
            ]
    finally:
        engine.dispose()
    assert kits_total == sheets == 96
    assert signers == {("statistician", codebreak.GENERATION_MEANING)}
    assert [status for status, _ in sites] == ["active", "active"]
    assert all(evidence and "CBDOC-" in evidence for _, evidence in sites)
    # The sheets first, then the activations, and only then the kits leave the depot (UNB-07).
    assert order == [
        "code_break.generated",
        "site.activated",
        "site.activated",
        "shipment.prepared",
        "shipment.prepared",
    ]


@pytest.mark.req("UNB-06")
def test_the_database_judges_every_sheet_as_the_words_do(ctx: ServiceContext) -> None:
    """Issue 21: the reconciliation's states and discrepancies are counted in the database
    (`codebreak.judged`), the words of a listed sheet come from `_state`: the two agree on every
    combination of a registered opening, an opening ever found, a replacement and the last check."""
    lasts = (None, *(status.value for status in CodeBreakCheckStatus))
    cases = list(itertools.product((False, True), (False, True), (False, True), lasts))
    with ctx.db.reading() as session:
        for registered, opened, replaced, last in cases:
            state, flag = session.execute(
                select(
                    *codebreak.judged(
                        literal(registered, Boolean()),
                        literal(opened, Boolean()),
                        literal(replaced, Boolean()),
                        literal(last, String()),
                    )
                )
            ).one()
            words = codebreak._state(registered=registered, ever_opened=opened, replaced=replaced, last=last)
            assert (state, bool(flag)) == (words[0], bool(words[1])), (registered, opened, replaced, last)
    assert len(cases) == 32 and "intact" in lasts and "missing" in lasts
