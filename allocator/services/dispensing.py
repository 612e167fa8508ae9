"""Pharmacy: the dispensation queue, dispensing by scanning (signed), the QR-labelled dispensation
sheet, kit replacement, and the unblinded preparation instruction.

LBL-09: the kit handed out is verified by scanning its label (MAC checked) or typing its number
(check digit checked); a kit that is not the one allocated to this subject and day — another
subject's, or already dispensed — is refused and the attempt is audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

import kits as kitlib
from allocator.audit import Action, Actor
from allocator.models import (
    Batch,
    Dispensation,
    ExcursionKit,
    Kit,
    KitStatus,
    PrintedDocument,
    Signature,
    Site,
    Subject,
    SubjectWithdrawal,
    TemperatureExcursion,
)
from allocator.permissions import Scope
from allocator.services import arm_access, documents, lookups, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, DomainError, FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import current_definition, current_dispensations, get_trial, subject_in_reach
from allocator.services.subjects.randomize import KitsUnavailable
from allocator.services.subjects.withdrawal import withdrawn_refusal
from allocator.services.supply import kit_rules, resupply
from allocator.services.supply import stock as supply_stock
from allocator.trialdef import TrialDefinition

DISPENSING_MEANING = "dispensing"


class WrongKit(Conflict):
    slug = "wrong-kit"
    title = "This is not the kit allocated to this subject and day"


class AlreadyDispensed(Conflict):
    slug = "already-dispensed"
    title = "The kit was already dispensed"


def _day_numbers(definition: TrialDefinition) -> dict[str, int]:
    return {d.label: d.day for d in definition.dispensing.schedule}


def planned_date(definition: TrialDefinition, randomized_at: datetime, day: int) -> date:
    offset = next(d.offset_hours for d in definition.dispensing.schedule if d.day == day)
    return definition.local_date(randomized_at + timedelta(hours=offset))


def kit_from_scan(ctx: ServiceContext, trial_code: str, text: str) -> tuple[str, str | None]:
    """(kit number, unit) from a scanned label (MAC verified) or a typed number (check digit)."""
    raw = text.strip()
    if "/" in raw:
        payload = kitlib.verify_payload(raw, trial_code, kit_rules.mac(ctx))
        return payload.kit_number, payload.unit
    return kitlib.normalize_kit_number(raw), None


# --- queue ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueItem:
    subject_number: str
    randomization_number: str
    site: str
    randomized_at: datetime
    pending: tuple[tuple[str, str], ...]  # (day label, kit number) still to dispense


QUEUE_PAGE = 100  # subjects per page of the pharmacy queue (issue 21)
MAX_QUEUE_PAGE = 500


@dataclass(frozen=True, slots=True)
class QueuePage:
    items: list[QueueItem]
    next_before: str | None  # the subject number to pass as `before` for the next (older) page


def queue(
    ctx: ServiceContext,
    trial_code: str,
    scope: Scope,
    *,
    before: str | None = None,
    limit: int = QUEUE_PAGE,
    site: str | None = None,
) -> QueuePage:
    """One page of the subjects within `scope` (at `site`, when given) with kits still to dispense,
    newest randomization first, randomized before the subject numbered `before` (issue 21: a few
    statements and `limit` subjects, however many wait; a subject who stopped treatment without a
    recorded withdrawal keeps waiting, so the queue grows with the trial). The cursor is looked for
    within the reader's sites only. Raises ValidationFailed naming `before`, `site` or `limit`."""
    lookups.page_size(limit, MAX_QUEUE_PAGE)
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        labels = {d.day: d.label for d in definition.dispensing.schedule}
        sites = {
            row.id: row.code
            for row in session.execute(select(Site.id, Site.code).where(Site.trial_id == trial.id))
        }
        within = [Subject.trial_id == trial.id]
        if not scope.all_sites:
            within.append(Subject.site_id.in_(sorted(scope.site_ids)))
        narrowed = list(within)
        if site:
            narrowed.append(Subject.site_id == lookups.site_filter(sites, site, scope, trial.code))
        if before:  # looked for within the reader's sites, whatever the filter (as lookups.newest_first)
            start = session.execute(
                select(Subject.id).where(*within, Subject.subject_number == before)
            ).scalar_one_or_none()
            if start is None:
                raise ValidationFailed(
                    "unknown cursor",
                    errors=[FieldProblem("before", f"no subject {before!r} within your reach")],
                )
            narrowed.append(Subject.id < start)
        # The live dispensation of each day is its latest replacement; only those still "allocated"
        # wait for the pharmacy. REP-04: nothing more is dispensed to a withdrawn subject.
        later = aliased(Dispensation)
        newer_exists = (
            select(later.id)
            .where(
                later.subject_id == Dispensation.subject_id,
                later.day == Dispensation.day,
                later.replacement_number > Dispensation.replacement_number,
            )
            .exists()
        )
        waiting = (
            select(Dispensation.id)
            .where(Dispensation.subject_id == Subject.id, Dispensation.status == "allocated", ~newer_exists)
            .exists()
        )
        withdrawn = select(SubjectWithdrawal.id).where(SubjectWithdrawal.subject_id == Subject.id).exists()
        page = (
            select(Subject.id)
            .where(*narrowed, waiting, ~withdrawn)
            .order_by(Subject.id.desc())
            .limit(limit + 1)
            .subquery()
        )
        pending: dict[int, tuple[Any, list[tuple[str, str]]]] = {}
        for row in session.execute(
            select(
                Subject.id,
                Subject.subject_number,
                Subject.randomization_number,
                Subject.site_id,
                Subject.randomized_at,
                Dispensation.day,
                Kit.kit_number,
            )
            .join(page, page.c.id == Subject.id)
            .join(Dispensation, Dispensation.subject_id == Subject.id)
            .join(Kit, Kit.id == Dispensation.kit_id)
            .where(Dispensation.status == "allocated", ~newer_exists)
            .order_by(Subject.id.desc(), Dispensation.day)
        ):
            pending.setdefault(row.id, (row, []))[1].append(
                (labels.get(row.day, f"D{row.day}"), row.kit_number)
            )
        items = [
            QueueItem(
                subject.subject_number,
                subject.randomization_number,
                sites[subject.site_id],
                subject.randomized_at,
                tuple(days),
            )
            for subject, days in pending.values()
        ]
        more = len(items) > limit
        items = items[:limit]
        return QueuePage(items, items[-1].subject_number if more and items else None)


# --- dispensing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dispensed:
    subject_number: str
    days: tuple[str, ...]
    signature: signatures.Manifestation


def _read_scans(
    ctx: ServiceContext, trial_code: str, scans: Mapping[str, str]
) -> tuple[dict[str, str], list[FieldProblem]]:
    """The kit number of each readable scan, and a problem, in plain words, for each other one."""
    parsed: dict[str, str] = {}
    problems = []
    for day, text in scans.items():
        try:
            parsed[day], _ = kit_from_scan(ctx, trial_code, text)
        except kitlib.KitsError as exc:
            problems.append(FieldProblem(f"scans.{day}", kit_rules.unreadable(exc)))
    return parsed, problems


def dispense(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    number: str,
    scans: Mapping[str, str],
    *,
    scope: Scope,
    signature: signatures.SignatureRequest,
) -> Dispensed:
    """Dispense the scanned kits of a subject (any subset of its days), signed (ACC-12).

    Every scan must be the kit allocated to that day (LBL-09); a wrong, unreadable or already
    dispensed kit refuses the whole dispensing, each refused kit is audited, and the error names
    every wrong scan on its own field (issue 13: the right ones are kept by the form). Expired kits
    are never dispensed (LBL-05): they are replaced first. The signature is checked only when every
    scan is right, so a wrong kit is never a failed signature."""
    scans = {day: text for day, text in scans.items() if text and text.strip()}
    if not scans:
        raise ValidationFailed("scan at least one kit", errors=[FieldProblem("scans", "no kit scanned")])
    parsed, unreadable = _read_scans(ctx, trial_code, scans)
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=DISPENSING_MEANING,
            object_type="subject",
            object_id=number,
        ),
        ctx.db.unit_of_work() as session,
    ):
        outcome = _dispense_in(
            ctx, session, actor, trial_code, number, parsed, unreadable, scope, signature, now
        )
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


def check_scan(
    ctx: ServiceContext, actor: Actor, trial_code: str, number: str, day: str, text: str, *, scope: Scope
) -> str:
    """One scan of the dispensing form, checked as soon as it is scanned (issue 13): the canonical
    kit number when it is the kit allocated to `number` for `day`, still to dispense and not
    expired. Records nothing but the refusal: a wrong kit is audited as when dispensing (LBL-09).
    Raises ValidationFailed (unreadable, unknown day) or the refusal (WrongKit, AlreadyDispensed,
    Conflict for an expired kit, SubjectWithdrawn), each naming the field `scans.<day>` in words
    that never depend on the arm."""
    if not text.strip():
        raise ValidationFailed("scan the kit", errors=[FieldProblem(f"scans.{day}", "is required")])
    parsed, unreadable = _read_scans(ctx, trial_code, {day: text})
    if unreadable:
        raise ValidationFailed("some scans are not valid", errors=unreadable)
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        subject = subject_in_reach(session, trial, number, scope)
        days = _day_numbers(definition)
        if day not in days:
            raise ValidationFailed(
                "unknown day", errors=[FieldProblem(f"scans.{day}", "is not a dispensing day")]
            )
        site = session.get(Site, subject.site_id)
        site_code = site.code if site else None
        withdrawn = withdrawn_refusal(session, subject, f"scans.{day}")
        refusal: DomainError | None = withdrawn
        if refusal is None:
            live = current_dispensations(session, subject.id)
            row = live[days[day]]
            kit = session.get(Kit, row.kit_id)
            if kit is None:  # pragma: no cover - a foreign key guarantees it
                raise NotFound("no kit")
            refusal = _kit_refusal(session, definition, subject, day, parsed[day], row, kit, live)
        if refusal is not None:
            _audit_refusal(ctx, session, actor, trial.code, number, site_code, day, parsed[day], refusal, now)
            outcome: str | DomainError = refusal
        else:
            outcome = parsed[day]
    if isinstance(outcome, DomainError):  # the unit of work committed the refusal's audit entry
        raise outcome
    return outcome


def _kit_refusal(
    session: Session,
    definition: TrialDefinition,
    subject: Subject,
    label: str,
    kit_number: str,
    row: Dispensation,
    kit: Kit,
    live: Mapping[int, Dispensation],
) -> DomainError | None:
    """Why `kit_number`, scanned for the `label` day of `subject`, may not be dispensed, or None.
    The words name the patient and the day, never anything from which the arm could be inferred:
    another kit is "not this patient's kit", whoever it belongs to (BLD-01)."""
    number = subject.subject_number
    field = f"scans.{label}"
    if kit.kit_number != kit_number:
        labels = {d.day: d.label for d in definition.dispensing.schedule}
        mine = {
            labels.get(day, "?")
            for day, other in live.items()
            if other.kit_id is not None
            and session.execute(select(Kit.kit_number).where(Kit.id == other.kit_id)).scalar_one()
            == kit_number
        }
        if mine:
            other_day = sorted(mine)[0]
            return WrongKit(
                f"kit {kitlib.format_kit_number(kit_number)} is the {other_day} kit of {number}, not {label}",
                errors=[FieldProblem(field, f"this patient's kit for {other_day}, not {label}")],
            )
        return WrongKit(
            f"kit {kitlib.format_kit_number(kit_number)} is not the kit allocated to {number} for {label}",
            errors=[FieldProblem(field, "not this patient's kit")],
        )
    if row.status != "allocated":
        return AlreadyDispensed(
            f"the {label} kit of {number} was already dispensed",
            errors=[FieldProblem(field, "already dispensed")],
        )
    if kit.expiry_date is None or kit.expiry_date < planned_date(definition, subject.randomized_at, row.day):
        return Conflict(
            f"the {label} kit of {number} expires before its day: replace it",
            errors=[FieldProblem(field, "expired: replace the kit")],
        )
    if kit.relabel_requested_at is not None:  # issue 19: its label shows the old expiry
        return Conflict(
            f"the {label} kit of {number} awaits its new expiry label: relabel it and confirm by scan first",
            errors=[FieldProblem(field, "awaits its new expiry label: relabel it first")],
        )
    held = session.execute(
        select(TemperatureExcursion.number)
        .join(ExcursionKit, ExcursionKit.excursion_id == TemperatureExcursion.id)
        .where(ExcursionKit.kit_id == kit.id, TemperatureExcursion.status != "released")
        .order_by(TemperatureExcursion.id)
        .limit(1)
    ).scalar_one_or_none()
    if held is not None:  # issue 19, LBL-05: it was in the refrigerator of a reported excursion
        return Conflict(
            f"the {label} kit of {number} is held by temperature excursion {held}: "
            "wait for the sponsor's decision or replace the kit",
            errors=[
                FieldProblem(field, "held by a temperature excursion: wait for the decision or replace it")
            ],
        )
    return None


def _audit_refusal(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    chain: str,
    number: str,
    site_code: str | None,
    label: str,
    kit_number: str,
    refusal: DomainError,
    now: datetime,
) -> None:
    ctx.audit.record(
        session,
        actor=actor,
        chain=chain,
        action=Action.DISPENSING_REFUSED,
        object_type="subject",
        object_id=number,
        site_code=site_code,
        new={"day": label, "scanned": kit_number, "cause": refusal.slug},
        at=now,
    )


def _dispense_in(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial_code: str,
    number: str,
    parsed: Mapping[str, str],
    unreadable: list[FieldProblem],
    scope: Scope,
    signature: signatures.SignatureRequest,
    now: datetime,
) -> Dispensed | DomainError:
    trial = get_trial(session, trial_code)
    lookups.require_open(trial, session)  # no new data once the database is locked
    definition = current_definition(session, trial)
    # The subject's row lock, which a withdrawal also takes: a withdrawal committed while this
    # dispensing waits is seen by the check below, and none can commit between the check and the
    # dispensing (REP-04; PostgreSQL; SQLite's write transaction already excludes other writers).
    subject = subject_in_reach(session, trial, number, scope, lock=True)
    site = session.get(Site, subject.site_id)
    days = _day_numbers(definition)
    unknown = [d for d in parsed if d not in days]
    if unknown:
        raise ValidationFailed(
            "unknown day", errors=[FieldProblem(f"scans.{d}", "is not a dispensing day") for d in unknown]
        )
    withdrawn = withdrawn_refusal(session, subject, "scans")
    if withdrawn is not None:  # REP-04: no further dose once withdrawn; audited like any refusal
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.DISPENSING_REFUSED,
            object_type="subject",
            object_id=number,
            site_code=site.code if site else None,
            new={"day": ", ".join(parsed), "scanned": ", ".join(parsed.values()), "cause": withdrawn.slug},
            at=now,
        )
        return withdrawn
    live = current_dispensations(session, subject.id)
    chosen: list[tuple[str, Dispensation, Kit]] = []
    refusals: list[DomainError] = []
    for label, kit_number in parsed.items():
        row = live[days[label]]
        kit = session.execute(select(Kit).where(Kit.id == row.kit_id).with_for_update()).scalar_one()
        refusal = _kit_refusal(session, definition, subject, label, kit_number, row, kit, live)
        if refusal is not None:
            _audit_refusal(
                ctx,
                session,
                actor,
                trial.code,
                number,
                site.code if site else None,
                label,
                kit_number,
                refusal,
                now,
            )
            refusals.append(refusal)
        else:
            chosen.append((label, row, kit))
    if refusals or unreadable:
        # Issue 13: every wrong scan named on its own field, not the first one only.
        problems = [*unreadable, *(p for r in refusals for p in r.errors)]
        first = refusals[0] if refusals else ValidationFailed("some scans are not valid")
        return type(first)(first.detail if len(problems) == 1 else "some scans are refused", errors=problems)
    content = {"subject": number, "kits": {label: kit.kit_number for label, _, kit in chosen}}
    signed = signatures.sign(
        ctx,
        session,
        actor=actor,
        chain=trial.code,
        trial_id=trial.id,
        request=signature,
        meaning=DISPENSING_MEANING,
        object_type="subject",
        object_id=number,
        content=content,
        now=now,
    )
    for label, row, kit in chosen:
        row.status = "dispensed"
        row.dispensed_at = now
        row.dispensed_by_id = actor.user_id
        row.dispensed_by_name = actor.name
        row.dispensing_signature_id = signed.id
        kit_rules.move_kit(
            session, kit, KitStatus.DISPENSED, actor, f"dispensed to {number} for {label}", now
        )
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.KITS_DISPENSED,
        object_type="subject",
        object_id=number,
        site_code=site.code if site else None,
        new={**content, "signature": signed.id},
        at=now,
    )
    if site is not None:
        resupply.after_stock_change(ctx, session, actor, trial, definition, site, now)
    return Dispensed(number, tuple(label for label, _, _ in chosen), signatures.manifestation(signed))


# --- dispensation sheet (LBL-06, LBL-07, LBL-12) ----------------------------------------------

SHEET_MEANING = kitlib.Bilingual(fr="Dispensation", en="Dispensing")


def dispensation_sheet(
    ctx: ServiceContext, actor: Actor, trial_code: str, number: str, scope: Scope
) -> tuple[str, bytes]:
    """Print the QR-labelled sheet of a subject: one row and one syringe label per day, the
    dispensing signature, the 24/7 emergency contact. Available once a kit was dispensed; a reprint
    is marked DUPLICATA and counted. Identical for both arms: nothing in it depends on the arm
    (BLD-02). Printing is an action (a POST): it records a printed document, its bytes and an audit
    entry; `printed_dispensation_sheet` serves a printed one again without creating anything."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        subject = subject_in_reach(session, trial, number, scope)
        site = session.get(Site, subject.site_id)
        if site is None:  # pragma: no cover - a foreign key guarantees it
            raise NotFound("no site")
        live = current_dispensations(session, subject.id)
        signed_rows = [row for row in live.values() if row.dispensing_signature_id is not None]
        if not signed_rows:
            raise Conflict(f"no kit of {number} was dispensed yet: dispense first, then print the sheet")
        last = max(signed_rows, key=lambda r: r.dispensed_at or now)
        signature = session.get(Signature, last.dispensing_signature_id)
        if signature is None:  # pragma: no cover
            raise NotFound("no signature")
        labels = {d.day: d.label for d in definition.dispensing.schedule}
        rows = []
        for day, row in sorted(live.items()):
            kit = session.get(Kit, row.kit_id)
            batch = session.get(Batch, kit.batch_id) if kit and kit.batch_id else None
            if kit is None or batch is None or kit.expiry_date is None:  # pragma: no cover
                raise NotFound("kit data missing")
            rows.append(
                kitlib.DispensationRow(
                    unit=labels[day],
                    kit_number=kit.kit_number,
                    qr_payload=kitlib.build_payload(
                        trial.code, kit.kit_number, labels[day], kit_rules.mac(ctx)
                    ),
                    batch=batch.lot_code,
                    expiry=kitlib.Expiry(kit.expiry_date.year, kit.expiry_date.month),
                    planned_date=planned_date(definition, subject.randomized_at, day),
                )
            )
        previous = documents.checked_reprint_number(
            session.execute(
                select(func.count())
                .select_from(PrintedDocument)
                .where(
                    PrintedDocument.subject_id == subject.id,
                    PrintedDocument.kind == documents.DISPENSATION_SHEET,
                )
            ).scalar_one()
        )
        original = session.execute(
            select(PrintedDocument.document_id)
            .where(
                PrintedDocument.subject_id == subject.id, PrintedDocument.kind == documents.DISPENSATION_SHEET
            )
            .order_by(PrintedDocument.id)
            .limit(1)
        ).scalar_one_or_none()
        document_id = documents.next_document_id(session, trial, "DISP")
        sheet = kitlib.DispensationSheet(
            site_code=site.code,
            site_name=site.name,
            investigator_name=site.principal_investigator,
            subject_number=subject.subject_number,
            randomization_number=subject.randomization_number,
            rows=tuple(rows),
            dispensed_at=last.dispensed_at or now,
            local_zone=definition.timezone,
            signature=kitlib.ElectronicSignature(
                printed_name=signature.printed_name, signed_at=signature.signed_at, meaning=SHEET_MEANING
            ),
            document=kitlib.DocumentMeta(document_id=document_id, created_at=now, reprint_number=previous),
        )
        pdf = kitlib.render_dispensation_sheet(kit_rules.label_info(definition, ctx.settings.env), sheet)
        documents.record_print(
            ctx,
            session,
            actor,
            trial,
            kind=documents.DISPENSATION_SHEET,
            document_id=document_id,
            pdf=pdf,
            items=[r.kit_number for r in rows],
            now=now,
            subject_id=subject.id,
            reprint_number=previous,
            reprint_of=original,
            audit={"kind": documents.DISPENSATION_SHEET, "subject": number, "reprint": previous},
            site_code=site.code,
            keep_content=True,
        )
        return document_id, pdf


def printed_dispensation_sheet(
    ctx: ServiceContext, trial_code: str, number: str, document_id: str, scope: Scope
) -> bytes:
    """The bytes of a dispensation sheet printed earlier for this subject, exactly as printed (a
    read: nothing is recorded). NotFound for another subject's document, another trial's, a
    subject out of scope, or a document printed before its bytes were kept."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        subject = subject_in_reach(session, trial, number, scope)
        content = documents.kept_content(
            session, trial, subject.id, documents.DISPENSATION_SHEET, document_id
        )
        if content is None:
            raise NotFound(f"no printed dispensation sheet {document_id} for {number}")
        return content


# --- replacement (BLD-04) ---------------------------------------------------------------------


def _record_refusal(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    chain: str,
    number: str,
    site_code: str | None,
    operation: str,
    day_label: str,
    refusal: DomainError,
) -> None:
    """Audit a refused replacement or preparation (REP-04) in the caller's unit of work, which the
    caller lets commit before raising the refusal."""
    ctx.audit.record(
        session,
        actor=actor,
        chain=chain,
        action=Action.DISPENSING_REFUSED,
        object_type="subject",
        object_id=number,
        site_code=site_code,
        new={"operation": operation, "day": day_label, "cause": refusal.slug},
        at=ctx.now(),
    )


def replace_kit(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    number: str,
    day_label: str,
    *,
    cause: str,
    reason: str,
    scope: Scope,
) -> tuple[str, str]:
    """Replace a lost, damaged or expired kit of a subject by a kit of the same arm, chosen the same
    way (at random among the site's usable kits of that arm). The old kit keeps its history; the
    answer never names the arm. Refused for a withdrawn subject (SubjectWithdrawn), before the arm
    is read; the refusal is audited (`dispensation.refused`) and committed before it is raised.
    Returns (day, new kit number)."""
    if cause not in (KitStatus.LOST.value, KitStatus.DAMAGED.value, KitStatus.EXPIRED.value):
        raise ValidationFailed("invalid cause", errors=[FieldProblem("cause", "lost, damaged or expired")])
    reason = reason.strip()
    if not reason:
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        outcome = _replace_in(ctx, session, actor, trial_code, number, day_label, cause, reason, scope, now)
    if isinstance(outcome, DomainError):  # the unit of work committed the refusal's audit entry
        raise outcome
    return outcome


def _replace_in(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial_code: str,
    number: str,
    day_label: str,
    cause: str,
    reason: str,
    scope: Scope,
    now: datetime,
) -> tuple[str, str] | DomainError:
    trial = get_trial(session, trial_code)
    lookups.require_open(trial, session)  # no new data once the database is locked
    definition = current_definition(session, trial)
    subject = subject_in_reach(session, trial, number, scope, lock=True)  # as a withdrawal (REP-04)
    site_row = session.execute(select(Site).where(Site.id == subject.site_id).with_for_update()).scalar_one()
    days = _day_numbers(definition)
    if day_label not in days:
        raise ValidationFailed("unknown day", errors=[FieldProblem("day", "is not a dispensing day")])
    withdrawn = withdrawn_refusal(session, subject, "day")
    if withdrawn is not None:  # REP-04: no new kit for a withdrawn subject; audited like any refusal
        _record_refusal(
            ctx, session, actor, trial.code, number, site_row.code, "replacement", day_label, withdrawn
        )
        return withdrawn
    row = current_dispensations(session, subject.id)[days[day_label]]
    if row.status == "administered":
        raise Conflict(f"the {day_label} kit of {number} was already administered")
    old = session.execute(select(Kit).where(Kit.id == row.kit_id).with_for_update()).scalar_one()
    arm = arm_access.subject_arm_in(session, ctx, actor, trial.code, subject, "kit replacement")
    today = definition.local_date(now)
    stock = supply_stock.usable_kits_by_arm(ctx, session, actor, trial, definition, site_row.id, today)
    if not stock[arm]:
        raise KitsUnavailable(f"site {site_row.code} holds no suitable replacement kit: ask for a shipment")
    new = supply_stock.pick(stock[arm], 1)[0]
    row.status = "replaced"
    row.replaced_at = now
    row.replacement_reason = f"{cause}: {reason}"
    kit_rules.move_kit(
        session, old, KitStatus(cause), actor, f"{cause} ({number} {day_label}): {reason}", now
    )
    session.add(
        Dispensation(
            subject_id=subject.id,
            day=row.day,
            replacement_number=row.replacement_number + 1,
            kit_id=new.id,
            status="allocated",
            allocated_at=now,
        )
    )
    kit_rules.move_kit(session, new, KitStatus.ALLOCATED, actor, f"replacement for {number} {day_label}", now)
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.KIT_REPLACED,
        object_type="subject",
        object_id=number,
        site_code=site_row.code,
        old={"day": day_label, "kit": old.kit_number},
        new={"day": day_label, "kit": new.kit_number, "cause": cause},
        reason=reason,
        sealed={"arm": arm},
        at=now,
    )
    session.flush()
    resupply.after_stock_change(ctx, session, actor, trial, definition, site_row, now)
    return day_label, new.kit_number


# --- preparation by the unblinded pharmacist (BLD-08) -----------------------------------------


def preparation(
    ctx: ServiceContext, actor: Actor, trial_code: str, number: str, day_label: str, scope: Scope
) -> tuple[str, str]:
    """For trials whose syringes are prepared at the site: the arm of the subject, for the
    unblinded pharmacist only, as an audited read. Returns (arm code, product description).
    Refused for a withdrawn subject (SubjectWithdrawn) before the arm is read; the refusal is
    audited (`dispensation.refused`) and committed before it is raised."""
    outcome: tuple[str, str] | DomainError
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        subject = subject_in_reach(session, trial, number, scope, lock=True)  # as a withdrawal (REP-04)
        if day_label not in _day_numbers(definition):
            raise ValidationFailed("unknown day", errors=[FieldProblem("day", "is not a dispensing day")])
        withdrawn = withdrawn_refusal(session, subject, "day")
        if withdrawn is not None:  # REP-04: no dose to prepare, so no reason to read the arm
            site = session.get(Site, subject.site_id)
            _record_refusal(
                ctx,
                session,
                actor,
                trial.code,
                number,
                site.code if site else None,
                "preparation",
                day_label,
                withdrawn,
            )
            outcome = withdrawn
        else:
            arm = arm_access.subject_arm_in(
                session, ctx, actor, trial.code, subject, f"preparation of {day_label}"
            )
            outcome = arm, next(a.product for a in definition.arms if a.code == arm)
    if isinstance(outcome, DomainError):  # the unit of work committed the refusal's audit entry
        raise outcome
    return outcome
