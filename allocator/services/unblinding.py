"""Emergency, pharmacovigilance and offline unblinding; accidental-unblinding reports (UNB-01..09).

Emergency unblinding is the investigator's right at any hour, with no approval step (UNB-01): one
subject per call (UNB-02), own site only (UNB-03), a coded reason with free text, an explicit
confirmation and an electronic signature meaning "emergency unblinding" (UNB-04). In one unit of
work: the signature, the audited read of the arm, the append-only unblinding record and blinded
notifications to the sponsor's trial management, pharmacovigilance and the monitors (UNB-05). The arm
is returned to the caller once and stored nowhere else in clear.

Unusual activity is alerted, never silently blocked: from the fourth emergency unblinding by one
person within an hour the trial manager and monitors are alerted; only an evident runaway (more
than ten an hour by one person) is refused, with the 24/7 emergency number in the message, since a
real emergency has that fallback and the offline sheets (UNB-06).

Pharmacovigilance unblinding (UNB-08) follows the same path but is seen only by pharmacovigilance:
no notification to trial staff, no "blind broken" flag for blinded roles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from allocator.audit import Action, Actor
from allocator.models import (
    AccidentalUnblinding,
    AuditEvent,
    CodeBreakSheet,
    Dispensation,
    Kit,
    Notification,
    Signature,
    Site,
    Subject,
    Trial,
    Unblinding,
    UnblindingChannel,
    UnblindingKind,
)
from allocator.permissions import Scope
from allocator.services import arm_access, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import (
    Conflict,
    DomainError,
    FieldProblem,
    Forbidden,
    NotFound,
    TooManyRequests,
    ValidationFailed,
)
from allocator.services.lookups import current_definition, get_trial, treatment_words
from allocator.trialdef import TrialDefinition

EMERGENCY_MEANING = "emergency unblinding"
PV_MEANING = "pharmacovigilance unblinding"
OFFLINE_MEANING = "registration of an offline emergency unblinding"

# Coded reasons (UNB-04). The free text says the rest.
EMERGENCY_REASONS: dict[str, str] = {
    "serious_adverse_event": "Serious adverse event: the treatment of the event depends on the product",
    "overdose_or_medication_error": "Overdose or medication error",
    "interaction": "Interaction with a treatment the patient needs",
    "pregnancy": "Pregnancy",
    "other_medical_emergency": "Other medical emergency",
}
PV_REASONS: dict[str, str] = {
    "susar": "Suspected unexpected serious adverse reaction (expedited report)",
    "other_expedited_report": "Other expedited safety report",
}

ALERT_FROM_PER_HOUR = 4  # the 4th emergency unblinding by one person within an hour alerts
REFUSE_ABOVE_PER_HOUR = 10  # an evident runaway is refused (the phone line and sheets remain)
MIN_REASON_LENGTH = 10


class OneSubjectOnly(DomainError):
    """UNB-02: a list, a wildcard or anything but one subject number is a bad request (400)."""

    status = 400
    slug = "one-subject-only"
    title = "Exactly one subject per unblinding"


class SignatureNotAccepted(signatures.SignatureRefused):
    """A wrong password or code on an unblinding: 401 (UNB-04), audited, counted toward lockout."""

    status = 401


@dataclass(frozen=True, slots=True)
class RevealedArm:
    """What the unblinder sees, once."""

    unblinding_id: int
    subject_number: str
    site: str
    arm_code: str
    arm_label: str
    product: str
    unblinded_at: datetime
    signature: signatures.Manifestation
    alert_raised: bool
    # UNB-11: a drill subject's value, drawn at random for the drill: nobody's treatment.
    drill: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "drill": self.drill,
            "unblinding_id": self.unblinding_id,
            "subject_number": self.subject_number,
            "site": self.site,
            "arm": self.arm_code,
            "arm_label": self.arm_label,
            "product": self.product,
            "unblinded_at": self.unblinded_at.isoformat(),
            "signature": self.signature.line(),
        }


@dataclass(frozen=True, slots=True)
class ShownBefore:
    """An unblinding result already shown: when and to whom, never the arm (issue 13)."""

    unblinding_id: int
    subject_number: str
    site: str
    kind: str
    shown_at: datetime
    shown_to: str
    drill: bool = False


@dataclass(frozen=True, slots=True)
class RecordedUnblinding:
    """An unblinding as blinded readers may see it: the event, never the arm."""

    unblinding_id: int
    subject_number: str
    site: str
    kind: str
    channel: str
    reason_category: str
    reason: str
    unblinded_at: datetime
    unblinded_by: str
    unblinded_by_role: str
    recorded_at: datetime
    recorded_by: str
    sheet_number: str | None


# --- validation --------------------------------------------------------------------------------


def check_request(
    subject_number: object,
    reason_category: str,
    reason: str,
    categories: dict[str, str],
    *,
    confirmed: bool,
) -> str:
    """One subject, a known category, a real reason, an explicit confirmation (UNB-02, UNB-04)."""
    if not isinstance(subject_number, str) or not re.fullmatch(
        r"[A-Za-z0-9][A-Za-z0-9-]{0,31}", subject_number
    ):
        raise OneSubjectOnly(
            "give exactly one subject number; nothing was revealed",
            errors=[FieldProblem("subject", "one subject number, no list or wildcard")],
        )
    problems = []
    if reason_category not in categories:
        problems.append(FieldProblem("reason_category", f"one of: {', '.join(categories)}"))
    if len(reason.strip()) < MIN_REASON_LENGTH:
        problems.append(
            FieldProblem("reason", f"describe the reason (at least {MIN_REASON_LENGTH} characters)")
        )
    if not confirmed:
        problems.append(FieldProblem("confirm", "confirm that you want to break the blind of this subject"))
    if problems:
        raise ValidationFailed("the unblinding request is incomplete; nothing was revealed", errors=problems)
    return str(subject_number)


def _subject_in(
    ctx: ServiceContext, session: Session, actor: Actor, trial: Trial, number: str, scope: Scope, kind: str
) -> tuple[Subject, Site]:
    subject = session.execute(
        select(Subject).where(Subject.trial_id == trial.id, Subject.subject_number == number)
    ).scalar_one_or_none()
    if subject is None:
        raise NotFound(f"no subject {number} in {trial.code}", errors=[FieldProblem("subject", "unknown")])
    site = session.get(Site, subject.site_id)
    if site is None:  # pragma: no cover - a foreign key guarantees it
        raise NotFound("no site")
    if not scope.allows_site(subject.site_id):
        raise _OtherSite(number, site.code, kind)
    return subject, site


class _OtherSite(Exception):
    def __init__(self, number: str, site: str, kind: str) -> None:
        super().__init__(number)
        self.number, self.site, self.kind = number, site, kind


def _refuse_other_site(ctx: ServiceContext, actor: Actor, trial_code: str, refused: _OtherSite) -> Forbidden:
    """UNB-03: an investigator asking for another site's subject gets 403, and it is audited."""
    with ctx.db.unit_of_work() as session:
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial_code,
            action=Action.UNBLINDING_REFUSED,
            object_type="subject",
            object_id=refused.number,
            site_code=refused.site,
            new={"kind": refused.kind, "why": "the subject is not at a site of the requester"},
            at=ctx.now(),
        )
    return Forbidden(f"{refused.number} is not a subject of your site: you cannot unblind it")


# --- emergency and pharmacovigilance unblinding ----------------------------------------------


def emergency_unblind(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    subject_number: object,
    *,
    reason_category: str,
    reason: str,
    confirmed: bool,
    signature: signatures.SignatureRequest,
    scope: Scope,
) -> RevealedArm:
    """Break the blind of one subject for its treating investigator (UNB-01..05)."""
    return _unblind(
        ctx,
        actor,
        trial_code,
        subject_number,
        kind=UnblindingKind.EMERGENCY,
        reason_category=reason_category,
        reason=reason,
        confirmed=confirmed,
        signature=signature,
        scope=scope,
    )


def replay_emergency_unblinding(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    subject_number: str,
    *,
    key: str,
    stored: str,
    password: str,
) -> object:
    """The sealed answer of an emergency unblinding this user already made with this
    Idempotency-Key (issue 14): the password is checked again (a wrong one is recorded and counts
    toward the lockout), then the answer is opened through arm_access, audited as an `arm.read`;
    nothing is unblinded, signed or notified a second time."""
    try:
        signatures.check_password(ctx, actor, password)
    except signatures.SignatureRefused as exc:
        signatures.record_failure(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=EMERGENCY_MEANING,
            object_type="subject",
            object_id=subject_number,
        )
        raise SignatureNotAccepted(exc.detail, errors=list(exc.errors)) from None
    return arm_access.open_stored_answer(ctx, actor, trial_code, key, subject_number, stored)


def pharmacovigilance_unblind(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    subject_number: object,
    *,
    reason_category: str,
    reason: str,
    confirmed: bool,
    signature: signatures.SignatureRequest,
    scope: Scope,
) -> RevealedArm:
    """Break the blind of one subject for an expedited safety report, seen by PV only (UNB-08)."""
    return _unblind(
        ctx,
        actor,
        trial_code,
        subject_number,
        kind=UnblindingKind.PHARMACOVIGILANCE,
        reason_category=reason_category,
        reason=reason,
        confirmed=confirmed,
        signature=signature,
        scope=scope,
    )


def _unblind(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    subject_number: object,
    *,
    kind: UnblindingKind,
    reason_category: str,
    reason: str,
    confirmed: bool,
    signature: signatures.SignatureRequest,
    scope: Scope,
) -> RevealedArm:
    emergency = kind is UnblindingKind.EMERGENCY
    categories = EMERGENCY_REASONS if emergency else PV_REASONS
    meaning = EMERGENCY_MEANING if emergency else PV_MEANING
    number = check_request(subject_number, reason_category, reason, categories, confirmed=confirmed)
    reason = reason.strip()
    now = ctx.now()
    try:
        with ctx.db.unit_of_work() as session:
            trial = get_trial(session, trial_code)
            definition = current_definition(session, trial)
            subject, site = _subject_in(ctx, session, actor, trial, number, scope, kind.value)
            recent = _recent_by(session, trial.id, actor, now)
            if emergency and recent >= REFUSE_ABOVE_PER_HOUR:
                raise TooManyRequests(
                    f"{recent} emergency unblindings by you within the hour: refused. In a real emergency "
                    f"call {definition.sponsor.emergency_phone} or use the sealed code-break sheet."
                )
            signed = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=signature,
                meaning=meaning,
                object_type="subject",
                object_id=number,
                content={
                    "subject": number,
                    "kind": kind.value,
                    "reason_category": reason_category,
                    "reason": reason,
                },
                now=now,
            )
            arm = arm_access.subject_arm_in(session, ctx, actor, trial.code, subject, meaning)
            row = Unblinding(
                trial_id=trial.id,
                subject_id=subject.id,
                site_id=site.id,
                kind=kind.value,
                channel=UnblindingChannel.ONLINE.value,
                reason_category=reason_category,
                reason=reason,
                unblinded_at=now,
                unblinded_by_name=actor.name,
                unblinded_by_role=actor.role,
                code_break_sheet_id=None,
                recorded_at=now,
                recorded_by_id=actor.user_id,
                recorded_by_name=actor.name,
                signature_id=signed.id,
                request_id=actor.request_id,
            )
            session.add(row)
            session.flush()
            ctx.audit.record(
                session,
                actor=actor,
                chain=trial.code,
                action=Action.UNBLINDING_EMERGENCY if emergency else Action.UNBLINDING_PV,
                object_type="subject",
                object_id=number,
                site_code=site.code,
                new={
                    "unblinding": row.id,
                    "channel": "online",
                    "reason_category": reason_category,
                    "signature": signed.id,
                },
                reason=reason,
                sealed={"arm": arm},
                at=now,
            )
            alert = False
            if emergency:
                _notify_emergency(session, trial, site, row, number, actor, now)
                alert = recent + 1 >= ALERT_FROM_PER_HOUR
                if alert:
                    _alert_unusual(ctx, session, trial, site, actor, recent + 1, now)
            else:
                _notify(
                    session,
                    trial,
                    None,
                    ("pharmacovigilance",),
                    "pv_unblinding",
                    number,
                    f"Pharmacovigilance unblinding of {number}",
                    f"{actor.name} unblinded subject {number} for an expedited safety report "
                    f"({PV_REASONS[reason_category]}). Visible to pharmacovigilance only.",
                    now,
                )
            return RevealedArm(
                unblinding_id=row.id,
                subject_number=number,
                site=site.code,
                arm_code=arm,
                arm_label=arm_words(definition, arm)[0],
                product=arm_words(definition, arm)[1],
                unblinded_at=now,
                signature=signatures.manifestation(signed),
                alert_raised=alert,
            )
    except _OtherSite as refused:
        raise _refuse_other_site(ctx, actor, trial_code, refused) from None
    except signatures.SignatureRefused as exc:
        signatures.record_failure(
            ctx, actor=actor, chain=trial_code, meaning=meaning, object_type="subject", object_id=number
        )
        raise SignatureNotAccepted(exc.detail, errors=list(exc.errors)) from None


def show_result(
    ctx: ServiceContext, actor: Actor, trial_code: str, unblinding_id: int
) -> RevealedArm | ShownBefore:
    """The result page of an online unblinding, reached by a GET after the POST that recorded it
    (Post/Redirect/Get, issue 13). The first visit by the person who unblinded shows the arm, read
    and audited again, and records that it was shown; any later visit (a reload, the back button)
    says when and to whom it was shown, without the arm. Anyone else, or another trial's id: 404."""
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        # Locked, so that two visits at the same instant cannot both be the first.
        row = session.execute(
            select(Unblinding).where(Unblinding.id == unblinding_id).with_for_update()
        ).scalar_one_or_none()
        if (
            row is None
            or row.trial_id != trial.id
            or row.channel != UnblindingChannel.ONLINE.value
            or actor.user_id is None
            or row.recorded_by_id != actor.user_id
        ):
            raise NotFound(f"no unblinding {unblinding_id} of yours in {trial.code}")
        subject = session.get(Subject, row.subject_id)
        site = session.get(Site, row.site_id)
        if subject is None or site is None:  # pragma: no cover - foreign keys guarantee them
            raise NotFound("no subject")
        shown = first_shown(session, trial.code, Action.UNBLINDING_RESULT_SHOWN, "unblinding", row.id)
        if shown is not None:
            return ShownBefore(
                unblinding_id=row.id,
                subject_number=subject.subject_number,
                site=site.code,
                kind=row.kind,
                shown_at=datetime.fromisoformat(shown.at.replace("Z", "+00:00")),
                shown_to=shown.actor_name,
            )
        now = ctx.now()
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.UNBLINDING_RESULT_SHOWN,
            object_type="unblinding",
            object_id=row.id,
            site_code=site.code,
            new={"subject": subject.subject_number, "kind": row.kind},
            at=now,
        )
        meaning = EMERGENCY_MEANING if row.kind == UnblindingKind.EMERGENCY.value else PV_MEANING
        arm = arm_access.subject_arm_in(session, ctx, actor, trial.code, subject, meaning)
        definition = current_definition(session, trial)
        signed = session.get(Signature, row.signature_id)
        if signed is None:  # pragma: no cover - a foreign key guarantees it
            raise NotFound("no signature")
        label, product = arm_words(definition, arm)
        return RevealedArm(
            unblinding_id=row.id,
            subject_number=subject.subject_number,
            site=site.code,
            arm_code=arm,
            arm_label=label,
            product=product,
            unblinded_at=row.unblinded_at,
            signature=signatures.manifestation(signed),
            alert_raised=False,
        )


def first_shown(
    session: Session, chain: str, action: Action, object_type: str, object_id: int
) -> AuditEvent | None:
    """The audit entry of the first showing of a result (issue 13), if it was shown."""
    return session.execute(
        select(AuditEvent)
        .where(
            AuditEvent.chain == chain,
            AuditEvent.action == action.value,
            AuditEvent.object_type == object_type,
            AuditEvent.object_id == str(object_id),
        )
        .order_by(AuditEvent.seq)
        .limit(1)
    ).scalar_one_or_none()


def arm_words(definition: TrialDefinition, code: str) -> tuple[str, str]:
    """An arm code's label and product, as the definition names them."""
    for arm in definition.arms:
        if arm.code == code:
            return arm.label, arm.product
    return code, ""  # pragma: no cover - lists only hold the definition's arms


def _recent_by(session: Session, trial_id: int, actor: Actor, now: datetime) -> int:
    if actor.user_id is None:
        return 0
    return int(
        session.execute(
            select(func.count())
            .select_from(Unblinding)
            .where(
                Unblinding.trial_id == trial_id,
                Unblinding.kind == UnblindingKind.EMERGENCY.value,
                Unblinding.recorded_by_id == actor.user_id,
                Unblinding.channel == UnblindingChannel.ONLINE.value,
                Unblinding.recorded_at > now - timedelta(hours=1),
            )
        ).scalar_one()
    )


def _notify(
    session: Session,
    trial: Trial,
    site: Site | None,
    audiences: tuple[str, ...],
    kind: str,
    subject_number: str | None,
    title: str,
    body: str,
    now: datetime,
) -> None:
    for audience in audiences:
        session.add(
            Notification(
                trial_id=trial.id,
                site_id=site.id if site else None,
                audience=audience,
                kind=kind,
                subject_number=subject_number,
                title=title,
                body=body,
                created_at=now,
            )
        )


# The sponsor's trial management, its pharmacovigilance and the monitors learn of every emergency
# unblinding at once, without the arm (UNB-05).
EMERGENCY_AUDIENCES = ("trial_manager", "pharmacovigilance", "monitor")


def _notify_emergency(
    session: Session, trial: Trial, site: Site, row: Unblinding, number: str, actor: Actor, now: datetime
) -> None:
    how = (
        "online"
        if row.channel == UnblindingChannel.ONLINE.value
        else f"offline (code-break sheet, registered by {actor.name})"
    )
    _notify(
        session,
        trial,
        site,
        EMERGENCY_AUDIENCES,
        "emergency_unblinding",
        number,
        f"Emergency unblinding of {number} at site {site.code}",
        f"{row.unblinded_by_name} ({row.unblinded_by_role}, site {site.code}) broke the blind of subject {number} "
        f"on {row.unblinded_at:%Y-%m-%d %H:%M} UTC, {how}. Reason: {EMERGENCY_REASONS[row.reason_category]}. "
        "The treatment is not stated here; the unblinding is recorded in the service.",
        now,
    )


def _alert_unusual(
    ctx: ServiceContext, session: Session, trial: Trial, site: Site, actor: Actor, count: int, now: datetime
) -> None:
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.UNBLINDING_RATE_ALERT,
        object_type="user",
        object_id=actor.username,
        site_code=site.code,
        new={"emergency_unblindings_within_an_hour": count},
        at=now,
    )
    # The site's notification: monitors limited to other sites do not hear of it (issue 15).
    _notify(
        session,
        trial,
        site,
        ("trial_manager", "monitor"),
        "unblinding_alert",
        None,
        f"Unusual number of emergency unblindings by {actor.name}",
        f"{actor.name} ({actor.role}, site {site.code}) has broken the blind of {count} subjects within an hour. "
        "Please review the unblinding report.",
        now,
    )


# --- offline code-break sheets (UNB-06) --------------------------------------------------------


def opening_problems(
    opened_at: datetime, opened_by: str, opened_by_role: str, reason_category: str, reason: str, now: datetime
) -> list[FieldProblem]:
    """What is wrong with the registration of a sheet's opening (a real or a drill sheet), by field."""
    problems = []
    if not opened_by.strip():
        problems.append(FieldProblem("opened_by", "name the person who opened the sheet"))
    if opened_by_role.strip() not in {"investigator", "physician", "pharmacist", "other"}:
        problems.append(FieldProblem("opened_by_role", "investigator, physician, pharmacist or other"))
    if reason_category not in EMERGENCY_REASONS:
        problems.append(FieldProblem("reason_category", f"one of: {', '.join(EMERGENCY_REASONS)}"))
    if len(reason.strip()) < MIN_REASON_LENGTH:
        problems.append(
            FieldProblem("reason", f"describe the reason (at least {MIN_REASON_LENGTH} characters)")
        )
    if opened_at.tzinfo is None:
        problems.append(FieldProblem("opened_at", "give the time with its time zone"))
    elif opened_at > now:
        problems.append(FieldProblem("opened_at", "is in the future"))
    return problems


def register_offline(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    sheet_number: str,
    *,
    opened_at: datetime,
    opened_by: str,
    opened_by_role: str,
    reason_category: str,
    reason: str,
    signature: signatures.SignatureRequest,
    scope: Scope,
) -> RecordedUnblinding:
    """Register, once the service is back, the opening of a sealed code-break sheet: the same
    unblinding record as online, with channel "offline", the real opening time and who opened it
    (DIB-09). The arm is not shown: the person who opened the sheet has read it on paper."""
    sheet_number = sheet_number.strip().upper()
    now = ctx.now()
    problems = [] if sheet_number else [FieldProblem("sheet_number", "is required")]
    problems += opening_problems(opened_at, opened_by, opened_by_role, reason_category, reason, now)
    if problems:
        raise ValidationFailed("the offline unblinding cannot be registered", errors=problems)
    reason = reason.strip()
    try:
        with ctx.db.unit_of_work() as session:
            trial = get_trial(session, trial_code)
            sheet = session.execute(
                select(CodeBreakSheet).where(
                    CodeBreakSheet.trial_id == trial.id, CodeBreakSheet.sheet_number == sheet_number
                )
            ).scalar_one_or_none()
            if sheet is None:
                raise NotFound(
                    f"no code-break sheet {sheet_number}", errors=[FieldProblem("sheet_number", "unknown")]
                )
            kit = session.get(Kit, sheet.kit_id)
            dispensation = (
                session.execute(
                    select(Dispensation).where(Dispensation.kit_id == sheet.kit_id).order_by(Dispensation.id)
                )
                .scalars()
                .first()
            )
            if kit is None or dispensation is None:
                raise Conflict(
                    f"the kit of sheet {sheet_number} was never allocated to a subject: report the opening "
                    "as an accidental unblinding instead"
                )
            subject = session.get(Subject, dispensation.subject_id)
            if subject is None:  # pragma: no cover - a foreign key guarantees it
                raise NotFound("no subject")
            subject, site = _subject_in(ctx, session, actor, trial, subject.subject_number, scope, "offline")
            if opened_at < subject.randomized_at:
                raise ValidationFailed(
                    "opened before the subject was randomized",
                    errors=[FieldProblem("opened_at", "is before the randomization of the kit's subject")],
                )
            already = session.execute(
                select(Unblinding.id).where(Unblinding.code_break_sheet_id == sheet.id)
            ).scalar_one_or_none()
            if already is not None:
                raise Conflict(f"the opening of sheet {sheet_number} is already registered")
            signed = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=signature,
                meaning=OFFLINE_MEANING,
                object_type="subject",
                object_id=subject.subject_number,
                content={
                    "subject": subject.subject_number,
                    "sheet": sheet_number,
                    "opened_at": opened_at.isoformat(),
                    "opened_by": opened_by.strip(),
                    "reason_category": reason_category,
                    "reason": reason,
                },
                now=now,
            )
            row = Unblinding(
                trial_id=trial.id,
                subject_id=subject.id,
                site_id=site.id,
                kind=UnblindingKind.EMERGENCY.value,
                channel=UnblindingChannel.OFFLINE.value,
                reason_category=reason_category,
                reason=reason,
                unblinded_at=opened_at,
                unblinded_by_name=opened_by.strip(),
                unblinded_by_role=opened_by_role.strip(),
                code_break_sheet_id=sheet.id,
                recorded_at=now,
                recorded_by_id=actor.user_id,
                recorded_by_name=actor.name,
                signature_id=signed.id,
                request_id=actor.request_id,
            )
            session.add(row)
            session.flush()
            ctx.audit.record(
                session,
                actor=actor,
                chain=trial.code,
                action=Action.UNBLINDING_OFFLINE,
                object_type="subject",
                object_id=subject.subject_number,
                site_code=site.code,
                new={
                    "unblinding": row.id,
                    "channel": "offline",
                    "sheet": sheet_number,
                    "opened_at": opened_at.isoformat(),
                    "opened_by": opened_by.strip(),
                    "reason_category": reason_category,
                    "signature": signed.id,
                },
                reason=reason,
                at=now,
            )
            _notify_emergency(session, trial, site, row, subject.subject_number, actor, now)
            return _recorded(row, subject.subject_number, site.code, sheet_number)
    except _OtherSite as refused:
        raise _refuse_other_site(ctx, actor, trial_code, refused) from None
    except signatures.SignatureRefused as exc:
        signatures.record_failure(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=OFFLINE_MEANING,
            object_type="sheet",
            object_id=sheet_number,
        )
        raise SignatureNotAccepted(exc.detail, errors=list(exc.errors)) from None


def _recorded(row: Unblinding, number: str, site: str, sheet: str | None) -> RecordedUnblinding:
    return RecordedUnblinding(
        unblinding_id=row.id,
        subject_number=number,
        site=site,
        kind=row.kind,
        channel=row.channel,
        reason_category=row.reason_category,
        reason=row.reason,
        unblinded_at=row.unblinded_at,
        unblinded_by=row.unblinded_by_name,
        unblinded_by_role=row.unblinded_by_role,
        recorded_at=row.recorded_at,
        recorded_by=row.recorded_by_name,
        sheet_number=sheet,
    )


# --- accidental unblinding (UNB-09) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccidentalReport:
    subject_number: str | None
    site: str | None
    occurred_at: datetime
    persons_unblinded: str
    how: str
    impact: str
    actions: str


def report_accidental(
    ctx: ServiceContext, actor: Actor, trial_code: str, report: AccidentalReport, *, scope: Scope
) -> int:
    """Record an accidental or unplanned unblinding: who was unblinded, how, the impact and the
    actions taken. The report is read by blinded staff, so it must not name the treatment; a text
    that does is refused, naming the field."""
    texts = {
        "persons_unblinded": report.persons_unblinded.strip(),
        "how": report.how.strip(),
        "impact": report.impact.strip(),
        "actions": report.actions.strip(),
    }
    problems = [FieldProblem(name, "is required") for name, text in texts.items() if not text]
    now = ctx.now()
    if report.occurred_at.tzinfo is None:
        problems.append(FieldProblem("occurred_at", "give the time with its time zone"))
    elif report.occurred_at > now:
        problems.append(FieldProblem("occurred_at", "is in the future"))
    if problems:
        raise ValidationFailed("the report is incomplete", errors=problems)
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        words = treatment_words(definition)
        leaking = [
            FieldProblem(name, "do not write the treatment in this report: it is read by blinded staff")
            for name, text in texts.items()
            if words & set(re.findall(r"[a-zà-ÿ0-9]+", text.lower()))
        ]
        if leaking:
            raise ValidationFailed("the report names a treatment", errors=leaking)
        subject = site = None
        if report.subject_number:
            subject = session.execute(
                select(Subject).where(
                    Subject.trial_id == trial.id, Subject.subject_number == report.subject_number.strip()
                )
            ).scalar_one_or_none()
            if subject is None or not scope.allows_site(subject.site_id):
                raise NotFound(
                    f"no subject {report.subject_number} within your reach",
                    errors=[FieldProblem("subject", "unknown")],
                )
            site = session.get(Site, subject.site_id)
        elif report.site:
            site = session.execute(
                select(Site).where(Site.trial_id == trial.id, Site.code == report.site)
            ).scalar_one_or_none()
            if site is None or not scope.allows_site(site.id):
                raise NotFound(f"no site {report.site}", errors=[FieldProblem("site", "unknown")])
        elif not scope.all_sites:
            raise ValidationFailed(
                "name the subject or the site", errors=[FieldProblem("subject", "is required")]
            )
        row = AccidentalUnblinding(
            trial_id=trial.id,
            subject_id=subject.id if subject else None,
            site_id=site.id if site else None,
            occurred_at=report.occurred_at,
            reported_at=now,
            reported_by_id=actor.user_id,
            reported_by_name=actor.name,
            reported_by_role=actor.role,
            **texts,
        )
        session.add(row)
        session.flush()
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.UNBLINDING_ACCIDENTAL,
            object_type="accidental_unblinding",
            object_id=row.id,
            site_code=site.code if site else None,
            new={"subject": subject.subject_number if subject else None, **texts},
            at=now,
        )
        _notify(
            session,
            trial,
            site,
            ("trial_manager", "monitor"),
            "accidental_unblinding",
            subject.subject_number if subject else None,
            "Accidental unblinding reported" + (f" for {subject.subject_number}" if subject else ""),
            f"{actor.name} ({actor.role}) reported an accidental unblinding that occurred on "
            f"{report.occurred_at:%Y-%m-%d %H:%M %Z}. Impact and actions are in the unblinding report.",
            now,
        )
        return row.id


# --- reading -------------------------------------------------------------------------------------


def blind_broken_subject_ids(session: Session, trial_id: int) -> set[int]:
    """Subjects whose blind is broken as blinded roles see it (UNB-05): an emergency unblinding,
    online or offline, or an accidental report naming them. Pharmacovigilance unblindings are not
    shown to trial staff (UNB-08)."""
    emergency = session.execute(
        select(Unblinding.subject_id).where(
            Unblinding.trial_id == trial_id, Unblinding.kind == UnblindingKind.EMERGENCY.value
        )
    ).scalars()
    accidental = session.execute(
        select(AccidentalUnblinding.subject_id).where(
            AccidentalUnblinding.trial_id == trial_id, AccidentalUnblinding.subject_id.is_not(None)
        )
    ).scalars()
    return {*emergency, *(s for s in accidental if s is not None)}


def unblindings(
    ctx: ServiceContext, trial_code: str, scope: Scope, *, include_pharmacovigilance: bool = False
) -> list[RecordedUnblinding]:
    """The unblinding events within `scope`, newest first, never with an arm."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        query = (
            select(Unblinding, Subject.subject_number, Site.code, CodeBreakSheet.sheet_number)
            .join(Subject, Subject.id == Unblinding.subject_id)
            .join(Site, Site.id == Unblinding.site_id)
            .outerjoin(CodeBreakSheet, CodeBreakSheet.id == Unblinding.code_break_sheet_id)
            .where(Unblinding.trial_id == trial.id)
            .order_by(Unblinding.id.desc())
        )
        if not include_pharmacovigilance:
            query = query.where(Unblinding.kind == UnblindingKind.EMERGENCY.value)
        return [
            _recorded(row, number, site, sheet)
            for row, number, site, sheet in session.execute(query).all()
            if scope.allows_site(row.site_id)
        ]
