"""Unblinding drills (UNB-11): the emergency-unblinding path exercised on a drill subject.

ICH E6(R3) §4.3.3(d) and §4.3.4(h) want the emergency unblinding periodically tested in production.
A real unblinding cannot be the test, so a site is given a **drill subject** (DRILL-<site>-<n>), a
row of `drill_subject`, never of `subject`: it takes no slot, no kit and no screening number, so no
count, report, export, archive table or analysis that reads subjects, slots, kits, dispensations or
unblindings can include it. Its value is a trial arm drawn at random when it is created and sealed
like a slot; it is nobody's treatment.

An online drill is run by the site's investigator on the ordinary emergency form (the drill subject
is offered beside the real ones, marked DRILL): the same reason, confirmation and electronic
signature (meaning "emergency unblinding drill"), the same audited read through `arm_access`, a
result page shown once, and notifications to the same people, each marked DRILL. An offline drill
is the same with paper: the drill subject's sealed code-break sheet, printed by an unblinded role,
is opened at the bedside and its opening registered on the ordinary offline form. Every drill is a
row of `unblinding_drill` and appears in the drill log (reports), never in the unblinding report.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

import kits as kitlib
from allocator import crypto
from allocator.audit import Action, Actor
from allocator.models import DrillSubject, Notification, Signature, Site, Trial, UnblindingDrill
from allocator.permissions import Scope
from allocator.services import arm_access, signatures
from allocator.services import documents as services_documents
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ObservationalStudy, ValidationFailed
from allocator.services.lookups import current_definition, get_trial
from allocator.services.supply import kit_rules
from allocator.services.unblinding import (
    EMERGENCY_AUDIENCES,
    EMERGENCY_REASONS,
    OneSubjectOnly,
    RevealedArm,
    ShownBefore,
    SignatureNotAccepted,
    arm_words,
    check_request,
    first_shown,
    opening_problems,
)

DRILL_PREFIX = "DRILL-"
SHEET_PREFIX = "DRILL-CB-"
DRILL_MEANING = "emergency unblinding drill"
OFFLINE_DRILL_MEANING = "registration of an offline unblinding drill"
SHEET_MEANING = "drill code-break sheet generation"
_SHEET_MEANING_FR = "g\u00e9n\u00e9ration d'une fiche de lev\u00e9e d'aveugle d'exercice"
SHEET_KIND = "drill_code_break_sheet"  # printed_document.kind: apart from the real sheets' documents
SHEET_DOCUMENT_PREFIX = "DRILLDOC"
# The kits library prints a kit number on every sheet; a drill sheet has no kit, so it carries the
# zero kit number (never issued: kit numbers are random with a check digit, and this one is reserved).
DRILL_KIT_NUMBER = "00000000"
DRILL_MARK = "EXERCICE / DRILL"
ONLINE = "online"
OFFLINE = "offline"
MAX_NOTE = 500


def is_drill_number(value: object) -> bool:
    """A drill subject's or drill sheet's number: they all start with DRILL- (real subject and sheet
    numbers never do)."""
    return isinstance(value, str) and value.strip().upper().startswith(DRILL_PREFIX)


@dataclass(frozen=True, slots=True)
class DrillSubjectRow:
    drill_number: str
    site: str
    note: str
    created_at: datetime
    created_by: str
    sheet_number: str


@dataclass(frozen=True, slots=True)
class DrillEvent:
    """A drill as the drill log shows it: never a value."""

    drill_id: int
    drill_number: str
    site: str
    channel: str
    reason_category: str
    reason: str
    unblinded_at: datetime
    unblinded_by: str
    unblinded_by_role: str
    sheet_number: str | None
    recorded_at: datetime
    recorded_by: str
    signature: signatures.Manifestation


def sheet_number_of(drill_number: str) -> str:
    return SHEET_PREFIX + drill_number.removeprefix(DRILL_PREFIX)


# --- drill subjects --------------------------------------------------------------------------------


def create_drill_subject(
    ctx: ServiceContext, actor: Actor, trial_code: str, site_code: str, note: str, *, scope: Scope
) -> str:
    """Create the next drill subject of `site_code` (DRILL-<site>-<n>) with a trial arm drawn at random
    and sealed (BLD-05): the creator, a blinded trial manager, never sees it. Audited, without the
    value. Raises ValidationFailed (no site, note too long) or NotFound (unknown site, or outside
    `scope`)."""
    note = note.strip()
    site_code = site_code.strip()
    problems = []
    if not site_code:
        problems.append(FieldProblem("site", "choose the site of the drill"))
    if len(note) > MAX_NOTE:
        problems.append(FieldProblem("note", f"at most {MAX_NOTE} characters"))
    if problems:
        raise ValidationFailed("the drill subject cannot be created", errors=problems)
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        if definition.observational:  # nothing to unblind, no arm to draw for the drill
            raise ObservationalStudy(
                f"{trial.code} is an observational study: it has no arms, lists or drug kits"
            )
        site = session.execute(
            select(Site).where(Site.trial_id == trial.id, Site.code == site_code).with_for_update()
        ).scalar_one_or_none()
        if site is None or not scope.allows_site(site.id):
            raise NotFound(f"no site {site_code} in {trial.code}", errors=[FieldProblem("site", "unknown")])
        existing = session.execute(
            select(func.count()).select_from(DrillSubject).where(DrillSubject.site_id == site.id)
        ).scalar_one()
        number = f"{DRILL_PREFIX}{site.code}-{existing + 1:02d}".upper()
        arm = secrets.choice([a.code for a in definition.arms])
        row = DrillSubject(
            trial_id=trial.id,
            site_id=site.id,
            drill_number=number,
            sealed_arm=crypto.seal_arm(ctx.ring, arm, arm_access.drill_binding(trial.code, number)),
            note=note,
            created_at=now,
            created_by_id=actor.user_id,
            created_by_name=actor.name,
        )
        session.add(row)
        session.flush()
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.DRILL_SUBJECT_CREATED,
            object_type="drill_subject",
            object_id=number,
            site_code=site.code,
            new={"drill_subject": number, "note": note},
            at=now,
        )
        return number


def drill_subjects(ctx: ServiceContext, trial_code: str, scope: Scope) -> list[DrillSubjectRow]:
    """The drill subjects within `scope`, by site and number."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        rows = session.execute(
            select(DrillSubject, Site.code)
            .join(Site, Site.id == DrillSubject.site_id)
            .where(DrillSubject.trial_id == trial.id)
            .order_by(Site.code, DrillSubject.id)
        ).all()
    return [
        DrillSubjectRow(
            row.drill_number,
            code,
            row.note,
            row.created_at,
            row.created_by_name,
            sheet_number_of(row.drill_number),
        )
        for row, code in rows
        if scope.allows_site(row.site_id)
    ]


def _drill_subject(session: Session, trial: Trial, number: str, scope: Scope) -> tuple[DrillSubject, Site]:
    row = session.execute(
        select(DrillSubject).where(DrillSubject.trial_id == trial.id, DrillSubject.drill_number == number)
    ).scalar_one_or_none()
    site = session.get(Site, row.site_id) if row is not None else None
    if row is None or site is None or not scope.allows_site(row.site_id):
        raise NotFound(
            f"no drill subject {number} at your sites",
            errors=[FieldProblem("subject", "unknown drill subject")],
        )
    return row, site


def check_drill_sheet(ctx: ServiceContext, trial_code: str, raw: str, scope: Scope) -> str:
    """A scanned or typed drill sheet number, checked as it arrives on the offline form: the sheet
    number when it is the sheet of a drill subject within reach. Records nothing, reads no value."""
    number = raw.strip().upper()
    if not number.startswith(SHEET_PREFIX):
        raise ValidationFailed(
            "not a drill sheet", errors=[FieldProblem("sheet_number", "not a drill sheet number")]
        )
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        try:
            _drill_subject(session, trial, DRILL_PREFIX + number.removeprefix(SHEET_PREFIX), scope)
        except NotFound:
            raise NotFound(
                f"no drill sheet {number} within your reach",
                errors=[FieldProblem("sheet_number", "unknown drill sheet")],
            ) from None
    return number


def _notify_drill(
    session: Session, trial: Trial, site: Site, row: UnblindingDrill, number: str, now: datetime
) -> None:
    """The same people as a real emergency unblinding hear of the drill, and every line says DRILL,
    so nobody mistakes it for a broken blind (UNB-11)."""
    how = (
        ONLINE
        if row.channel == ONLINE
        else f"offline (drill code-break sheet, registered by {row.recorded_by_name})"
    )
    for audience in EMERGENCY_AUDIENCES:
        session.add(
            Notification(
                trial_id=trial.id,
                site_id=site.id,
                audience=audience,
                kind="unblinding_drill",
                subject_number=number,
                title=f"DRILL: emergency unblinding drill on {number} at site {site.code}",
                body=f"{row.unblinded_by_name} ({row.unblinded_by_role}, site {site.code}) ran an emergency "
                f"unblinding drill on drill subject {number} on {row.unblinded_at:%Y-%m-%d %H:%M} UTC, {how}. "
                "This is a drill: no patient's blind is broken and it is counted nowhere but in the drill log.",
                created_at=now,
            )
        )


@dataclass(frozen=True, slots=True)
class _Opening:
    """How a drill subject's value was learnt: online now, or from its drill sheet at a time."""

    channel: str
    reason_category: str
    reason: str
    at: datetime
    by: str
    role: str
    sheet_number: str | None


def _record(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: Trial,
    site: Site,
    drill_subject: DrillSubject,
    opening: _Opening,
    signed: Signature,
    details: Mapping[str, object],
) -> UnblindingDrill:
    """The drill's row, its audit entry and its DRILL notifications, in the caller's unit of work."""
    now = ctx.now()
    row = UnblindingDrill(
        trial_id=trial.id,
        drill_subject_id=drill_subject.id,
        site_id=site.id,
        channel=opening.channel,
        reason_category=opening.reason_category,
        reason=opening.reason,
        unblinded_at=opening.at,
        unblinded_by_name=opening.by,
        unblinded_by_role=opening.role,
        sheet_number=opening.sheet_number,
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
        action=Action.DRILL_UNBLINDING if opening.channel == ONLINE else Action.DRILL_OFFLINE_REGISTERED,
        object_type="drill_subject",
        object_id=drill_subject.drill_number,
        site_code=site.code,
        new={"drill": row.id, "channel": opening.channel, **details, "signature": signed.id},
        reason=opening.reason,
        at=now,
    )
    _notify_drill(session, trial, site, row, drill_subject.drill_number, now)
    return row


# --- the online drill ------------------------------------------------------------------------------


def drill_unblind(
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
    """Run an online emergency-unblinding drill on one drill subject of the actor's site: the checks,
    signature and audited read of the real path, an `unblinding_drill` row, DRILL notifications.
    Returns the drill value with `drill=True`. Raises as `unblinding.emergency_unblind` does."""
    number = check_request(subject_number, reason_category, reason, EMERGENCY_REASONS, confirmed=confirmed)
    number = number.upper()
    if not is_drill_number(number):
        raise OneSubjectOnly("not a drill subject", errors=[FieldProblem("subject", "not a drill subject")])
    reason = reason.strip()
    now = ctx.now()
    try:
        with ctx.db.unit_of_work() as session:
            trial = get_trial(session, trial_code)
            definition = current_definition(session, trial)
            drill_subject, site = _drill_subject(session, trial, number, scope)
            signed = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=signature,
                meaning=DRILL_MEANING,
                object_type="drill_subject",
                object_id=number,
                content={"drill_subject": number, "reason_category": reason_category, "reason": reason},
                now=now,
            )
            arm = arm_access.drill_arm_in(
                session, ctx, actor, trial.code, number, drill_subject.sealed_arm, DRILL_MEANING
            )
            row = _record(
                ctx,
                session,
                actor,
                trial,
                site,
                drill_subject,
                _Opening(ONLINE, reason_category, reason, now, actor.name, actor.role, None),
                signed,
                {"reason_category": reason_category},
            )
            label, product = arm_words(definition, arm)
            return RevealedArm(
                unblinding_id=row.id,
                subject_number=number,
                site=site.code,
                arm_code=arm,
                arm_label=label,
                product=product,
                unblinded_at=now,
                signature=signatures.manifestation(signed),
                alert_raised=False,
                drill=True,
            )
    except signatures.SignatureRefused as exc:
        signatures.record_failure(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=DRILL_MEANING,
            object_type="drill_subject",
            object_id=number,
        )
        raise SignatureNotAccepted(exc.detail, errors=list(exc.errors)) from None


def show_drill_result(
    ctx: ServiceContext, actor: Actor, trial_code: str, drill_id: int
) -> RevealedArm | ShownBefore:
    """The result page of an online drill (Post/Redirect/Get), as for a real unblinding: the value
    once to the person who ran the drill, then when and to whom it was shown. Anyone else: 404."""
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        row = session.execute(
            select(UnblindingDrill).where(UnblindingDrill.id == drill_id).with_for_update()
        ).scalar_one_or_none()
        if (
            row is None
            or row.trial_id != trial.id
            or row.channel != ONLINE
            or actor.user_id is None
            or row.recorded_by_id != actor.user_id
        ):
            raise NotFound(f"no drill {drill_id} of yours in {trial.code}")
        drill_subject = session.get(DrillSubject, row.drill_subject_id)
        site = session.get(Site, row.site_id)
        signed = session.get(Signature, row.signature_id)
        if drill_subject is None or site is None or signed is None:  # pragma: no cover - foreign keys
            raise NotFound("no drill subject")
        number = drill_subject.drill_number
        shown = first_shown(session, trial.code, Action.DRILL_RESULT_SHOWN, "unblinding_drill", row.id)
        if shown is not None:
            return ShownBefore(
                unblinding_id=row.id,
                subject_number=number,
                site=site.code,
                kind="emergency",
                shown_at=datetime.fromisoformat(shown.at.replace("Z", "+00:00")),
                shown_to=shown.actor_name,
                drill=True,
            )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.DRILL_RESULT_SHOWN,
            object_type="unblinding_drill",
            object_id=row.id,
            site_code=site.code,
            new={"drill_subject": number},
            at=ctx.now(),
        )
        arm = arm_access.drill_arm_in(
            session, ctx, actor, trial.code, number, drill_subject.sealed_arm, DRILL_MEANING
        )
        label, product = arm_words(current_definition(session, trial), arm)
        return RevealedArm(
            unblinding_id=row.id,
            subject_number=number,
            site=site.code,
            arm_code=arm,
            arm_label=label,
            product=product,
            unblinded_at=row.unblinded_at,
            signature=signatures.manifestation(signed),
            alert_raised=False,
            drill=True,
        )


# --- the offline drill -----------------------------------------------------------------------------


def generate_drill_sheet(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    drill_number: str,
    *,
    signature: signatures.SignatureRequest | None,
    scope: Scope,
) -> tuple[str, bytes]:
    """Print the sealed code-break sheet of a drill subject (DRILL-CB-<site>-<n>), marked DRILL on
    the page and in the title, for an unblinded role (code_break:generate), signed and audited; the
    value is read through `arm_access`. Reprints are new signed documents. Returns (document id,
    PDF). Raises ValidationFailed, SignatureRefused, NotFound."""
    number = drill_number.strip().upper()
    if not is_drill_number(number):
        raise ValidationFailed(
            "choose a drill subject", errors=[FieldProblem("subject", "not a drill subject")]
        )
    if signature is None or not signature.password:
        raise ValidationFailed(
            "sign with your password", errors=[FieldProblem("password", "is required to sign the sheet")]
        )
    sheet_number = sheet_number_of(number)
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=SHEET_MEANING,
            object_type="drill_subject",
            object_id=number,
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        drill_subject, site = _drill_subject(session, trial, number, scope)
        document_id = services_documents.next_document_id(session, trial, SHEET_DOCUMENT_PREFIX)
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=SHEET_MEANING,
            object_type="printed_document",
            object_id=document_id,
            content={"document": document_id, "drill_subject": number, "sheet": sheet_number},
            now=now,
        )
        arm = arm_access.drill_arm_in(
            session, ctx, actor, trial.code, number, drill_subject.sealed_arm, SHEET_MEANING
        )
        label, _product = arm_words(definition, arm)
        at = signed.signed_at if signed.signed_at.tzinfo is not None else signed.signed_at.replace(tzinfo=UTC)
        info = kit_rules.label_info(definition, ctx.settings.env)
        try:
            pdf = kitlib.render_code_break_sheets(
                info,
                kitlib.CodeBreakDocument(
                    sheets=(
                        kitlib.SealedSheet(
                            sheet_number=sheet_number,
                            kit_number=DRILL_KIT_NUMBER,
                            sealed_text=f"{DRILL_MARK}: {label}",
                        ),
                    ),
                    signature=kitlib.ElectronicSignature(
                        printed_name=signed.printed_name,
                        signed_at=at,
                        meaning=kitlib.Bilingual(_SHEET_MEANING_FR, SHEET_MEANING),
                    ),
                    document=kitlib.DocumentMeta(document_id=document_id, created_at=now),
                    drill=True,
                ),
            )
        except kitlib.KitsError as exc:
            raise Conflict(f"the drill sheet cannot be printed: {exc}") from None
        services_documents.record_print(
            ctx,
            session,
            actor,
            trial,
            kind=SHEET_KIND,
            document_id=document_id,
            pdf=pdf,
            items=[sheet_number],
            now=now,
            content_sha256=crypto.label_mac(ctx.ring, b"drill-sheet|" + pdf).hex(),
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.DRILL_SHEET_GENERATED,
            object_type="printed_document",
            object_id=document_id,
            site_code=site.code,
            new={"drill_subject": number, "sheet": sheet_number, "signature": signed.id},
            at=now,
        )
        return document_id, pdf


def register_offline_drill(
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
) -> DrillEvent:
    """Register the opening of a drill code-break sheet, on the ordinary offline form: an
    `unblinding_drill` row with channel "offline", DRILL notifications; nothing else. Raises
    ValidationFailed naming each field, NotFound (unknown drill sheet or out of scope), Conflict
    (already registered), SignatureNotAccepted."""
    sheet_number = sheet_number.strip().upper()
    now = ctx.now()
    problems = (
        []
        if sheet_number.startswith(SHEET_PREFIX)
        else [FieldProblem("sheet_number", "not a drill sheet number")]
    )
    problems += opening_problems(opened_at, opened_by, opened_by_role, reason_category, reason, now)
    if problems:
        raise ValidationFailed("the offline drill cannot be registered", errors=problems)
    number = DRILL_PREFIX + sheet_number.removeprefix(SHEET_PREFIX)
    reason = reason.strip()
    try:
        with ctx.db.unit_of_work() as session:
            trial = get_trial(session, trial_code)
            try:
                drill_subject, site = _drill_subject(session, trial, number, scope)
            except NotFound:
                raise NotFound(
                    f"no drill sheet {sheet_number} at your sites",
                    errors=[FieldProblem("sheet_number", "unknown drill sheet")],
                ) from None
            if opened_at < drill_subject.created_at:
                raise ValidationFailed(
                    "opened before the drill subject existed",
                    errors=[FieldProblem("opened_at", "is before the drill subject was created")],
                )
            already = session.execute(
                select(UnblindingDrill.id).where(
                    UnblindingDrill.trial_id == trial.id,
                    UnblindingDrill.sheet_number == sheet_number,
                    UnblindingDrill.unblinded_at == opened_at,
                )
            ).first()
            if already is not None:
                raise Conflict(f"this opening of drill sheet {sheet_number} is already registered")
            signed = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=signature,
                meaning=OFFLINE_DRILL_MEANING,
                object_type="drill_subject",
                object_id=number,
                content={
                    "drill_subject": number,
                    "sheet": sheet_number,
                    "opened_at": opened_at.isoformat(),
                    "opened_by": opened_by.strip(),
                    "reason_category": reason_category,
                    "reason": reason,
                },
                now=now,
            )
            opening = _Opening(
                OFFLINE,
                reason_category,
                reason,
                opened_at,
                opened_by.strip(),
                opened_by_role.strip(),
                sheet_number,
            )
            extra = {
                "sheet": sheet_number,
                "opened_at": opened_at.isoformat(),
                "opened_by": opened_by.strip(),
            }
            row = _record(ctx, session, actor, trial, site, drill_subject, opening, signed, extra)
            return _event(row, number, site.code, signatures.manifestation(signed))
    except signatures.SignatureRefused as exc:
        signatures.record_failure(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=OFFLINE_DRILL_MEANING,
            object_type="drill_subject",
            object_id=number,
        )
        raise SignatureNotAccepted(exc.detail, errors=list(exc.errors)) from None


# --- the drill log ---------------------------------------------------------------------------------


def _event(row: UnblindingDrill, number: str, site: str, signature: signatures.Manifestation) -> DrillEvent:
    return DrillEvent(
        drill_id=row.id,
        drill_number=number,
        site=site,
        channel=row.channel,
        reason_category=row.reason_category,
        reason=row.reason,
        unblinded_at=row.unblinded_at,
        unblinded_by=row.unblinded_by_name,
        unblinded_by_role=row.unblinded_by_role,
        sheet_number=row.sheet_number,
        recorded_at=row.recorded_at,
        recorded_by=row.recorded_by_name,
        signature=signature,
    )


def drills(ctx: ServiceContext, trial_code: str, scope: Scope) -> list[DrillEvent]:
    """Every drill within `scope`, oldest first, with its signature; never a value."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        rows = session.execute(
            select(UnblindingDrill, DrillSubject.drill_number, Site.code, Signature)
            .join(DrillSubject, DrillSubject.id == UnblindingDrill.drill_subject_id)
            .join(Site, Site.id == UnblindingDrill.site_id)
            .join(Signature, Signature.id == UnblindingDrill.signature_id)
            .where(UnblindingDrill.trial_id == trial.id)
            .order_by(UnblindingDrill.unblinded_at, UnblindingDrill.id)
        ).all()
    return [
        _event(row, number, code, signatures.manifestation(signed))
        for row, number, code, signed in rows
        if scope.allows_site(row.site_id)
    ]
