"""Subject withdrawals (REP-04): signed, reasoned, once per subject, within the recorder's sites;
after it no further dose is dispensed or given, for either arm alike (BLD-01), and every refusal is
audited (REP-07)."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

import kits as kitlib
from allocator import crypto
from allocator.models import AuditEvent, Kit, Notification, Signature, Site, Subject, SubjectWithdrawal
from allocator.permissions import Scope
from allocator.services import bedside, dispensing, lookups, signatures
from allocator.services.closeout import state
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, NotFound, ValidationFailed
from allocator.services.subjects import randomize, views, withdrawal
from allocator.services.supply import kit_rules
from tests.support import ELIGIBLE, GOOD_PASSWORD, Clock, ReadyTrial, ready_trial

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)
MARCH_2 = date(2026, 3, 2)  # the test clock's first day (09:30 UTC, 10:30 in Paris)


def _randomize(ctx: ServiceContext, ready: ReadyTrial, screening: str) -> randomize.RandomizationResult:
    return randomize.randomize(
        ctx,
        ready.investigator,
        TRIAL,
        randomize.RandomizationRequest(
            site="P1", screening_number=screening, eligibility=ELIGIBLE, strata={"admission_cause": "septic"}
        ),
        ALL,
    )


def _withdraw(ctx: ServiceContext, ready: ReadyTrial, number: str, **changes: object) -> None:
    args: dict[str, object] = {
        "kind": "consent_withdrawn",
        "effective_date": MARCH_2,
        "reason": "the patient's family withdrew consent",
        "scope": ALL,
        "signature": SIGNED,
        "agreement_ref": None,
        "is_investigator": True,
    }
    args.update(changes)
    withdrawal.withdraw(ctx, ready.investigator, TRIAL, number, **args)  # type: ignore[arg-type]


def _counts(ctx: ServiceContext) -> tuple[int, int]:
    with ctx.db.reading() as s:
        return (
            s.execute(select(func.count()).select_from(SubjectWithdrawal)).scalar_one(),
            s.execute(select(func.count()).select_from(AuditEvent)).scalar_one(),
        )


def _arm(ctx: ServiceContext, kit_number: str) -> str:
    with ctx.db.reading() as s:
        kit = s.execute(select(Kit).where(Kit.kit_number == kit_number)).scalar_one()
    return crypto.open_arm(ctx.ring, kit.sealed_arm, crypto.Binding(TRIAL, "kit", kit_number, "sealed_arm"))


@pytest.mark.req("REP-04")
@pytest.mark.req("ACC-12")
def test_a_withdrawal_is_signed_audited_shown_and_names_no_arm(ctx: ServiceContext, clock: Clock) -> None:
    ready = ready_trial(ctx)
    result = _randomize(ctx, ready, "P1-0001")
    clock.advance(days=2)
    _withdraw(ctx, ready, result.subject_number, kind="lost_to_follow_up", effective_date="2026-03-03")
    view = views.subject(ctx, TRIAL, result.subject_number, ALL)
    assert view.withdrawal is not None
    assert (view.withdrawal.kind, view.withdrawal.effective_date) == ("lost_to_follow_up", date(2026, 3, 3))
    assert view.withdrawal.reason == "the patient's family withdrew consent"
    assert view.as_json()["withdrawal"] == {"kind": "lost_to_follow_up", "effective_date": "2026-03-03"}
    # The subject, its kits and strata stay as they were (intention to treat).
    assert [d.kit_number for d in view.days] == [k.kit_number for k in result.kits]
    assert not view.in_error
    with ctx.db.reading() as s:
        row = s.execute(select(SubjectWithdrawal)).scalar_one()
        signature = s.get(Signature, row.signature_id)
        assert signature is not None and signature.meaning == "subject withdrawal"
        assert signatures.verify(
            signature,
            {
                "subject": result.subject_number,
                "kind": "lost_to_follow_up",
                "effective_date": "2026-03-03",
                "reason": "the patient's family withdrew consent",
            },
        )
        assert row.recorded_by_name == ready.investigator.name and row.recorded_at == clock()
        entry = s.execute(select(AuditEvent).where(AuditEvent.action == "subject.withdrawn")).scalar_one()
    assert entry.object_id == result.subject_number and entry.site_code == "P1"
    assert entry.reason == "the patient's family withdrew consent"
    assert entry.sealed_values is None
    arm = _arm(ctx, result.kits[0].kit_number)
    assert arm not in str(entry.new_values).split('"') and "arm" not in (entry.new_values or "")
    # The site's pharmacy is told to stop dispensing, and the unblinded pharmacist to stop preparing
    # (issue 15, point 4), in words that are the same for both arms.
    with ctx.db.reading() as s:
        notes = (
            s.execute(
                select(Notification).where(Notification.kind == "subject_withdrawn").order_by(Notification.id)
            )
            .scalars()
            .all()
        )
        p1 = s.execute(select(Site.id).where(Site.code == "P1")).scalar_one()
    told = (
        f"Subject {result.subject_number} was withdrawn (lost to follow-up) on 2026-03-03, recorded by "
        f"{ready.investigator.name}."
    )
    assert [(n.audience, n.site_id, n.subject_number, n.body) for n in notes] == [
        (
            "pharmacist",
            p1,
            result.subject_number,
            f"{told} Dispense no further kit; the kits allocated to {result.subject_number} stay assigned to it.",
        ),
        (
            "unblinded_pharmacist",
            p1,
            result.subject_number,
            f"{told} Prepare no further dose for {result.subject_number}.",
        ),
    ]


@pytest.mark.req("REP-04")
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": ""}, "kind"),
        ({"kind": "died"}, "kind"),
        ({"effective_date": ""}, "effective_date"),
        ({"effective_date": "03/03/2026"}, "effective_date"),
        ({"effective_date": MARCH_2 + timedelta(days=1)}, "effective_date"),  # in the future
        ({"effective_date": MARCH_2 - timedelta(days=1)}, "effective_date"),  # before randomization
        ({"reason": "   "}, "reason"),
        ({"reason": "x" * 1001}, "reason"),
    ],
)
def test_each_bad_field_is_named_and_nothing_is_written(
    ctx: ServiceContext, changes: dict[str, object], field: str
) -> None:
    ready = ready_trial(ctx)
    result = _randomize(ctx, ready, "P1-0001")
    before = _counts(ctx)
    with pytest.raises(ValidationFailed) as caught:
        _withdraw(ctx, ready, result.subject_number, **changes)
    assert [e.field for e in caught.value.errors] == [field]
    assert _counts(ctx) == before
    _withdraw(ctx, ready, result.subject_number, reason="x" * 1000)  # the limit itself is fine


@pytest.mark.req("REP-04")
def test_a_subject_is_withdrawn_once_within_reach_while_the_trial_is_open(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx)
    first = _randomize(ctx, ready, "P1-0001")
    second = _randomize(ctx, ready, "P1-0002")
    _withdraw(ctx, ready, first.subject_number)
    before = _counts(ctx)
    with pytest.raises(Conflict, match="already withdrawn on 2026-03-02"):
        _withdraw(ctx, ready, first.subject_number, kind="treatment_discontinued")
    assert _counts(ctx) == before
    with ctx.db.reading() as s:
        p2 = s.execute(select(Site.id).where(Site.code == "P2")).scalar_one()
    with pytest.raises(NotFound):  # a subject of another site is out of reach
        _withdraw(ctx, ready, second.subject_number, scope=Scope(all_sites=False, site_ids=frozenset({p2})))
    assert _counts(ctx) == before
    with pytest.raises(signatures.SignatureRefused):
        _withdraw(ctx, ready, second.subject_number, signature=signatures.SignatureRequest(password="wrong!"))
    with ctx.db.reading() as s:
        assert s.execute(select(func.count()).select_from(SubjectWithdrawal)).scalar_one() == 1
        failed = s.execute(select(AuditEvent).where(AuditEvent.action == "signature.failed")).scalar_one()
    assert failed.object_id == second.subject_number
    state.lock(ctx, ready.statistician, TRIAL, reason="database lock", signature=SIGNED)
    with pytest.raises(lookups.TrialLocked):
        _withdraw(ctx, ready, second.subject_number)


@pytest.mark.req("REP-04")
@pytest.mark.req("REP-07")
@pytest.mark.req("BLD-01")
def test_no_further_dose_after_a_withdrawal_for_either_arm(ctx: ServiceContext, clock: Clock) -> None:
    # Six subjects at P1 need up to 15 kits of one arm (3 usable of every arm at each randomization).
    ready = ready_trial(ctx, kits_per_site=36)
    results = [_randomize(ctx, ready, f"P1-{i:04d}") for i in range(1, 7)]  # one block: both arms
    arms = {r.subject_number: _arm(ctx, r.kits[0].kit_number) for r in results}
    one_of_each = [next(n for n, a in arms.items() if a == arm) for arm in ("A", "B")]
    kits_of = {r.subject_number: {k.day: k.kit_number for k in r.kits} for r in results}
    mac = kit_rules.mac(ctx)
    refusals: list[tuple[str, str]] = []
    for number in one_of_each:
        kit = kits_of[number]
        dispensing.dispense(
            ctx, ready.pharmacist, TRIAL, number, {"D1": kit["D1"]}, scope=ALL, signature=SIGNED
        )
        _withdraw(ctx, ready, number, reason="treatment stopped after an adverse event")
        before = _counts(ctx)
        with pytest.raises(withdrawal.SubjectWithdrawn) as dispensed:
            dispensing.dispense(
                ctx, ready.pharmacist, TRIAL, number, {"D2": kit["D2"]}, scope=ALL, signature=SIGNED
            )
        with pytest.raises(withdrawal.SubjectWithdrawn) as given:
            bedside.record_scan(
                ctx,
                ready.nurse,
                TRIAL,
                payload=kitlib.build_payload(TRIAL, kit["D1"], "D1", mac),
                subject_number=number,
                day="D1",
                scope=ALL,
            )
        assert _counts(ctx) == (before[0], before[1] + 2)  # each refusal audited, nothing else
        for caught in (dispensed, given):
            assert caught.value.status == 409
            assert caught.value.detail == f"{number} was withdrawn on 2026-03-02: no further dose"
            refusals.append((type(caught.value).__name__, caught.value.detail.replace(number, "N")))
        view = views.subject(ctx, TRIAL, number, ALL)
        assert [d.status for d in view.days] == ["dispensed", "allocated", "allocated"]
    assert refusals[:2] == refusals[2:]  # the same answer for both arms
    queued = {item.subject_number for item in dispensing.queue(ctx, TRIAL, ALL).items}
    assert queued == set(arms) - set(one_of_each)  # withdrawn subjects leave the pharmacy queue
    with ctx.db.reading() as s:
        refused = s.execute(
            select(AuditEvent.action, AuditEvent.object_id, AuditEvent.new_values, AuditEvent.sealed_values)
            .where(AuditEvent.action.in_(("dispensation.refused", "administration.scan_refused")))
            .order_by(AuditEvent.id)
        ).all()
        withdrawn_ids = set(s.execute(select(Subject.subject_number).join(SubjectWithdrawal)).scalars().all())
    assert [(r.action, r.object_id) for r in refused] == [
        (action, n) for n in one_of_each for action in ("dispensation.refused", "administration.scan_refused")
    ]
    assert all("subject-withdrawn" in (r.new_values or "") and r.sealed_values is None for r in refused)
    assert withdrawn_ids == set(one_of_each)
    # Subjects not withdrawn are served as before.
    other = next(n for n in arms if n not in one_of_each)
    dispensing.dispense(
        ctx, ready.pharmacist, TRIAL, other, {"D1": kits_of[other]["D1"]}, scope=ALL, signature=SIGNED
    )


@pytest.mark.req("REP-04")
@pytest.mark.req("BLD-04")
def test_no_replacement_kit_and_no_preparation_after_a_withdrawal(ctx: ServiceContext) -> None:
    """A withdrawn subject gets no new kit and nothing to prepare; both refusals come before the arm
    is read, so they leave no arm read behind, and the allocated kits keep their status. Each
    refusal is audited like a refused dispensing (issue 15, point 4), in words free of any arm."""
    ready = ready_trial(ctx)
    result = _randomize(ctx, ready, "P1-0001")
    _withdraw(ctx, ready, result.subject_number)
    before = _counts(ctx)
    with pytest.raises(withdrawal.SubjectWithdrawn) as replaced:
        dispensing.replace_kit(
            ctx,
            ready.pharmacist,
            TRIAL,
            result.subject_number,
            "D2",
            cause="damaged",
            reason="vial dropped",
            scope=ALL,
        )
    assert [e.field for e in replaced.value.errors] == ["day"] and replaced.value.status == 409
    with pytest.raises(withdrawal.SubjectWithdrawn):
        dispensing.preparation(ctx, ready.statistician, TRIAL, result.subject_number, "D1", ALL)
    withdrawals, entries = _counts(ctx)
    assert (withdrawals, entries) == (before[0], before[1] + 2)  # the two refusals, nothing else
    with ctx.db.reading() as s:
        refused = s.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(2)).scalars().all()
    assert [(e.action, e.object_id, e.site_code, e.actor_username) for e in reversed(refused)] == [
        ("dispensation.refused", result.subject_number, "P1", ready.pharmacist.username),
        ("dispensation.refused", result.subject_number, "P1", ready.statistician.username),
    ]
    assert [json.loads(e.new_values or "{}") for e in reversed(refused)] == [
        {"operation": "replacement", "day": "D2", "cause": "subject-withdrawn"},
        {"operation": "preparation", "day": "D1", "cause": "subject-withdrawn"},
    ]
    assert all(e.sealed_values is None for e in refused)
    view = views.subject(ctx, TRIAL, result.subject_number, ALL)
    assert [d.kit_number for d in view.days] == [k.kit_number for k in result.kits]
    assert [d.status for d in view.days] == ["allocated"] * 3


@pytest.mark.req("DIB-03")
@pytest.mark.req("BLD-01")
def test_a_withdrawal_by_someone_else_than_the_investigator_needs_the_agreement_which_is_signed(
    ctx: ServiceContext,
) -> None:
    """DIB-03 as for stratum corrections: without the investigator's agreement nothing is written;
    with it, the reference is stored, signed with the rest and audited. A reason or reference that
    names a treatment is refused, naming the field (BLD-01: blinded staff read them)."""
    ready = ready_trial(ctx)
    number = _randomize(ctx, ready, "P1-0001").subject_number
    before = _counts(ctx)
    with pytest.raises(ValidationFailed) as missing:
        _withdraw(ctx, ready, number, is_investigator=False)
    assert [e.field for e in missing.value.errors] == ["investigator_agreement_ref"]
    with pytest.raises(ValidationFailed) as blank:
        _withdraw(ctx, ready, number, is_investigator=False, agreement_ref="   ")
    assert [e.field for e in blank.value.errors] == ["investigator_agreement_ref"]
    for reason, agreement, field in (
        ("stopped: on placebo anyway", "memo 12", "reason"),
        ("the interferon caused fever", "memo 12", "reason"),
        ("consent withdrawn", "the saline arm memo", "investigator_agreement_ref"),
    ):
        with pytest.raises(ValidationFailed) as leaking:
            _withdraw(ctx, ready, number, is_investigator=False, agreement_ref=agreement, reason=reason)
        assert [e.field for e in leaking.value.errors] == [field], reason
    assert _counts(ctx) == before

    _withdraw(ctx, ready, number, is_investigator=False, agreement_ref=" memo 12 of Dr P1 ")
    with ctx.db.reading() as s:
        row = s.execute(select(SubjectWithdrawal)).scalar_one()
        signature = s.get(Signature, row.signature_id)
        entry = s.execute(select(AuditEvent).where(AuditEvent.action == "subject.withdrawn")).scalar_one()
    assert row.investigator_agreement_ref == "memo 12 of Dr P1"
    assert signature is not None and signatures.verify(
        signature,
        {
            "subject": number,
            "kind": "consent_withdrawn",
            "effective_date": "2026-03-02",
            "reason": "the patient's family withdrew consent",
            "investigator_agreement_ref": "memo 12 of Dr P1",
        },
    )
    assert json.loads(entry.new_values or "{}")["agreement"] == "memo 12 of Dr P1"
