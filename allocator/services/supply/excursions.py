"""Temperature excursions (issue 19; LBL-05, ACC-12). Interferon gamma-1b is stored at 2-8 °C.

A site pharmacist (for a shipment to their site or their site's refrigerator) or the depot (for any
shipment) reports an excursion: the minimum and maximum temperature, how long, and the data
logger's file. The report is signed (it puts kits into quarantine, a signed act as for one kit) and,
in the same transaction, every affected kit goes to quarantine: the kits of the shipment still in
transit (or received and still available), or every available kit of the site. All of them, whatever
their arm — placebo is stored the same way — so nothing about a report or its kits depends on an arm,
and no arm is read (BLD-04, BLD-12).

The sponsor (shipment:manage) then decides once per excursion, signed: *release* (the kits go back
to where they were: available at the site, or in transit when the shipment has not been received)
or *destroy* (the kits become damaged, i.e. unusable, until their destruction is recorded). The
decision is final (a database trigger refuses any later change to a decided report).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from allocator.audit import Action, Actor
from allocator.db import require
from allocator.models import ExcursionKit, Kit, Shipment, Site, TemperatureExcursion, Trial
from allocator.permissions import Scope
from allocator.services import signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import (
    FREE_TEXT_MAX,
    Conflict,
    FieldProblem,
    NotFound,
    ValidationFailed,
    check_lengths,
)
from allocator.services.lookups import (
    current_definition,
    get_trial,
    lock_site,
    newest_first,
    page_size,
    site_filter,
)
from allocator.services.supply import resupply
from allocator.services.supply.kit_rules import S, move_kit

PLACES = ("shipment", "site")
DECISIONS = {"release": "released", "destroy": "destroyed"}
# The labelled storage range, in tenths of a degree Celsius (the trial's product: 2-8 °C).
STORAGE_MIN, STORAGE_MAX = 20, 80
# The data logger's file: its kind is decided by its name and checked against its content.
LOGGER_TYPES = {"csv": "text/csv", "txt": "text/plain", "pdf": "application/pdf"}
LOGGER_MAX_BYTES = 2 * 1024 * 1024
EXCURSION_STATUSES = ("pending", "released", "destroyed")
EXCURSION_PAGE = 50  # excursions per page of the list (issue 21)
MAX_EXCURSION_PAGE = 1000
_TEMPERATURE = re.compile(r"^[+-]?[0-9]{1,2}(?:[.,][0-9])?$")  # ASCII digits: float() reads others


@dataclass(frozen=True, slots=True)
class LoggerFile:
    name: str
    content: bytes


@dataclass(frozen=True, slots=True)
class ExcursionKitView:
    number: str
    status: str  # the kit's status now


@dataclass(frozen=True, slots=True)
class ExcursionView:
    number: str
    place: str
    site: str
    shipment: str | None
    minimum: Decimal  # °C, one decimal
    maximum: Decimal
    duration_minutes: int
    note: str
    kit_count: int
    logger_name: str
    logger_size: int
    logger_sha256: str
    reported_at: datetime
    reported_by: str
    status: str  # pending | released | destroyed
    decided_at: datetime | None
    decided_by: str | None
    decision_reason: str | None
    kits: tuple[ExcursionKitView, ...] = ()


def celsius(tenths: int) -> str:
    sign = "-" if tenths < 0 else ""
    return f"{sign}{abs(tenths) // 10}.{abs(tenths) % 10}"


def _tenths(field: str, raw: str) -> int:
    text = raw.strip().replace("\u2212", "-")
    if not _TEMPERATURE.match(text):
        raise ValidationFailed(
            "not a temperature",
            errors=[FieldProblem(field, "a temperature in °C, e.g. 9.5 (from -50 to 60)")],
        )
    whole, _, tenth = text.replace(",", ".").partition(".")
    value = abs(int(whole)) * 10 + int(tenth or "0")
    value = -value if whole.startswith("-") else value
    if not -500 <= value <= 600:
        raise ValidationFailed(
            "not a temperature",
            errors=[FieldProblem(field, "a temperature in °C, e.g. 9.5 (from -50 to 60)")],
        )
    return value


def _duration(raw: str) -> int:
    text = raw.strip()
    # Only ASCII digits: "²" or "٣" pass str.isdigit() but are no minutes.
    if not re.fullmatch(r"[0-9]{1,6}", text) or not 1 <= int(text) <= 100_000:
        raise ValidationFailed(
            "invalid duration",
            errors=[FieldProblem("duration_minutes", "a whole number of minutes from 1 to 100000")],
        )
    return int(text)


def check_logger(logger: LoggerFile | None) -> tuple[str, str, bytes]:
    """The logger file's kind, the name kept for it and its content; raises ValidationFailed naming
    `logger`."""
    if logger is None or not logger.name.strip():
        raise ValidationFailed("attach the logger's file", errors=[FieldProblem("logger", "is required")])
    if not logger.content:
        raise ValidationFailed("the logger's file is empty", errors=[FieldProblem("logger", "is empty")])
    if len(logger.content) > LOGGER_MAX_BYTES:
        raise ValidationFailed(
            "the logger's file is too large", errors=[FieldProblem("logger", "is larger than 2 MB")]
        )
    kind = logger.name.rsplit(".", 1)[-1].lower() if "." in logger.name else ""
    if kind not in LOGGER_TYPES:
        raise ValidationFailed(
            "the logger's file is not accepted",
            errors=[FieldProblem("logger", "must be a CSV, text or PDF file")],
        )
    if kind == "pdf":
        readable = logger.content.startswith(b"%PDF-")
    else:
        try:
            readable = b"\x00" not in logger.content and bool(logger.content.decode("utf-8-sig"))
        except UnicodeDecodeError:
            readable = False
    if not readable:
        raise ValidationFailed(
            "the logger's file is not what its name says",
            errors=[FieldProblem("logger", "its content does not match its type (CSV, text or PDF)")],
        )
    # Only the last part of the name is kept, printable and short: it is shown, never used as a path.
    name = re.sub(r"[^\w .()-]", "_", logger.name.replace("\\", "/").rsplit("/", 1)[-1])[-120:]
    return kind, name, logger.content


def report_excursion(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    place: str,
    shipment_number: str = "",
    site_code: str = "",
    minimum: str,
    maximum: str,
    duration_minutes: str,
    note: str,
    logger: LoggerFile | None,
    scope: Scope,
    signature: signatures.SignatureRequest | None,
) -> ExcursionView:
    """Record an excursion and quarantine every affected kit, in one transaction with its signature
    and audit entry; then re-check the site's resupply. Bad input changes nothing."""
    if place not in PLACES:
        raise ValidationFailed(
            "where did it happen?", errors=[FieldProblem("place", "a shipment or a site's refrigerator")]
        )
    low, high = _tenths("minimum", minimum), _tenths("maximum", maximum)
    if low > high:
        raise ValidationFailed(
            "the minimum is above the maximum", errors=[FieldProblem("minimum", "is above the maximum")]
        )
    if low >= STORAGE_MIN and high <= STORAGE_MAX:
        raise ValidationFailed(
            "not an excursion", errors=[FieldProblem("maximum", "both temperatures are within 2-8 °C")]
        )
    minutes = _duration(duration_minutes)
    check_lengths(note=(note, FREE_TEXT_MAX))
    kind, logger_name, content = check_logger(logger)
    if signature is None:
        raise ValidationFailed("this report is signed", errors=[FieldProblem("password", "is required")])
    meaning = "temperature excursion: kit quarantine"
    now = ctx.now()
    subject = shipment_number.strip() if place == "shipment" else site_code.strip()
    with (
        signatures.failures_recorded(
            ctx, actor=actor, chain=trial_code, meaning=meaning, object_type="excursion", object_id=subject
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        shipment: Shipment | None = None
        held: list[Kit] = []  # allocated kits of the refrigerator: held, not quarantined
        if place == "shipment":
            shipment, site, kits = _shipment_kits(session, trial, shipment_number.strip(), scope)
        else:
            site, kits = _site_kits(session, trial, site_code.strip(), scope)
            held = _allocated_kits(session, site)
        if not kits:
            raise Conflict(
                "no kit there can be quarantined (no kit in transit or available)",
                errors=[FieldProblem(place, "holds no kit in transit or available")],
            )
        # The trial's row, locked: two reports at once get consecutive numbers, not a clash.
        # FOR NO KEY UPDATE (as documents.next_document_id): a randomization's inserts that refer to
        # the trial take a key-share lock on its row, which a plain FOR UPDATE waited for (every
        # randomization of the trial queued behind a report, or deadlocked with it).
        session.execute(select(Trial.id).where(Trial.id == trial.id).with_for_update(key_share=True))
        before = session.execute(
            select(func.count())
            .select_from(TemperatureExcursion)
            .where(TemperatureExcursion.trial_id == trial.id)
        ).scalar_one()
        number = f"EXC-{before + 1:04d}"
        digest = hashlib.sha256(content).hexdigest()
        kit_numbers = sorted(k.kit_number for k in kits)
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=meaning,
            object_type="excursion",
            object_id=number,
            content={
                "excursion": number,
                "place": place,
                "site": site.code,
                "shipment": shipment.number if shipment else None,
                "minimum": celsius(low),
                "maximum": celsius(high),
                "duration_minutes": minutes,
                "logger_sha256": digest,
                "kits": kit_numbers,
            },
            now=now,
        )
        excursion = TemperatureExcursion(
            trial_id=trial.id,
            number=number,
            place=place,
            site_id=site.id,
            shipment_id=shipment.id if shipment else None,
            min_tenths=low,
            max_tenths=high,
            duration_minutes=minutes,
            note=note.strip(),
            kit_count=len(kits),
            logger_name=logger_name,
            logger_type=kind,
            logger_size=len(content),
            logger_sha256=digest,
            logger_content=content,
            reported_at=now,
            reported_by_id=actor.user_id,
            reported_by_name=actor.name,
            report_signature_id=signed.id,
            status="pending",
        )
        session.add(excursion)
        session.flush()
        for kit in kits:
            move_kit(session, kit, S.QUARANTINED, actor, f"temperature excursion {number}", now)
            session.add(ExcursionKit(excursion_id=excursion.id, kit_id=kit.id))
        for kit in held:
            # LBL-05: a kit already allocated to a patient stays allocated (the lifecycle has no
            # step from allocated to quarantined) but cannot be dispensed while the excursion is
            # undecided, nor after a decision to destroy: the pharmacist replaces it through the
            # subject's kit replacement, or dispenses it once the sponsor releases the excursion.
            session.add(ExcursionKit(excursion_id=excursion.id, kit_id=kit.id))
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.EXCURSION_REPORTED,
            object_type="excursion",
            object_id=number,
            site_code=site.code,
            new={
                "place": place,
                "shipment": shipment.number if shipment else None,
                "minimum": celsius(low),
                "maximum": celsius(high),
                "duration_minutes": minutes,
                "file": logger_name,
                "sha256": digest,
                "kits": kit_numbers,
                "signature": signed.id,
            },
            reason=note.strip() or None,
            at=now,
        )
        session.flush()
        resupply.after_stock_change(ctx, session, actor, trial, current_definition(session, trial), site, now)
        return _view(session, excursion, site.code, shipment.number if shipment else None)


def decide_excursion(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    number: str,
    decision: str,
    *,
    reason: str,
    signature: signatures.SignatureRequest | None,
) -> int:
    """The sponsor's signed decision on an excursion: release its kits or destroy them. Only the
    kits still quarantined by it move (a kit changed since keeps its status). Returns how many moved."""
    if decision not in DECISIONS:
        raise ValidationFailed("release or destroy?", errors=[FieldProblem("decision", "release or destroy")])
    if not reason.strip():
        raise ValidationFailed("a reason is required", errors=[FieldProblem("reason", "is required")])
    check_lengths(reason=(reason, FREE_TEXT_MAX))
    if signature is None:
        raise ValidationFailed("this decision is signed", errors=[FieldProblem("password", "is required")])
    meaning = f"temperature excursion decision: {decision}"
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx, actor=actor, chain=trial_code, meaning=meaning, object_type="excursion", object_id=number
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        excursion = session.execute(
            select(TemperatureExcursion)
            .where(TemperatureExcursion.trial_id == trial.id, TemperatureExcursion.number == number)
            .with_for_update()
        ).scalar_one_or_none()
        if excursion is None:
            raise NotFound(f"no excursion {number}")
        if excursion.status != "pending":
            raise Conflict(f"excursion {number} is already decided")
        # The shipment's row is locked before its kits, in the order of shipments.receive: a receipt
        # at the same moment either comes first (the kits are then at the site and become available)
        # or waits for the decision (the released kits are then in transit and it receives them).
        shipment = (
            session.execute(
                select(Shipment).where(Shipment.id == excursion.shipment_id).with_for_update()
            ).scalar_one()
            if excursion.shipment_id
            else None
        )
        # Then the site's row (the report's site, or the shipment's destination), before the kits:
        # a quarantined kit is changed by hand, returned or destroyed with its site locked first,
        # and the kits' events below refer to the site (key share), so taking the kits first could
        # wait for one of those holding the site and waiting for a kit.
        lock_site(session, excursion.site_id)
        kits = list(
            session.execute(
                select(Kit)
                .join(ExcursionKit, ExcursionKit.kit_id == Kit.id)
                .where(ExcursionKit.excursion_id == excursion.id, Kit.status == S.QUARANTINED.value)
                .order_by(Kit.kit_number)
                .with_for_update(of=Kit)
            ).scalars()
        )
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=meaning,
            object_type="excursion",
            object_id=number,
            content={
                "excursion": number,
                "decision": decision,
                "kits": [k.kit_number for k in kits],
                "reason": reason.strip(),
            },
            now=now,
        )
        for kit in kits:
            if decision == "destroy":
                target = S.DAMAGED
                why = f"temperature excursion {number}: the sponsor decided destruction"
            elif kit.site_id is None and shipment is not None and shipment.status == "shipped":
                target, why = S.IN_TRANSIT, f"temperature excursion {number}: released by the sponsor"
            else:
                target, why = S.AVAILABLE, f"temperature excursion {number}: released by the sponsor"
            move_kit(session, kit, target, actor, why, now)
        excursion.status = DECISIONS[decision]
        excursion.decided_at = now
        excursion.decided_by_name = actor.name
        excursion.decision_reason = reason.strip()
        excursion.decision_signature_id = signed.id
        site = session.get(Site, excursion.site_id)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.EXCURSION_DECIDED,
            object_type="excursion",
            object_id=number,
            site_code=site.code if site else None,
            old={"status": "pending"},
            new={
                "status": excursion.status,
                "decision": decision,
                "kits": [k.kit_number for k in kits],
                "signature": signed.id,
            },
            reason=reason.strip(),
            at=now,
        )
        if site is not None:
            session.flush()
            resupply.after_stock_change(
                ctx, session, actor, trial, current_definition(session, trial), site, now
            )
        return len(kits)


@dataclass(frozen=True, slots=True)
class ExcursionPage:
    excursions: tuple[ExcursionView, ...]
    next_before: str | None  # the excursion number to pass as `before` for older ones; None: the last page


def excursions(
    ctx: ServiceContext,
    trial_code: str,
    scope: Scope,
    *,
    before: str | None = None,
    limit: int = EXCURSION_PAGE,
    site: str | None = None,
    status: str | None = None,
) -> ExcursionPage:
    """One page of the excursions of the sites within `scope` (of `site`, in `status`, when given),
    newest first, older than the excursion numbered `before`, without their kits: a few statements
    and `limit` excursions (issue 21). The logger files stay in the database: the list read every
    one (up to LOGGER_MAX_BYTES each) to show none. Raises ValidationFailed naming `before`,
    `site`, `status` or `limit`."""
    page_size(limit, MAX_EXCURSION_PAGE)
    if status is not None and status not in EXCURSION_STATUSES:
        raise ValidationFailed("invalid status", errors=[FieldProblem("status", "unknown status")])
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        sites = {
            row.id: row.code
            for row in session.execute(select(Site.id, Site.code).where(Site.trial_id == trial.id))
        }
        query = (
            select(TemperatureExcursion, Shipment.number)
            .outerjoin(Shipment, Shipment.id == TemperatureExcursion.shipment_id)
            .options(defer(TemperatureExcursion.logger_content))
        )
        if site:
            query = query.where(TemperatureExcursion.site_id == site_filter(sites, site, scope, trial.code))
        if status:
            query = query.where(TemperatureExcursion.status == status)
        found, more = newest_first(
            session,
            query,
            TemperatureExcursion,
            trial,
            scope,
            limit=limit,
            before=before,
            unknown=f"no excursion {before!r} within your reach",
        )
        views = tuple(_view(session, e, sites[e.site_id], shipment, kits=False) for e, shipment in found)
        return ExcursionPage(views, views[-1].number if more else None)


def excursion(ctx: ServiceContext, trial_code: str, number: str, scope: Scope) -> ExcursionView:
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        found = _find(session, trial, number, scope)
        site = session.get(Site, found.site_id)
        shipment = session.get(Shipment, found.shipment_id) if found.shipment_id else None
        return _view(session, found, site.code if site else "", shipment.number if shipment else None)


def logger_file(ctx: ServiceContext, trial_code: str, number: str, scope: Scope) -> tuple[str, bytes]:
    """The logger's file as reported: (its kind, its bytes)."""
    with ctx.db.reading() as session:
        found = _find(session, get_trial(session, trial_code), number, scope)
        return found.logger_type, found.logger_content


def _find(session: Session, trial: Trial, number: str, scope: Scope) -> TemperatureExcursion:
    found = session.execute(
        select(TemperatureExcursion).where(
            TemperatureExcursion.trial_id == trial.id, TemperatureExcursion.number == number
        )
    ).scalar_one_or_none()
    if found is None or not scope.allows_site(found.site_id):
        raise NotFound(f"no excursion {number}")
    return found


def _view(
    session: Session, e: TemperatureExcursion, site: str, shipment: str | None, *, kits: bool = True
) -> ExcursionView:
    kit_views: tuple[ExcursionKitView, ...] = ()
    if kits:
        kit_views = tuple(
            ExcursionKitView(number, status)
            for number, status in session.execute(
                select(Kit.kit_number, Kit.status)
                .join(ExcursionKit, ExcursionKit.kit_id == Kit.id)
                .where(ExcursionKit.excursion_id == e.id)
                .order_by(Kit.kit_number)
            ).all()
        )
    return ExcursionView(
        number=e.number,
        place=e.place,
        site=site,
        shipment=shipment,
        minimum=Decimal(e.min_tenths).scaleb(-1),
        maximum=Decimal(e.max_tenths).scaleb(-1),
        duration_minutes=e.duration_minutes,
        note=e.note,
        kit_count=e.kit_count,
        logger_name=e.logger_name,
        logger_size=e.logger_size,
        logger_sha256=e.logger_sha256,
        reported_at=e.reported_at,
        reported_by=e.reported_by_name,
        status=e.status,
        decided_at=e.decided_at,
        decided_by=e.decided_by_name,
        decision_reason=e.decision_reason,
        kits=kit_views,
    )


def _shipment_kits(
    session: Session, trial: Trial, number: str, scope: Scope
) -> tuple[Shipment, Site, list[Kit]]:
    shipment = session.execute(
        select(Shipment).where(Shipment.trial_id == trial.id, Shipment.number == number).with_for_update()
    ).scalar_one_or_none()
    if shipment is None or not scope.allows_site(shipment.site_id):
        raise NotFound(
            f"no shipment {number!r} within your reach", errors=[FieldProblem("shipment", "unknown shipment")]
        )
    if shipment.status not in ("shipped", "received"):
        raise Conflict(
            "the shipment has not been shipped yet",
            errors=[FieldProblem("shipment", "has not been shipped yet")],
        )
    site = require(session, Site, shipment.site_id)
    # The destination's row before any kit and before the trial's numbering lock, the order of
    # every use case that takes a site and its kits (a randomization: the site, then the kits it
    # draws; a return: the site, its kits, then the trial's row for its document number). Taken
    # after them, as resupply did at the end of the report, a received shipment's kits were held
    # while the site was awaited, and the trial's row while a return held the site and awaited it.
    lock_site(session, site.id)
    kits = list(
        session.execute(
            select(Kit)
            .where(Kit.shipment_id == shipment.id)
            .where(
                (Kit.status == S.IN_TRANSIT.value)
                | ((Kit.status == S.AVAILABLE.value) & (Kit.site_id == shipment.site_id))
            )
            .order_by(Kit.id)
            .with_for_update()
        ).scalars()
    )
    return shipment, site, kits


def _allocated_kits(session: Session, site: Site) -> list[Kit]:
    """The site's kits allocated to a subject and not yet dispensed, locked (sorted by id: no arm
    order)."""
    return list(
        session.execute(
            select(Kit)
            .where(Kit.site_id == site.id, Kit.status == S.ALLOCATED.value)
            .order_by(Kit.id)
            .with_for_update()
        ).scalars()
    )


def _site_kits(session: Session, trial: Trial, code: str, scope: Scope) -> tuple[Site, list[Kit]]:
    site = session.execute(
        select(Site).where(Site.trial_id == trial.id, Site.code == code)
    ).scalar_one_or_none()
    if site is None or not scope.allows_site(site.id):
        raise NotFound(f"no site {code!r} within your reach", errors=[FieldProblem("site", "unknown site")])
    # The site's row before its kits, the order of a randomization (site, then the kits it draws):
    # kits first waited for nothing here, but a randomization holding the site waited for them.
    lock_site(session, site.id)
    kits = list(
        session.execute(
            select(Kit)
            .where(Kit.site_id == site.id, Kit.status == S.AVAILABLE.value)
            .order_by(Kit.id)
            .with_for_update()
        ).scalars()
    )
    return site, kits
