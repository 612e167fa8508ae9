"""Emergency, pharmacovigilance and offline unblinding, accidental reports, and the planned
unblinding's signed states (UNB-01..10, BLD-08, BLD-09, REP-06, REP-08)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from allocator import crypto
from allocator.audit import Actor
from allocator.models import CodeBreakSheet, Kit, Notification, Signature, Subject, Unblinding
from allocator.permissions import Scope
from allocator.services import auth, dispensing, lookups, notifications, signatures, unblinding
from allocator.services.closeout import releases, state
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, Forbidden, NotFound, TooManyRequests, ValidationFailed
from allocator.services.subjects import views as subjects_views
from tests.support import (
    GOOD_PASSWORD,
    Clock,
    ReadyTrial,
    events,
    make_actor,
    randomize,
    ready_trial,
)

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)
WRONG = signatures.SignatureRequest(password="not the password at all")
REASON = "Anaphylaxis after D2; the choice of treatment depends on the product."
TREATMENT_WORDS = ("interferon", "placebo", "imukin", "saline", "nacl", "gamma")


def site_scope(ctx: ServiceContext, code: str) -> Scope:
    from allocator.models import Site

    with ctx.db.reading() as s:
        site_id = s.execute(select(Site.id).where(Site.code == code)).scalar_one()
    return Scope(all_sites=False, site_ids=frozenset({site_id}))


def true_arm(ctx: ServiceContext, subject_number: str) -> str:
    """The arm of the subject's D1 kit, opened directly (the test's own truth, not the service's)."""
    from allocator.models import Dispensation

    with ctx.db.reading() as s:
        kit = (
            s.execute(
                select(Kit)
                .join(Dispensation, Dispensation.kit_id == Kit.id)
                .join(Subject, Subject.id == Dispensation.subject_id)
                .where(Subject.subject_number == subject_number)
                .order_by(Dispensation.id)
            )
            .scalars()
            .first()
        )
        assert kit is not None
    return crypto.open_arm(
        ctx.ring, kit.sealed_arm, crypto.Binding(TRIAL, "kit", kit.kit_number, "sealed_arm")
    )


def unblind(
    ctx: ServiceContext,
    actor: Actor,
    number: object,
    *,
    scope: Scope = ALL,
    signature: signatures.SignatureRequest = SIGNED,
    reason: str = REASON,
    category: str = "serious_adverse_event",
    confirmed: bool = True,
) -> unblinding.RevealedArm:
    return unblinding.emergency_unblind(
        ctx,
        actor,
        TRIAL,
        number,
        reason_category=category,
        reason=reason,
        confirmed=confirmed,
        signature=signature,
        scope=scope,
    )


def count(ctx: ServiceContext, model: type) -> int:
    with ctx.db.reading() as s:
        return len(list(s.execute(select(model)).scalars()))


@pytest.fixture
def ready(ctx: ServiceContext) -> ReadyTrial:
    return ready_trial(ctx, kits_per_site=24)


@pytest.fixture
def busy(ctx: ServiceContext) -> ReadyTrial:
    """Kits for a dozen subjects at P1 whatever their arms."""
    return ready_trial(ctx, kits_per_site=80)


# --- emergency unblinding ---------------------------------------------------------------------


@pytest.mark.req("UNB-01", "UNB-04", "UNB-05", "BLD-08")
def test_an_investigator_learns_the_arm_once_and_everything_is_recorded(
    ctx: ServiceContext, ready: ReadyTrial
) -> None:
    number = randomize(ctx, ready, "P1-0001")
    other = randomize(ctx, ready, "P1-0002")
    revealed = unblind(ctx, ready.investigator, number, scope=site_scope(ctx, "P1"))
    truth = true_arm(ctx, number)
    assert (revealed.subject_number, revealed.site, revealed.arm_code) == (number, "P1", truth)
    assert revealed.arm_label == {"A": "Interferon gamma-1b", "B": "Placebo"}[truth]
    assert revealed.signature.meaning == "emergency unblinding"
    assert revealed.signature.username == "inv-p1"

    with ctx.db.reading() as s:
        row = s.execute(select(Unblinding)).scalar_one()
        signature = s.get(Signature, row.signature_id)
    assert (row.kind, row.channel, row.reason_category, row.reason) == (
        "emergency",
        "online",
        "serious_adverse_event",
        REASON,
    )
    assert row.unblinded_by_name == ready.investigator.name and row.unblinded_at == ctx.now()
    assert signature is not None and signature.meaning == "emergency unblinding"
    # The arm read is audited (BLD-08); the unblinding entry has the arm sealed, never in clear.
    [read] = [e for e in events(ctx, "arm.read") if e.object_id == number]
    assert json.loads(read.new_values or "{}") == {"purpose": "emergency unblinding"}
    [entry] = events(ctx, "unblinding.emergency")
    assert entry.object_id == number and entry.sealed_values is not None
    assert truth not in json.dumps(json.loads(entry.new_values or "{}"))
    for word in TREATMENT_WORDS:
        assert word not in (entry.new_values or "").lower()

    # Everyone sees "blind broken" for that subject only, never the arm.
    views = {v.subject_number: v for v in subjects_views.subjects(ctx, TRIAL, ALL)}
    assert views[number].blind_broken and not views[other].blind_broken
    assert set(views[number].as_json()) == set(views[other].as_json())


@pytest.mark.req("UNB-05", "BLD-10")
def test_the_sponsor_and_the_monitors_are_notified_without_the_arm(
    ctx: ServiceContext, ready: ReadyTrial
) -> None:
    make_actor(ctx, "manager", "trial_manager", email="tm@sponsor.example")
    make_actor(ctx, "monitor1", "monitor", email="mon@cro.example")
    number = randomize(ctx, ready, "P1-0001")
    unblind(ctx, ready.investigator, number)
    with ctx.db.reading() as s:
        sent = [n for n in s.execute(select(Notification)).scalars() if n.kind == "emergency_unblinding"]
    assert {n.audience for n in sent} == {"trial_manager", "pharmacovigilance", "monitor"}
    for n in sent:
        assert number in n.title and "serious adverse event" in n.body.lower()
        assert REASON not in n.body  # the clinical details stay in the service
        assert not any(word in (n.title + n.body).lower() for word in TREATMENT_WORDS)
    mails: list[str] = []
    notifications.send_pending(ctx, transport=lambda m: mails.append(m.as_string()))
    emergency_mails = [m for m in mails if "Emergency unblinding" in m]
    assert len(emergency_mails) == 2  # the trial manager and the monitor have addresses
    for mail in emergency_mails:
        assert not any(word in mail.lower() for word in TREATMENT_WORDS)


@pytest.mark.req("ACC-10", "AUD-06")
@pytest.mark.req("UNB-03", "ACC-06")
def test_another_sites_investigator_is_refused_and_the_attempt_audited(
    ctx: ServiceContext, ready: ReadyTrial
) -> None:
    number = randomize(ctx, ready, "P1-0001")
    with pytest.raises(Forbidden):
        unblind(ctx, ready.investigator_p2, number, scope=site_scope(ctx, "P2"))
    assert count(ctx, Unblinding) == 0
    [refused] = events(ctx, "unblinding.refused")
    assert refused.object_id == number and refused.actor_username == "inv-p2"
    assert not events(ctx, "arm.read") or all(e.object_id != number for e in events(ctx, "arm.read"))
    with pytest.raises(NotFound):
        unblind(ctx, ready.investigator, "P9-999")


@pytest.mark.req("UNB-04", "ACC-05")
def test_a_wrong_password_is_refused_audited_and_counted_toward_lockout(
    ctx: ServiceContext, ready: ReadyTrial
) -> None:
    number = randomize(ctx, ready, "P1-0001")
    for _ in range(ctx.settings.login_max_failures_per_account):
        with pytest.raises(unblinding.SignatureNotAccepted) as refused:
            unblind(ctx, ready.investigator, number, signature=WRONG)
        assert refused.value.status == 401
    assert count(ctx, Unblinding) == 0
    assert len(events(ctx, "signature.failed")) == ctx.settings.login_max_failures_per_account
    assert all(
        json.loads(e.new_values or "{}")["meaning"] == "emergency unblinding"
        for e in events(ctx, "signature.failed")
    )
    # The account is now locked: even the right password is refused for a while, and sign-in too.
    with pytest.raises(TooManyRequests):
        unblind(ctx, ready.investigator, number)
    with pytest.raises(TooManyRequests):
        auth.login(ctx, "inv-p1", GOOD_PASSWORD, auth.Client("192.0.2.9", "test", "r"))
    assert count(ctx, Unblinding) == 0


@pytest.mark.req("UNB-02", "UNB-04")
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reason": ""}, "reason"),
        ({"reason": "too short"}, "reason"),
        ({"category": "curiosity"}, "reason_category"),
        ({"confirmed": False}, "confirm"),
    ],
)
def test_an_incomplete_request_reveals_nothing(
    ctx: ServiceContext, ready: ReadyTrial, change: dict[str, object], field: str
) -> None:
    number = randomize(ctx, ready, "P1-0001")
    before = len(events(ctx, "arm.read"))
    with pytest.raises(ValidationFailed) as refused:
        unblind(ctx, ready.investigator, number, **change)  # type: ignore[arg-type]
    assert field in {e.field for e in refused.value.errors}
    assert count(ctx, Unblinding) == 0 and len(events(ctx, "arm.read")) == before
    assert not events(ctx, "signature.applied") or all(
        json.loads(e.new_values or "{}")["meaning"] != "emergency unblinding"
        for e in events(ctx, "signature.applied")
    )


@pytest.mark.req("UNB-02")
@pytest.mark.parametrize("many", [["P1-001", "P1-002"], "P1-001,P1-002", "*", "P1-%", "", None])
def test_one_subject_per_action(ctx: ServiceContext, ready: ReadyTrial, many: object) -> None:
    randomize(ctx, ready, "P1-0001")
    randomize(ctx, ready, "P1-0002")
    with pytest.raises(unblinding.OneSubjectOnly) as refused:
        unblind(ctx, ready.investigator, many)
    assert refused.value.status == 400
    assert count(ctx, Unblinding) == 0


@pytest.mark.req("UNB-05", "AUD-03")
def test_an_unblinding_cannot_be_changed_or_deleted(ctx: ServiceContext, ready: ReadyTrial) -> None:
    number = randomize(ctx, ready, "P1-0001")
    unblind(ctx, ready.investigator, number)
    for statement in ("DELETE FROM unblinding", "UPDATE unblinding SET reason = 'nothing happened'"):
        with pytest.raises(DBAPIError, match="not allowed"), ctx.db.unit_of_work() as session:
            session.execute(text(statement))
    with ctx.db.reading() as s:
        assert s.execute(select(Unblinding.reason)).scalar_one() == REASON


@pytest.mark.req("UNB-02", "AUD-09")
def test_unusual_numbers_of_unblindings_alert_and_a_runaway_is_refused(
    ctx: ServiceContext, busy: ReadyTrial, clock: Clock
) -> None:
    ready = busy
    numbers = [randomize(ctx, ready, f"P1-{n:04d}") for n in range(1, 13)]
    results = []
    for number in numbers[: unblinding.REFUSE_ABOVE_PER_HOUR]:
        clock.advance(minutes=2)
        results.append(unblind(ctx, ready.investigator, number))
    assert [r.alert_raised for r in results] == [n >= unblinding.ALERT_FROM_PER_HOUR for n in range(1, 11)]
    alerts = events(ctx, "unblinding.rate_alert")
    assert len(alerts) == unblinding.REFUSE_ABOVE_PER_HOUR - unblinding.ALERT_FROM_PER_HOUR + 1
    with ctx.db.reading() as s:
        kinds = [n.kind for n in s.execute(select(Notification)).scalars()]
    assert kinds.count("unblinding_alert") == 2 * len(alerts)  # trial manager and monitor
    with pytest.raises(TooManyRequests, match=r"\+33 1 00 00 00 00"):
        unblind(ctx, ready.investigator, numbers[10])
    # An hour later the count starts again, without an alert.
    clock.advance(hours=1)
    assert not unblind(ctx, ready.investigator, numbers[10]).alert_raised


# --- pharmacovigilance (UNB-08) ---------------------------------------------------------------


@pytest.mark.req("UNB-08")
def test_a_pharmacovigilance_unblinding_is_seen_by_pharmacovigilance_only(
    ctx: ServiceContext, ready: ReadyTrial
) -> None:
    pv = make_actor(ctx, "safety", "pharmacovigilance")
    number = randomize(ctx, ready, "P1-0001")
    revealed = unblinding.pharmacovigilance_unblind(
        ctx,
        pv,
        TRIAL,
        number,
        reason_category="susar",
        reason="Expedited report of a suspected SUSAR (case 2026-001).",
        confirmed=True,
        signature=SIGNED,
        scope=ALL,
    )
    assert (
        revealed.arm_code == true_arm(ctx, number)
        and revealed.signature.meaning == "pharmacovigilance unblinding"
    )
    # Trial staff see nothing: no flag, no event, no notification.
    [view] = subjects_views.subjects(ctx, TRIAL, ALL)
    assert not view.blind_broken
    assert unblinding.unblindings(ctx, TRIAL, ALL) == []
    assert [u.kind for u in unblinding.unblindings(ctx, TRIAL, ALL, include_pharmacovigilance=True)] == [
        "pharmacovigilance"
    ]
    with ctx.db.reading() as s:
        audiences = {
            n.audience for n in s.execute(select(Notification)).scalars() if n.kind == "pv_unblinding"
        }
    assert audiences == {"pharmacovigilance"}
    with pytest.raises(ValidationFailed):  # PV reasons are their own list
        unblinding.pharmacovigilance_unblind(
            ctx,
            pv,
            TRIAL,
            number,
            reason_category="pregnancy",
            reason=REASON,
            confirmed=True,
            signature=SIGNED,
            scope=ALL,
        )


# --- offline code-break sheets (UNB-06) -------------------------------------------------------


def sheet_of(ctx: ServiceContext, kit_number: str) -> str:
    """The number of the sealed sheet that `ready_trial` generated for the kit, through the
    code-break service (signed by the statistician) before the sites were activated (UNB-07)."""
    with ctx.db.reading() as session:
        return session.execute(
            select(CodeBreakSheet.sheet_number)
            .join(Kit, Kit.id == CodeBreakSheet.kit_id)
            .where(Kit.kit_number == kit_number)
        ).scalar_one()


def register(
    ctx: ServiceContext, ready: ReadyTrial, sheet: str, **changes: object
) -> unblinding.RecordedUnblinding:
    values: dict[str, object] = {
        "opened_at": ctx.now() - timedelta(hours=2),
        "opened_by": "Dr Night Shift",
        "opened_by_role": "physician",
        "reason_category": "serious_adverse_event",
        "reason": REASON,
        "signature": SIGNED,
        "scope": site_scope(ctx, "P1"),
    }
    values.update(changes)
    return unblinding.register_offline(ctx, ready.investigator, TRIAL, sheet, **values)  # type: ignore[arg-type]


@pytest.mark.req("UNB-06", "UNB-05", "DIB-09")
def test_registering_an_opened_sheet_creates_the_same_record_with_channel_offline(
    ctx: ServiceContext, ready: ReadyTrial, clock: Clock
) -> None:
    number = randomize(ctx, ready, "P1-0001")
    [subject] = subjects_views.subjects(ctx, TRIAL, ALL)
    sheet = sheet_of(ctx, subject.days[0].kit_number)
    clock.advance(hours=6)
    opened = ctx.now() - timedelta(hours=3)
    with pytest.raises(ValidationFailed) as refused:
        register(ctx, ready, sheet, opened_at=ctx.now() + timedelta(hours=1), opened_by="")
    assert {e.field for e in refused.value.errors} == {"opened_at", "opened_by"}
    recorded = register(ctx, ready, f" {sheet.lower()} ", opened_at=opened)  # as typed
    assert (recorded.subject_number, recorded.channel, recorded.kind, recorded.sheet_number) == (
        number,
        "offline",
        "emergency",
        sheet,
    )
    assert recorded.unblinded_at == opened and recorded.unblinded_by == "Dr Night Shift"
    assert recorded.recorded_by == ready.investigator.name and recorded.recorded_at == ctx.now()
    assert subjects_views.subjects(ctx, TRIAL, ALL)[0].blind_broken
    [entry] = events(ctx, "unblinding.offline_registered")
    assert json.loads(entry.new_values or "{}")["sheet"] == sheet
    assert not [e for e in events(ctx, "arm.read") if e.object_id == number]  # nothing revealed online
    with ctx.db.reading() as s:
        kinds = [n.kind for n in s.execute(select(Notification)).scalars()]
    assert kinds.count("emergency_unblinding") == 3
    with pytest.raises(Conflict, match="already registered"):
        register(ctx, ready, sheet)
    with pytest.raises(NotFound):
        register(ctx, ready, "CB-IFNG-PAIS-999999")


@pytest.mark.req("UNB-06")
def test_a_sheet_of_a_kit_never_allocated_cannot_be_registered_as_an_unblinding(
    ctx: ServiceContext, ready: ReadyTrial
) -> None:
    randomize(ctx, ready, "P1-0001")
    with ctx.db.reading() as s:
        free = s.execute(select(Kit.kit_number).where(Kit.status == "available")).scalars().first()
    assert free is not None
    with pytest.raises(Conflict, match="accidental"):
        register(ctx, ready, sheet_of(ctx, free))


# --- accidental unblinding (UNB-09) -----------------------------------------------------------


@pytest.mark.req("UNB-09")
def test_an_accidental_unblinding_is_reported_without_naming_the_treatment(
    ctx: ServiceContext, ready: ReadyTrial
) -> None:
    number = randomize(ctx, ready, "P1-0001")
    report = unblinding.AccidentalReport(
        subject_number=number,
        site=None,
        occurred_at=ctx.now() - timedelta(hours=1),
        persons_unblinded="Night nurse N. Urse (nurse, P1)",
        how="The pharmacy's internal preparation note was left with the syringe; it said Placebo.",
        impact="One nurse unblinded for one subject; no assessment by her.",
        actions="Note removed; pharmacy retrained; nurse excluded from outcome assessment.",
    )
    with pytest.raises(ValidationFailed) as refused:
        unblinding.report_accidental(ctx, ready.nurse, TRIAL, report, scope=ALL)
    assert [e.field for e in refused.value.errors] == ["how"]
    fixed = replace(report, how="The pharmacy's internal note was left with the syringe.")
    report_id = unblinding.report_accidental(ctx, ready.nurse, TRIAL, fixed, scope=ALL)
    assert report_id > 0
    assert subjects_views.subjects(ctx, TRIAL, ALL)[0].blind_broken
    [entry] = events(ctx, "unblinding.accidental_reported")
    assert json.loads(entry.new_values or "{}")["subject"] == number
    with pytest.raises(ValidationFailed) as refused:
        unblinding.report_accidental(ctx, ready.nurse, TRIAL, replace(fixed, impact=""), scope=ALL)
    assert [e.field for e in refused.value.errors] == ["impact"]


# --- planned unblinding (UNB-10) --------------------------------------------------------------


@pytest.mark.req("UNB-10", "BLD-09", "REP-06")
def test_the_trial_walks_active_locked_unblinded_with_signatures_and_the_listing_waits(
    ctx: ServiceContext, ready: ReadyTrial
) -> None:
    manager = make_actor(ctx, "manager", "trial_manager")
    numbers = [randomize(ctx, ready, f"P1-{n:04d}") for n in range(1, 5)] + [
        randomize(ctx, ready, "P2-0001", "P2")
    ]
    stat = ready.statistician
    with pytest.raises(lookups.NotUnblinded):
        releases.unblinded_listing(ctx, stat, TRIAL, signature=SIGNED)
    with pytest.raises(Conflict):  # not in that order
        state.unblind_trial(ctx, stat, TRIAL, reason="analysis", signature=SIGNED)
    with pytest.raises(lookups.NotUnblinded):
        releases.own_subject_arm(ctx, ready.investigator, TRIAL, numbers[0], ALL)
    with pytest.raises(ValidationFailed):
        state.lock(ctx, manager, TRIAL, reason=" ", signature=SIGNED)
    with pytest.raises(signatures.SignatureRefused):
        state.lock(ctx, manager, TRIAL, reason="last patient out", signature=WRONG)
    assert state.status(ctx, TRIAL) == "active"

    locked = state.lock(ctx, manager, TRIAL, reason="last patient out, data cleaned", signature=SIGNED)
    assert (locked.from_status, locked.to_status, locked.signature.meaning) == (
        "active",
        "locked",
        "database lock",
    )
    with pytest.raises(Conflict):
        state.lock(ctx, manager, TRIAL, reason="again", signature=SIGNED)
    with pytest.raises(lookups.NotUnblinded):
        releases.unblinded_listing(ctx, stat, TRIAL, signature=SIGNED)
    # Emergency unblinding stays possible after the lock.
    unblind(ctx, ready.investigator, numbers[0])

    done = state.unblind_trial(ctx, stat, TRIAL, reason="SAP signed, blind review done", signature=SIGNED)
    assert done.signature.meaning == "final unblinding"
    status, steps = state.history(ctx, TRIAL)
    assert status == "unblinded" and [(s.from_status, s.to_status) for s in steps] == [
        ("active", "locked"),
        ("locked", "unblinded"),
    ]

    release = releases.unblinded_listing(ctx, stat, TRIAL, signature=SIGNED)
    assert release.signature.meaning == "release of the unblinded listing"
    truth = {n: true_arm(ctx, n) for n in numbers}
    assert {r.subject_number: r.arm for r in release.rows} == truth
    rows = list(csv.reader(io.StringIO(release.csv)))
    assert rows[1] == list(releases.LISTING_COLUMNS) and len(rows) == 2 + len(numbers)
    assert {row[0]: row[8] for row in rows[2:]} == truth
    assert release.sha256 == hashlib.sha256(release.csv.encode()).hexdigest()
    [released] = events(ctx, "report.unblinded_listing")
    assert json.loads(released.new_values or "{}")["sha256"] == release.sha256
    # Investigators may now learn their own subjects' treatment (audited), not another site's.
    assert (
        releases.own_subject_arm(ctx, ready.investigator, TRIAL, numbers[1], site_scope(ctx, "P1"))[0]
        == truth[numbers[1]]
    )
    with pytest.raises(NotFound):
        releases.own_subject_arm(ctx, ready.investigator, TRIAL, numbers[4], site_scope(ctx, "P1"))


@pytest.mark.req("REP-08", "BLD-09")
def test_an_interim_package_is_signed_numbered_audited_and_kept_as_a_digest(
    ctx: ServiceContext, ready: ReadyTrial
) -> None:
    numbers = [randomize(ctx, ready, f"P1-{n:04d}") for n in range(1, 4)]
    with pytest.raises(ValidationFailed):
        releases.interim_package(ctx, ready.statistician, TRIAL, purpose="", signature=SIGNED)
    first = releases.interim_package(ctx, ready.statistician, TRIAL, purpose="DSMB look 1", signature=SIGNED)
    second = releases.interim_package(ctx, ready.statistician, TRIAL, purpose="DSMB look 2", signature=SIGNED)
    assert "package 1" in first.title and "package 2" in second.title
    assert {r.subject_number: r.arm for r in first.rows} == {n: true_arm(ctx, n) for n in numbers}
    from allocator.models import InterimPackage

    with ctx.db.reading() as s:
        rows = list(s.execute(select(InterimPackage).order_by(InterimPackage.id)).scalars())
    assert [(r.number, r.subjects, r.content_sha256) for r in rows] == [
        (1, 3, first.sha256),
        (2, 3, second.sha256),
    ]
    assert len(events(ctx, "report.interim_package")) == 2


@pytest.mark.req("UNB-10")
def test_a_locked_trial_takes_no_new_dispensing(ctx: ServiceContext, ready: ReadyTrial) -> None:
    number = randomize(ctx, ready, "P1-0001")
    manager = make_actor(ctx, "manager", "trial_manager")
    state.lock(ctx, manager, TRIAL, reason="database lock for the analysis", signature=SIGNED)
    [subject] = subjects_views.subjects(ctx, TRIAL, ALL)
    with pytest.raises(lookups.TrialLocked):
        dispensing.dispense(
            ctx,
            ready.pharmacist,
            TRIAL,
            number,
            {d.label: d.kit_number for d in subject.days},
            scope=ALL,
            signature=SIGNED,
        )


@pytest.mark.req("UNB-10")
def test_a_locked_trial_takes_no_new_subject(ctx: ServiceContext, ready: ReadyTrial) -> None:
    randomize(ctx, ready, "P1-0001")
    manager = make_actor(ctx, "manager", "trial_manager")
    state.lock(ctx, manager, TRIAL, reason="database lock for the analysis", signature=SIGNED)
    with pytest.raises(lookups.TrialLocked) as refused:
        randomize(ctx, ready, "P1-0002")
    assert refused.value.status == 409 and refused.value.slug == "trial-locked"
    assert len(subjects_views.subjects(ctx, TRIAL, ALL)) == 1
