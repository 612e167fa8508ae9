"""Shipments of collected samples to the central lab (issue 20): the site prepares one from its
collected tube sets (scanned or picked from the list; numbered LS-0001 per trial), prints its
manifest (a QR per shipment) and marks it shipped; at the lab the technician opens the receipt by
scanning the manifest's QR (or typing the number), scans each tube set (received, or unusable with a
reason) and closes the receipt: tube sets not scanned are recorded missing (unusable, "not
received"). Nothing is deleted; every tube-set change goes through `rules.move_sample_kit`, and
each step writes its audit entry in its transaction. The pre-analytical delay (received -
collected) is shown per sample and flagged beyond the definition's `max_preanalytical_hours`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, String, and_, func, select, type_coerce
from sqlalchemy.orm import Session

import kits as kitlib
from allocator.audit import Action, Actor
from allocator.models import (
    LabShipment,
    LabShipmentStatus,
    PlannedSample,
    PrintedDocument,
    Registration,
    SampleKit,
    SampleKitStatus,
    Site,
    Trial,
)
from allocator.permissions import Scope
from allocator.services import documents
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import current_definition, get_trial, newest_first, page_size, require_open
from allocator.services.samples.rules import move_sample_kit
from allocator.services.supply.kit_rules import mac
from allocator.trialdef import TrialDefinition
from allocator.version import __version__

T = SampleKitStatus
MANIFEST_KIND = "lab_manifest"
MANIFEST_PREFIX = "LM"

# Why the lab found a tube set unusable; "other" needs the technician's words.
UNUSABLE_REASONS = ("haemolysed", "insufficient_volume", "leaked", "too_late", "other")
NOT_RECEIVED = "not received"  # a tube set of the shipment not scanned when the receipt was closed
MAX_NOTE = 300


@dataclass(frozen=True, slots=True)
class SampleRow:
    """One tube set with its participant and sample, as site and lab staff see it (no arm exists)."""

    kit_number: str
    site: str
    subject_number: str
    label: str
    status: str
    collected_at: datetime | None
    shipment: str | None
    received_at: datetime | None
    received_by: str | None
    reason: str | None
    delay_hours: float | None  # pre-analytical delay: received_at - collected_at
    late: bool  # beyond the definition's max_preanalytical_hours


@dataclass(frozen=True, slots=True)
class LabShipmentView:
    number: str
    site: str
    status: str
    sample_count: int
    created_at: datetime
    created_by: str
    shipped_at: datetime | None
    shipped_by: str | None
    received_at: datetime | None
    received_by: str | None
    samples: tuple[SampleRow, ...] = ()

    @property
    def pending(self) -> int:
        """Tube sets of the shipment not yet scanned at the lab."""
        return sum(1 for s in self.samples if s.status == T.SHIPPED.value)


def max_delay_hours(definition: TrialDefinition) -> int:
    if definition.sampling is None:
        raise Conflict(f"{definition.code} randomizes its patients: it has no samples")
    return definition.sampling.max_preanalytical_hours


def delay_limit(ctx: ServiceContext, trial_code: str) -> int:
    """The definition's max_preanalytical_hours. Raises NotFound, Conflict (a randomized trial)."""
    with ctx.db.reading() as session:
        return max_delay_hours(current_definition(session, get_trial(session, trial_code)))


def _sample_rows(
    session: Session,
    trial: Trial,
    limit: int,
    *conditions: object,
    start: int = 0,
    size: int | None = None,
) -> list[SampleRow]:
    """The tube sets matching `conditions` in site, participant, sample and tube-set order; with
    `size`, only `size` of them from row `start` (a page: issue 21)."""
    query = (
        select(SampleKit, Site.code, Registration.subject_number, PlannedSample.label, LabShipment.number)
        .join(Site, Site.id == SampleKit.site_id)
        .outerjoin(PlannedSample, PlannedSample.id == SampleKit.planned_sample_id)
        .outerjoin(Registration, Registration.id == PlannedSample.registration_id)
        .outerjoin(LabShipment, LabShipment.id == SampleKit.lab_shipment_id)
        .where(SampleKit.trial_id == trial.id, *conditions)  # type: ignore[arg-type]
        .order_by(Site.code, Registration.subject_number, PlannedSample.label, SampleKit.kit_number)
    )
    if size is not None:
        query = query.offset(start).limit(size)
    rows = session.execute(query).all()
    out = []
    for kit, site, subject, label, shipment in rows:
        delay = None
        late = False
        if kit.received_at is not None and kit.collected_at is not None:
            seconds = (_aware(kit.received_at) - _aware(kit.collected_at)).total_seconds()
            delay = round(seconds / 3600, 1)  # shown; the limit is checked on the exact delay
            late = seconds > limit * 3600
        out.append(
            SampleRow(
                kit_number=kit.kit_number,
                site=site,
                subject_number=subject or "",
                label=label or "",
                status=kit.status,
                collected_at=_aware(kit.collected_at) if kit.collected_at else None,
                shipment=shipment,
                received_at=_aware(kit.received_at) if kit.received_at else None,
                received_by=kit.received_by_name,
                reason=kit.reason,
                delay_hours=delay,
                late=late,
            )
        )
    return out


def sample_rows(
    session: Session, trial: Trial, limit: int, *conditions: object, start: int = 0, size: int | None = None
) -> list[SampleRow]:
    """The tube sets of `trial` matching `conditions`, with participant, sample and delay (a page
    of `size` from row `start`, when given)."""
    return _sample_rows(session, trial, limit, *conditions, start=start, size=size)


def late_in_sql(session: Session, limit: int) -> ColumnElement[bool]:
    """Whether a tube set's pre-analytical delay is beyond `limit` hours, in the database, exactly as
    `_sample_rows` judges it (received more than `limit` hours after collection, to the
    microsecond). PostgreSQL adds an interval. SQLite stores times as text, "YYYY-MM-DD HH:MM:SS"
    and six decimals: the whole seconds are moved by `limit` hours (the decimals left out, or its
    date functions would round them to milliseconds, and .9996 to the next second), the decimals
    put back, and the two texts compared (no floating point at the boundary)."""
    if session.get_bind().dialect.name == "postgresql":
        deadline: ColumnElement[Any] = SampleKit.collected_at + func.make_interval(0, 0, 0, 0, int(limit))
    else:
        # Both sides as text padded to six decimals, should a time have been stored without them.
        collected = type_coerce(SampleKit.collected_at, String)
        whole_seconds = func.substr(collected, 1, 19)
        decimals = func.substr(collected.concat(".000000"), 20, 7)
        deadline = func.strftime("%Y-%m-%d %H:%M:%S", whole_seconds, f"+{int(limit)} hours").concat(decimals)
        received = func.substr(type_coerce(SampleKit.received_at, String).concat(".000000"), 1, 26)
        return and_(
            SampleKit.collected_at.is_not(None), SampleKit.received_at.is_not(None), received > deadline
        )
    return and_(
        SampleKit.collected_at.is_not(None),
        SampleKit.received_at.is_not(None),
        SampleKit.received_at > deadline,
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _scope_condition(scope: Scope) -> object:
    return SampleKit.site_id.in_(scope.site_ids) if not scope.all_sites else SampleKit.id.is_not(None)


def collected_samples(ctx: ServiceContext, trial_code: str, scope: Scope) -> list[SampleRow]:
    """The collected tube sets of the sites in `scope` not yet in a lab shipment."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        limit = max_delay_hours(current_definition(session, trial))
        return _sample_rows(
            session,
            trial,
            limit,
            SampleKit.status == T.COLLECTED.value,
            SampleKit.lab_shipment_id.is_(None),
            _scope_condition(scope),
        )


def _view(
    session: Session, trial: Trial, shipment: LabShipment, limit: int, samples: bool
) -> LabShipmentView:
    site = session.get(Site, shipment.site_id)
    rows = _sample_rows(session, trial, limit, SampleKit.lab_shipment_id == shipment.id) if samples else []
    return _shipment_view(shipment, site.code if site else "", rows)


def _shipment_view(shipment: LabShipment, site_code: str, samples: Sequence[SampleRow]) -> LabShipmentView:
    return LabShipmentView(
        number=shipment.number,
        site=site_code,
        status=shipment.status,
        sample_count=shipment.sample_count,
        created_at=_aware(shipment.created_at),
        created_by=shipment.created_by_name,
        shipped_at=_aware(shipment.shipped_at) if shipment.shipped_at else None,
        shipped_by=shipment.shipped_by_name,
        received_at=_aware(shipment.received_at) if shipment.received_at else None,
        received_by=shipment.received_by_name,
        samples=tuple(samples),
    )


LAB_SHIPMENT_PAGE = 50  # lab shipments per page (issue 21: a cohort ships for years)
ON_THEIR_WAY = LabShipmentStatus.SHIPPED  # the lab's list of shipments to receive
MAX_LAB_SHIPMENT_PAGE = 1000


@dataclass(frozen=True, slots=True)
class LabShipmentPage:
    shipments: tuple[LabShipmentView, ...]
    next_before: str | None  # the shipment number to pass as `before` for older ones; None: the last page


def shipments(
    ctx: ServiceContext,
    trial_code: str,
    scope: Scope,
    *,
    before: str | None = None,
    limit: int = LAB_SHIPMENT_PAGE,
    status: LabShipmentStatus | None = None,
    samples: bool = True,
) -> LabShipmentPage:
    """One page of the lab shipments of the sites in `scope` (in `status`, when given), newest
    first, older than the shipment numbered `before`, with their tube sets (`samples`, read at
    once for the page): a few statements and `limit` shipments, however long the study has shipped
    (issue 21). Raises ValidationFailed naming `before` (a shipment outside `scope` reads as
    unknown) or `limit`."""
    page_size(limit, MAX_LAB_SHIPMENT_PAGE)
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        query = select(LabShipment, Site.code).join(Site, Site.id == LabShipment.site_id)
        if status is not None:
            query = query.where(LabShipment.status == status.value)
        found, more = newest_first(
            session,
            query,
            LabShipment,
            trial,
            scope,
            limit=limit,
            before=(before or "").strip().upper(),
            unknown="no such shipment",
        )
        by_shipment: dict[str | None, list[SampleRow]] = {}
        if samples and found:
            limit_hours = max_delay_hours(current_definition(session, trial))
            shipment_ids = [shipment.id for shipment, _site in found]
            for row in _sample_rows(session, trial, limit_hours, SampleKit.lab_shipment_id.in_(shipment_ids)):
                by_shipment.setdefault(row.shipment, []).append(row)
        return LabShipmentPage(
            tuple(_shipment_view(s, site, by_shipment.get(s.number, [])) for s, site in found),
            found[-1][0].number if more and found else None,
        )


def shipment(ctx: ServiceContext, trial_code: str, number: str, scope: Scope) -> LabShipmentView:
    """One lab shipment with its tube sets. Raises NotFound (also outside `scope`)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        limit = max_delay_hours(current_definition(session, trial))
        return _view(session, trial, _shipment(session, trial, number, scope), limit, samples=True)


def _shipment(
    session: Session, trial: Trial, number: str, scope: Scope, *, lock: bool = False
) -> LabShipment:
    query = select(LabShipment).where(LabShipment.trial_id == trial.id, LabShipment.number == number)
    if lock:
        query = query.with_for_update()
    found = session.execute(query).scalar_one_or_none()
    if found is None or not scope.allows_site(found.site_id):
        raise NotFound(f"no lab shipment {number}", errors=[FieldProblem("shipment", "no such shipment")])
    return found


def unreadable_tube_set(exc: kitlib.KitsError) -> str:
    """What is wrong with a scan that should be a tube set of this study, in plain words."""
    if isinstance(exc, kitlib.WrongTrialError):
        return "a label of another study"
    if isinstance(exc, kitlib.WrongKitKindError):
        return "a drug kit's label, not a tube set's"
    if isinstance(exc, kitlib.BadMacError):
        return "the label's security code is wrong: not printed by this service, or altered"
    if isinstance(exc, kitlib.KitNumberCheckDigitError):
        return "wrong check digit: scan or type the number again"
    return "unreadable: not a tube set's label or number"


def tube_set_number(ctx: ServiceContext, trial_code: str, raw: str, field: str) -> str:
    """The tube set's number from a scanned label (its MAC checked, a drug kit's label refused) or
    a typed number (check digit checked). Raises ValidationFailed naming `field`."""
    text = raw.strip()
    if not text:
        raise ValidationFailed(
            f"{field} is required", errors=[FieldProblem(field, "scan or type a tube set")]
        )
    try:
        if "/" in text:
            if text.upper().startswith(kitlib.payload.SHIPMENT_PAYLOAD_PREFIX):
                raise ValidationFailed(
                    "a manifest, not a tube set",
                    errors=[FieldProblem(field, "a shipment manifest, not a tube set")],
                )
            return kitlib.verify_payload(text, trial_code, mac(ctx), kind=kitlib.KitKind.SAMPLE).kit_number
        return kitlib.normalize_kit_number(text)
    except kitlib.KitsError as exc:
        raise ValidationFailed(
            "the tube set cannot be read", errors=[FieldProblem(field, unreadable_tube_set(exc))]
        ) from None


def _next_number(session: Session, trial: Trial) -> str:
    # Numbered under the trial row's lock (as documents and drug shipments): two sites preparing at
    # once never get the same number; the unique constraint backs it.
    session.execute(select(Trial.id).where(Trial.id == trial.id).with_for_update(key_share=True))
    count = session.execute(
        select(func.count()).select_from(LabShipment).where(LabShipment.trial_id == trial.id)
    ).scalar_one()
    return f"LS-{count + 1:04d}"


def prepare(
    ctx: ServiceContext, actor: Actor, trial_code: str, site_code: str, tube_sets: Sequence[str], scope: Scope
) -> LabShipmentView:
    """Prepare a shipment of collected tube sets of one site (each scanned or typed, or picked).

    Every tube set must be of this study, of this site, collected and in no other shipment; one
    that is not refuses the whole shipment (nothing written), naming `tube_sets[i]`. Raises
    ValidationFailed, NotFound (site outside `scope`)."""
    now = ctx.now()
    numbers: list[str] = []
    problems: list[FieldProblem] = []
    for index, raw in enumerate(tube_sets):
        if not raw.strip():
            continue
        try:
            number = tube_set_number(ctx, trial_code, raw, f"tube_sets[{index}]")
        except ValidationFailed as exc:
            problems.extend(exc.errors)
            continue
        if number in numbers:
            problems.append(FieldProblem(f"tube_sets[{index}]", "listed twice"))
        numbers.append(number)
    if problems:
        raise ValidationFailed("some tube sets cannot be shipped", errors=problems)
    if not numbers:
        raise ValidationFailed(
            "no tube set", errors=[FieldProblem("tube_sets", "scan or pick at least one tube set")]
        )
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        require_open(trial, session)  # nothing changes once the study's database is locked
        max_delay_hours(current_definition(session, trial))  # refuses a randomized trial
        site = session.execute(
            select(Site).where(Site.trial_id == trial.id, Site.code == site_code)
        ).scalar_one_or_none()
        if site is None or not scope.allows_site(site.id):
            raise NotFound(
                f"no site {site_code!r} within your reach", errors=[FieldProblem("site", "unknown site")]
            )
        found = {
            k.kit_number: k
            for k in session.execute(
                select(SampleKit)
                .where(SampleKit.trial_id == trial.id, SampleKit.kit_number.in_(numbers))
                .with_for_update()
            ).scalars()
        }
        for index, number in enumerate(numbers):
            kit = found.get(number)
            field = f"tube_sets[{index}]"
            if kit is None:
                problems.append(FieldProblem(field, "not a tube set of this study"))
            elif kit.site_id != site.id:
                problems.append(FieldProblem(field, "a tube set of another site"))
            elif kit.lab_shipment_id is not None:
                problems.append(FieldProblem(field, "already in another shipment"))
            elif kit.status != T.COLLECTED.value:
                problems.append(FieldProblem(field, f"not collected (it is {kit.status})"))
        if problems:
            raise ValidationFailed("some tube sets cannot be shipped", errors=problems)
        shipment = LabShipment(
            trial_id=trial.id,
            site_id=site.id,
            number=_next_number(session, trial),
            status=LabShipmentStatus.PREPARED.value,
            sample_count=len(numbers),
            created_at=now,
            created_by_id=actor.user_id,
            created_by_name=actor.name,
        )
        session.add(shipment)
        session.flush()
        for number in numbers:
            found[number].lab_shipment_id = shipment.id
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.LAB_SHIPMENT_PREPARED,
            object_type="lab_shipment",
            object_id=shipment.number,
            site_code=site.code,
            new={"status": "prepared", "tube_sets": sorted(numbers)},
            at=now,
        )
        limit = max_delay_hours(current_definition(session, trial))
        return _view(session, trial, shipment, limit, samples=True)


def ship(ctx: ServiceContext, actor: Actor, trial_code: str, number: str, scope: Scope) -> None:
    """Mark a prepared shipment shipped: its tube sets go `shipped`. Raises NotFound, Conflict."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        require_open(trial, session)  # nothing changes once the study's database is locked
        shipment = _shipment(session, trial, number, scope, lock=True)
        if shipment.status != LabShipmentStatus.PREPARED.value:
            raise Conflict(f"lab shipment {number} is {shipment.status}, not prepared")
        kits = session.execute(
            select(SampleKit)
            .where(SampleKit.lab_shipment_id == shipment.id)
            .order_by(SampleKit.id)
            .with_for_update()
        ).scalars()
        for kit in kits:
            move_sample_kit(session, kit, T.SHIPPED, actor, f"shipped in {number}", now)
        shipment.status = LabShipmentStatus.SHIPPED.value
        shipment.shipped_at = now
        shipment.shipped_by_name = actor.name
        site = session.get(Site, shipment.site_id)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.LAB_SHIPMENT_SHIPPED,
            object_type="lab_shipment",
            object_id=number,
            site_code=site.code if site else None,
            old={"status": "prepared"},
            new={"status": "shipped", "tube_sets": shipment.sample_count},
            at=now,
        )


def print_manifest(
    ctx: ServiceContext, actor: Actor, trial_code: str, number: str, scope: Scope
) -> tuple[str, bytes]:
    """Print the manifest of a lab shipment (any status; a second print is a duplicate, LBL-12),
    recorded as a printed document with its bytes and audit entry. Returns (document id, PDF)."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        limit = max_delay_hours(definition)
        shipment = _shipment(session, trial, number, scope)
        view = _view(session, trial, shipment, limit, samples=True)
        site = session.get(Site, shipment.site_id)
        # The trial row's lock first (next_document_id), then the earlier prints counted: two prints
        # at once both came out as originals (LBL-12; the review of the merged cohort).
        document_id = documents.next_document_id(session, trial, MANIFEST_PREFIX)
        earlier = [
            d
            for d in session.execute(
                select(PrintedDocument).where(
                    PrintedDocument.trial_id == trial.id, PrintedDocument.kind == MANIFEST_KIND
                )
            ).scalars()
            if d.items and d.items[0] == number
        ]
        reprint = documents.checked_reprint_number(len(earlier))
        manifest = kitlib.LabManifest(
            trial_code=trial.code,
            short_title=definition.short_title,
            shipment_number=number,
            site_code=site.code if site else "",
            site_name=site.name if site else "",
            prepared_by=shipment.created_by_name,
            qr_payload=kitlib.build_shipment_payload(trial.code, number, mac(ctx)),
            samples=tuple(
                kitlib.ManifestSample(s.kit_number, s.subject_number, s.label, s.collected_at)
                for s in view.samples
                if s.collected_at is not None
            ),
            document=kitlib.DocumentMeta(document_id, now, reprint),
            test_mode=ctx.settings.env.value != "production",
            software_version=__version__,
        )
        pdf = kitlib.render_lab_manifest(manifest)
        documents.record_print(
            ctx,
            session,
            actor,
            trial,
            kind=MANIFEST_KIND,
            document_id=document_id,
            pdf=pdf,
            items=[number, *(s.kit_number for s in view.samples)],
            now=now,
            reprint_number=reprint,
            reprint_of=earlier[0].document_id if earlier else None,
            audit={"kind": MANIFEST_KIND, "shipment": number, "reprint_number": reprint},
            site_code=site.code if site else None,
            keep_content=True,
        )
        return document_id, pdf


def manifest_pdf(ctx: ServiceContext, trial_code: str, number: str, document_id: str, scope: Scope) -> bytes:
    """A manifest printed earlier, exactly as printed. Raises NotFound."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        _shipment(session, trial, number, scope)
        doc = session.execute(
            select(PrintedDocument).where(
                PrintedDocument.trial_id == trial.id,
                PrintedDocument.kind == MANIFEST_KIND,
                PrintedDocument.document_id == document_id,
            )
        ).scalar_one_or_none()
        if doc is None or not doc.items or doc.items[0] != number or doc.content is None:
            raise NotFound(f"no manifest {document_id}")
        return bytes(doc.content)


_TYPED_NUMBER = re.compile(r"(?:LS-?)?([0-9]{1,6})")


def open_receipt(ctx: ServiceContext, trial_code: str, raw: str, scope: Scope) -> str:
    """The shipment number from the manifest's scanned QR (trial and MAC checked) or a typed number
    (`LS-0001`, `ls-1` or `1`). Raises ValidationFailed (field `manifest`), NotFound, Conflict
    (not shipped: prepared, or already received)."""
    text = raw.strip()
    if "/" in text:
        try:
            number = kitlib.verify_shipment_payload(text, trial_code, mac(ctx)).number
        except kitlib.KitsError as exc:
            if isinstance(exc, kitlib.WrongTrialError):
                message = "a manifest of another study"
            elif isinstance(exc, kitlib.BadMacError):
                message = "the manifest's security code is wrong: not printed by this service, or altered"
            elif "kit label" in str(exc):
                message = "a kit label, not a shipment manifest"
            else:
                message = "unreadable: not a shipment manifest or number"
            raise ValidationFailed(
                "the manifest cannot be read", errors=[FieldProblem("manifest", message)]
            ) from None
    else:
        typed = _TYPED_NUMBER.fullmatch(text.upper())
        if typed is None:
            raise ValidationFailed(
                "not a shipment number",
                errors=[FieldProblem("manifest", "scan the manifest's QR or type its number (LS-0001)")],
            )
        number = f"LS-{int(typed.group(1)):04d}"
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        shipment = _shipment(session, trial, number, scope)
        if shipment.status != LabShipmentStatus.SHIPPED.value:
            raise Conflict(
                f"lab shipment {number} is {shipment.status}, not shipped",
                errors=[FieldProblem("manifest", f"the shipment is {shipment.status}, not in transit")],
            )
    return number


@dataclass(frozen=True, slots=True)
class SampleOutcome:
    """What the technician records for one tube set scanned at the lab."""

    scan: str
    usable: bool = True
    reason: str = ""  # one of UNUSABLE_REASONS when not usable
    note: str = ""  # the technician's words, required with "other"


def receive_sample(
    ctx: ServiceContext, actor: Actor, trial_code: str, number: str, outcome: SampleOutcome, scope: Scope
) -> SampleRow:
    """Record one tube set of shipment `number` received at the lab (received_at, by), or unusable
    with a reason. Refuses (nothing written) a tube set of another shipment or site, one already
    scanned, a drug kit's label, a shipment not in transit. Raises ValidationFailed, NotFound,
    Conflict."""
    now = ctx.now()
    kit_number = tube_set_number(ctx, trial_code, outcome.scan, "tube_set")
    reason: str | None = None
    if not outcome.usable:
        if outcome.reason not in UNUSABLE_REASONS:
            raise ValidationFailed(
                "why unusable?", errors=[FieldProblem("reason", f"one of {', '.join(UNUSABLE_REASONS)}")]
            )
        note = outcome.note.strip()
        if len(note) > MAX_NOTE:
            raise ValidationFailed(
                "note too long", errors=[FieldProblem("note", f"at most {MAX_NOTE} characters")]
            )
        if outcome.reason == "other" and not note:
            raise ValidationFailed(
                "why unusable?", errors=[FieldProblem("note", "say why the sample is unusable")]
            )
        reason = outcome.reason.replace("_", " ") + (f": {note}" if note else "")
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        require_open(trial, session)  # nothing changes once the study's database is locked
        limit = max_delay_hours(current_definition(session, trial))
        shipment = _shipment(session, trial, number, scope, lock=True)
        if shipment.status != LabShipmentStatus.SHIPPED.value:
            raise Conflict(
                f"lab shipment {number} is {shipment.status}, not shipped",
                errors=[FieldProblem("tube_set", f"the shipment is {shipment.status}, not in transit")],
            )
        kit = session.execute(
            select(SampleKit)
            .where(SampleKit.trial_id == trial.id, SampleKit.kit_number == kit_number)
            .with_for_update()
        ).scalar_one_or_none()
        if kit is None:
            raise ValidationFailed(
                "unknown tube set", errors=[FieldProblem("tube_set", "not a tube set of this study")]
            )
        if kit.lab_shipment_id != shipment.id:
            raise ValidationFailed(
                "not in this shipment", errors=[FieldProblem("tube_set", "not in this shipment")]
            )
        if kit.status != T.SHIPPED.value:
            raise Conflict(
                f"tube set already {kit.status}",
                errors=[FieldProblem("tube_set", f"already scanned: {kit.status}")],
            )
        kit.received_at = now
        kit.received_by_name = actor.name
        if reason is None:
            move_sample_kit(session, kit, T.RECEIVED, actor, f"received from {number}", now)
        else:
            kit.reason = reason
            move_sample_kit(session, kit, T.UNUSABLE, actor, reason, now)
        site = session.get(Site, shipment.site_id)
        delay = (now - _aware(kit.collected_at)).total_seconds() / 3600 if kit.collected_at else None
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SAMPLE_RECEIVED,
            object_type="sample_kit",
            object_id=kit_number,
            site_code=site.code if site else None,
            old={"status": "shipped"},
            new={
                "status": kit.status,
                "shipment": number,
                **({"reason": reason} if reason else {}),
                **({"delay_hours": round(delay, 1)} if delay is not None else {}),
            },
            at=now,
        )
        session.flush()
        [row] = _sample_rows(session, trial, limit, SampleKit.id == kit.id)
        return row


def close_receipt(
    ctx: ServiceContext, actor: Actor, trial_code: str, number: str, scope: Scope
) -> tuple[str, ...]:
    """Close the receipt of shipment `number`: tube sets not scanned are recorded missing (unusable,
    "not received"; nothing deleted); the shipment is received. Returns the missing tube sets."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        require_open(trial, session)  # nothing changes once the study's database is locked
        shipment = _shipment(session, trial, number, scope, lock=True)
        if shipment.status != LabShipmentStatus.SHIPPED.value:
            raise Conflict(f"lab shipment {number} is {shipment.status}, not shipped")
        missing: list[str] = []
        for kit in session.execute(
            select(SampleKit)
            .where(SampleKit.lab_shipment_id == shipment.id, SampleKit.status == T.SHIPPED.value)
            .order_by(SampleKit.id)
            .with_for_update()
        ).scalars():
            kit.reason = NOT_RECEIVED
            move_sample_kit(session, kit, T.UNUSABLE, actor, NOT_RECEIVED, now)
            missing.append(kit.kit_number)
        shipment.status = LabShipmentStatus.RECEIVED.value
        shipment.received_at = now
        shipment.received_by_id = actor.user_id
        shipment.received_by_name = actor.name
        site = session.get(Site, shipment.site_id)
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.LAB_SHIPMENT_RECEIVED,
            object_type="lab_shipment",
            object_id=number,
            site_code=site.code if site else None,
            old={"status": "shipped"},
            new={"status": "received", "missing": sorted(missing)},
            at=now,
        )
        return tuple(missing)
