"""A small trial with a known history, built through the services, for the report tests (REP-01..09,
AUD-09): five subjects randomized over two weeks at two sites, two ineligible screenings, a
randomization in error, a stratum correction, a kit replacement, refused scans and dispensing, an
expired kit, a reprint, a late and an off-hours administration, emergency (online and offline),
pharmacovigilance and accidental unblindings, a failed sign-in and a role grant.

`Truth` holds what the reports must show, written by hand from the steps below."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pypdf
from sqlalchemy import select

import kits as kitlib
from allocator import crypto
from allocator.audit import Actor
from allocator.models import CodeBreakSheet, Kit, Signature, Site
from allocator.permissions import Scope
from allocator.services import auth, bedside, dispensing, signatures, unblinding
from allocator.services.context import ServiceContext
from allocator.services.errors import DomainError
from allocator.services.subjects import confirmation, corrections, randomize
from allocator.services.supply import kit_rules, kit_status
from tests.support import GOOD_PASSWORD, Clock, ReadyTrial, eligible_on, make_user, person, ready_trial
from tests.support.worlds import replayed

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)
START = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # a Monday; the Clock's default start

# Words that name or reveal a treatment of the IFN-gamma trial: none may appear in a blinded report.
ARM_WORDS = re.compile(r"\b(interferon|gamma|ifn|imukin|placebo|saline|nacl|chloride|verum)\b", re.IGNORECASE)
ARM_CODE = re.compile(r"(?<![\w-])[AB](?![\w-])")


def arm_leaks(text: str) -> list[str]:
    """Treatment words, and the arm codes A and B standing alone, found in `text`."""
    return ARM_WORDS.findall(text) + ARM_CODE.findall(text)


def csv_sections(text: str) -> tuple[dict[str, str], dict[str, list[dict[str, str]]]]:
    """Parse a report CSV: ({metadata key: value}, {section title: rows as dicts})."""
    metadata: dict[str, str] = {}
    sections: dict[str, list[dict[str, str]]] = {}
    header: list[str] | None = None
    current: list[dict[str, str]] | None = None
    for row in csv.reader(io.StringIO(text)):
        if row and row[0] == "# section":
            current, header = sections.setdefault(row[1], []), None
        elif row and row[0].startswith("# ") and current is None:
            if row[0] == "# summary":
                metadata[f"summary:{row[1]}"] = row[2]
            else:
                metadata[row[0][2:]] = row[1]
        elif current is not None and header is None:
            header = row
        elif current is not None and header is not None:
            assert len(row) == len(header), row
            current.append(dict(zip(header, row, strict=True)))
    return metadata, sections


def pdf_text(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    return text + "\n" + "\n".join(str(v) for v in (reader.metadata or {}).values())


def flat(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Truth:
    ready: ReadyTrial
    pv: Actor
    subjects: dict[str, str] = field(default_factory=dict)  # S1..S5 -> subject number
    kits: dict[str, dict[str, str]] = field(default_factory=dict)  # subject number -> day -> kit number
    replaced_kit: str = ""
    new_kit: str = ""
    expired_kit: str = ""


def _arm(ctx: ServiceContext, kit_number: str) -> str:
    """The test's own knowledge of an arm (never through the service under test)."""
    with ctx.db.reading() as s:
        kit = s.execute(select(Kit).where(Kit.kit_number == kit_number)).scalar_one()
    return crypto.open_arm(ctx.ring, kit.sealed_arm, crypto.Binding(TRIAL, "kit", kit_number, "sealed_arm"))


def arm_of_subject(ctx: ServiceContext, truth: Truth, number: str) -> str:
    return _arm(ctx, truth.kits[number]["D1"])


def _randomize(
    ctx: ServiceContext, actor: Actor, screening: str, site: str, cause: str
) -> randomize.RandomizationResult:
    return randomize.randomize(
        ctx,
        actor,
        TRIAL,
        randomize.RandomizationRequest(
            site=site,
            screening_number=screening,
            eligibility=eligible_on(ctx.now().date()),
            strata={"admission_cause": cause},
        ),
        ALL,
    )


def _ineligible(ctx: ServiceContext, actor: Actor, screening: str, site: str, **changes: object) -> None:
    try:
        randomize.randomize(
            ctx,
            actor,
            TRIAL,
            randomize.RandomizationRequest(
                site=site,
                screening_number=screening,
                eligibility={**eligible_on(ctx.now().date()), **changes},
                strata={"admission_cause": "septic"},
            ),
            ALL,
        )
    except randomize.Ineligible:
        return
    raise AssertionError("expected an ineligible patient")


def _refused(call: object) -> None:
    try:
        call()  # type: ignore[operator]
    except DomainError:
        return
    raise AssertionError("expected a refusal")


def _code_break_sheet(ctx: ServiceContext, truth: Truth, kit_number: str) -> str:
    """The kit's sealed code-break sheet: the one generated with the trial's kits when there is one,
    else one stored directly (generating sheets is another service's business)."""
    with ctx.db.unit_of_work() as s:
        kit = s.execute(select(Kit).where(Kit.kit_number == kit_number)).scalar_one()
        existing = s.execute(
            select(CodeBreakSheet.sheet_number)
            .where(CodeBreakSheet.kit_id == kit.id)
            .order_by(CodeBreakSheet.id)
        ).scalar()
        if existing is not None:
            return existing
        signature = Signature(
            trial_id=kit.trial_id,
            user_id=truth.ready.statistician.user_id,
            username="stat",
            printed_name="Stat",
            meaning="generation of code-break sheets",
            signed_at=ctx.now(),
            method="password",
            object_type="code_break_sheet",
            object_id="CB-TEST-1",
            content_sha256=hashlib.sha256(b"sheet").hexdigest(),
        )
        s.add(signature)
        s.flush()
        s.add(
            CodeBreakSheet(
                trial_id=kit.trial_id,
                kit_id=kit.id,
                sheet_number="CB-TEST-1",
                document_id="CBS-TEST-1",
                generated_at=ctx.now(),
                generated_by_id=truth.ready.statistician.user_id,
                generated_by_name="Stat",
                signature_id=signature.id,
            )
        )
    return "CB-TEST-1"


def build(ctx: ServiceContext, clock: Clock) -> Truth:
    """The history above, built once per process and then replayed (tests.support.worlds)."""
    assert clock is ctx.clock
    return replayed(ctx, "report-history", lambda c: _build(c, clock))


def _build(ctx: ServiceContext, clock: Clock) -> Truth:
    assert clock() == START
    ready = ready_trial(ctx)
    pv = person(
        ctx,
        "pv-officer",
        "pharmacovigilance",
        full_name="Pat Vigil",
        client=auth.Client("192.0.2.1", "t", "r"),
    )
    truth = Truth(ready, pv)
    inv1, inv2, pharm, nurse = ready.investigator, ready.investigator_p2, ready.pharmacist, ready.nurse

    # Monday 2 March, 09:30 UTC: two subjects at P1, an ineligible patient at each site.
    for key, screening, site, cause, who in (
        ("S1", "P1-0001", "P1", "septic", inv1),
        ("S2", "P1-0002", "P1", "non_septic", inv1),
    ):
        result = _randomize(ctx, who, screening, site, cause)
        truth.subjects[key] = result.subject_number
        truth.kits[result.subject_number] = {k.day: k.kit_number for k in result.kits}
    _ineligible(ctx, inv1, "P1-0100", "P1", sofa_24h=4)
    _ineligible(ctx, inv2, "P2-0100", "P2", sofa_24h=3, age=17)
    s1, s2 = truth.subjects["S1"], truth.subjects["S2"]
    truth.replaced_kit = truth.kits[s1]["D2"]
    _, truth.new_kit = dispensing.replace_kit(
        ctx, pharm, TRIAL, s1, "D2", cause="damaged", reason="vial dropped", scope=ALL
    )
    truth.kits[s1]["D2"] = truth.new_kit
    dispensing.dispense(ctx, pharm, TRIAL, s1, dict(truth.kits[s1]), scope=ALL, signature=SIGNED)
    mac = kit_rules.mac(ctx)

    def scan(number: str, day: str, **extra: object) -> None:
        bedside.record_scan(
            ctx,
            nurse,
            TRIAL,
            payload=kitlib.build_payload(TRIAL, truth.kits[number][day], day, mac),
            subject_number=number,
            day=day,
            scope=ALL,
            **extra,  # type: ignore[arg-type]
        )

    _refused(lambda: scan(s1, "D2"))  # D2 before D1: refused (out of order)
    scan(s1, "D1")
    corrections.mark_in_error(
        ctx, inv1, TRIAL, s2, reason="randomized before the consent was signed", scope=ALL, signature=SIGNED
    )
    corrections.correct_stratum(
        ctx,
        inv1,
        TRIAL,
        s1,
        factor="admission_cause",
        level="non_septic",
        reason="cause of admission re-assessed",
        scope=ALL,
        agreement_ref=None,
        is_investigator=True,
    )
    confirmation.print_confirmation(ctx, inv1, TRIAL, s1, ALL)
    confirmation.print_confirmation(ctx, inv1, TRIAL, s1, ALL)  # a reprint
    _refused(lambda: auth.login(ctx, "inv-p1", "wrong password!", auth.Client("192.0.2.9", "t", "r")))

    # Tuesday 3 March: a subject at P2; S1's second dose.
    clock.advance(days=1)
    result = _randomize(ctx, inv2, "P2-0001", "P2", "septic")
    truth.subjects["S3"] = result.subject_number
    truth.kits[result.subject_number] = {k.day: k.kit_number for k in result.kits}
    scan(s1, "D2")

    # Wednesday 4 March, 21:30 UTC (22:30 in Paris, outside working hours): S1's third dose,
    # recorded six hours late.
    clock.advance(days=1, hours=12)
    scan(s1, "D3", administered_at=clock() - timedelta(hours=6), late_reason="network down on the ward")

    # Monday 9 March, 09:30 UTC: one more subject per site, a refused dispensing, an expired kit.
    clock.current = START + timedelta(days=7)
    for key, screening, site, cause, who in (
        ("S4", "P1-0003", "P1", "septic", inv1),
        ("S5", "P2-0002", "P2", "non_septic", inv2),
    ):
        result = _randomize(ctx, who, screening, site, cause)
        truth.subjects[key] = result.subject_number
        truth.kits[result.subject_number] = {k.day: k.kit_number for k in result.kits}
    s3, s4, s5 = truth.subjects["S3"], truth.subjects["S4"], truth.subjects["S5"]
    _refused(
        lambda: dispensing.dispense(
            ctx, pharm, TRIAL, s4, {"D1": truth.kits[s1]["D1"]}, scope=ALL, signature=SIGNED
        )
    )
    dispensing.dispense(ctx, pharm, TRIAL, s4, {"D1": truth.kits[s4]["D1"]}, scope=ALL, signature=SIGNED)
    with ctx.db.reading() as s:
        truth.expired_kit = (
            s.execute(
                select(Kit.kit_number)
                .join(Site, Site.id == Kit.site_id)
                .where(Kit.status == "available", Site.code == "P2")
                .order_by(Kit.id)
            )
            .scalars()
            .first()
            or ""
        )
    kit_status.change_status(
        ctx, pharm, TRIAL, truth.expired_kit, "expired", reason="expiry date passed", scope=ALL, depot=False
    )

    # Unblindings: S3 online (emergency), S1 offline (a code-break sheet), S4 for pharmacovigilance,
    # and an accidental unblinding of S5.
    clock.advance(minutes=30)
    unblinding.emergency_unblind(
        ctx,
        inv2,
        TRIAL,
        s3,
        reason_category="serious_adverse_event",
        reason="severe reaction needing a specific treatment",
        confirmed=True,
        signature=SIGNED,
        scope=ALL,
    )
    sheet = _code_break_sheet(ctx, truth, truth.kits[s1]["D1"])
    unblinding.register_offline(
        ctx,
        inv1,
        TRIAL,
        sheet,
        opened_at=clock() - timedelta(days=2),
        opened_by="Dr Night Duty",
        opened_by_role="physician",
        reason_category="other_medical_emergency",
        reason="service unreachable during an emergency at night",
        signature=SIGNED,
        scope=ALL,
    )
    unblinding.pharmacovigilance_unblind(
        ctx,
        pv,
        TRIAL,
        s4,
        reason_category="susar",
        reason="expedited report of a suspected reaction",
        confirmed=True,
        signature=SIGNED,
        scope=ALL,
    )
    unblinding.report_accidental(
        ctx,
        inv2,
        TRIAL,
        unblinding.AccidentalReport(
            subject_number=s5,
            site=None,
            occurred_at=clock() - timedelta(hours=1),
            persons_unblinded="one ward nurse",
            how="the allocation e-mail was forwarded by mistake",
            impact="the nurse no longer takes part in assessments",
            actions="e-mail deleted, staff retrained",
        ),
        scope=ALL,
    )
    make_user(ctx, "mon-p1", "monitor", site="P1", full_name="Monica Site One")
    return truth


def p1_scope(ctx: ServiceContext) -> Scope:
    with ctx.db.reading() as s:
        site_id = s.execute(select(Site.id).where(Site.code == "P1")).scalar_one()
    return Scope(all_sites=False, site_ids=frozenset({site_id}))


MONITOR = Actor(None, "monitor-x", "Mona Itor", "monitor", request_id="test")
