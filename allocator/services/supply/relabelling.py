"""Relabelling after a batch's expiry changed (issue 19; LBL-05, LBL-09, LBL-12).

`kit_status.update_batch_expiry` marks every kit of the batch not yet dispensed as awaiting a new
expiry label (`Kit.relabel_requested_at`). Such a kit is neither drawn for an allocation
(`stock.draw_usable_kits`, `stock.usable_kits_by_arm`) nor dispensed (`dispensing`) until its
relabelling is confirmed by scanning it. Here: the kits awaiting relabelling per place (a site, or
the depot), the relabelling sheet of a place (its kits' outer labels with the new expiry, the QR
code built exactly as on every kit label: trial, kit number, unit, MAC; recorded and counted as
every printed document, a reprint marked DUPLICATA), and the confirmation by scan (only once a
sheet holding the kit was printed after the latest expiry change). Blinded: kit numbers, statuses
and dates only; batches mix both arms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

import kits as kitlib
from allocator.audit import Action, Actor
from allocator.models import Batch, Kit, PrintedDocument, Site, Trial
from allocator.permissions import Scope
from allocator.services import documents
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import current_definition, get_trial
from allocator.services.supply.kit_rules import KIT_UNIT, S, label_info, mac, number_from_scan, unreadable

KIND = documents.KIT_RELABELS
DEPOT = "depot"


@dataclass(frozen=True, slots=True)
class RelabelKit:
    number: str
    status: str
    expiry: date
    requested_at: datetime
    sheet_printed: bool  # a relabelling sheet holding it was printed since the expiry change


@dataclass(frozen=True, slots=True)
class RelabelPlace:
    place: str  # a site code, or "depot"
    kits: tuple[RelabelKit, ...]


def pending(ctx: ServiceContext, trial_code: str, scope: Scope, *, include_depot: bool) -> list[RelabelPlace]:
    """The kits awaiting relabelling, per site within `scope` (and the depot's when asked)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        sites = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        kits = session.execute(
            select(Kit)
            .where(Kit.trial_id == trial.id, Kit.relabel_requested_at.is_not(None))
            .order_by(Kit.kit_number)
        ).scalars()
        printed = _printed_since(session, trial)
        places: dict[str, list[RelabelKit]] = {}
        for kit in kits:
            place = _place(kit, sites)
            if place is None:
                continue
            if place == DEPOT and not include_depot:
                continue
            if place != DEPOT and (kit.site_id is None or not scope.allows_site(kit.site_id)):
                continue
            if kit.relabel_requested_at is None or kit.expiry_date is None:  # pragma: no cover - the query
                continue
            places.setdefault(place, []).append(
                RelabelKit(
                    number=kit.kit_number,
                    status=kit.status,
                    expiry=kit.expiry_date,
                    requested_at=kit.relabel_requested_at,
                    sheet_printed=any(
                        at >= kit.relabel_requested_at for at in printed.get(kit.kit_number, ())
                    ),
                )
            )
        return [
            RelabelPlace(place, tuple(kits_of))
            for place, kits_of in sorted(places.items(), key=lambda item: (item[0] == DEPOT, item[0]))
        ]


def print_sheet(
    ctx: ServiceContext, actor: Actor, trial_code: str, place: str, *, scope: Scope, depot: bool
) -> tuple[str, bytes]:
    """The relabelling sheet of `place` (a site code, or "depot" for the depot's staff): the outer
    labels, with the new expiry, of every kit there awaiting relabelling. Returns (document id, PDF)."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        sites = {
            s.id: s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()
        }
        condition: ColumnElement[bool]
        if place == DEPOT and depot:
            condition = Kit.site_id.is_(None) & (Kit.status == S.AT_DEPOT.value)
        else:
            site_id = next((i for i, code in sites.items() if code == place), None)
            if site_id is None or not scope.allows_site(site_id):
                raise NotFound(
                    f"no site {place!r} within your reach", errors=[FieldProblem("site", "unknown site")]
                )
            condition = Kit.site_id == site_id
        rows = session.execute(
            select(Kit, Batch.lot_code)
            .join(Batch, Batch.id == Kit.batch_id)
            .where(Kit.trial_id == trial.id, Kit.relabel_requested_at.is_not(None), condition)
            .order_by(Kit.kit_number)
        ).all()
        if not rows:
            raise Conflict(
                "no kit there awaits relabelling", errors=[FieldProblem("site", "no kit to relabel")]
            )
        numbers = [kit.kit_number for kit, _ in rows]
        latest = max(kit.relabel_requested_at for kit, _ in rows if kit.relabel_requested_at is not None)
        printed = _printed_since(session, trial)
        # A sheet for the same kits printed again since the latest change is a reprint (LBL-12).
        reprint = max(
            (sum(1 for at in printed.get(n, ()) if at >= latest) for n in numbers),
            default=0,
        )
        labels = [
            kitlib.KitLabel(
                kit_number=kit.kit_number,
                qr_payload=kitlib.build_payload(trial.code, kit.kit_number, KIT_UNIT, mac(ctx)),
                batch=lot,
                expiry=_expiry(kit.expiry_date),
                unit=KIT_UNIT,
                site_code=sites.get(kit.site_id or -1, "DEPOT"),
            )
            for kit, lot in rows
        ]
        document_id = documents.next_document_id(session, trial, "RLB")
        meta = kitlib.DocumentMeta(
            document_id=document_id, created_at=now, reprint_number=documents.checked_reprint_number(reprint)
        )
        pdf = kitlib.render_label_sheet(
            label_info(definition, ctx.settings.env), labels, kind=kitlib.LabelKind.OUTER, document=meta
        )
        documents.record_print(
            ctx,
            session,
            actor,
            trial,
            kind=KIND,
            document_id=document_id,
            pdf=pdf,
            items=numbers,
            now=now,
            reprint_number=reprint,
            audit={"kind": KIND, "kits": len(numbers), "reprint": reprint},
            site_code=None if place == DEPOT else place,
        )
        return document_id, pdf


def confirm(
    ctx: ServiceContext, actor: Actor, trial_code: str, raw: str, *, scope: Scope, depot: bool
) -> str:
    """Confirm a kit's new label by scanning it (or typing its number): the kit may be drawn and
    dispensed again. Returns the kit number. Refused, naming the field `kit`, for an unreadable
    scan, a kit out of reach, a kit awaiting no relabelling, or one whose sheet was not printed."""
    try:
        number = number_from_scan(raw, trial_code, ctx)
    except kitlib.KitsError as exc:
        raise ValidationFailed(
            "the kit cannot be read", errors=[FieldProblem("kit", unreadable(exc))]
        ) from None
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        kit = session.execute(
            select(Kit).where(Kit.trial_id == trial.id, Kit.kit_number == number).with_for_update()
        ).scalar_one_or_none()
        if (
            kit is None
            or (kit.site_id is None and not depot)
            or (kit.site_id is not None and not scope.allows_site(kit.site_id))
        ):
            raise NotFound(
                f"no kit {kitlib.format_kit_number(number)} within your reach",
                errors=[FieldProblem("kit", "not within your reach")],
            )
        requested = kit.relabel_requested_at
        if requested is None:
            raise Conflict(
                "this kit awaits no relabelling", errors=[FieldProblem("kit", "awaits no relabelling")]
            )
        if not any(at >= requested for at in _printed_since(session, trial, number).get(number, ())):
            raise Conflict(
                "print the relabelling sheet first",
                errors=[FieldProblem("kit", "its new label has not been printed yet")],
            )
        kit.relabel_requested_at = None
        site = session.get(Site, kit.site_id) if kit.site_id else None
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.KIT_RELABELLED,
            object_type="kit",
            object_id=number,
            site_code=site.code if site else None,
            new={"expiry": kit.expiry_date.isoformat() if kit.expiry_date else None},
            at=now,
        )
        return number


def _place(kit: Kit, sites: dict[int, str]) -> str | None:
    if kit.site_id is not None:
        return sites.get(kit.site_id)
    if kit.status == S.AT_DEPOT.value:
        return DEPOT
    return None  # in transit: listed at its site once received


def _printed_since(session: Session, trial: Trial, only: str | None = None) -> dict[str, list[datetime]]:
    """When each kit was on a relabelling sheet (every print, reprints included)."""
    out: dict[str, list[datetime]] = {}
    for items, at in session.execute(
        select(PrintedDocument.items, PrintedDocument.printed_at).where(
            PrintedDocument.trial_id == trial.id, PrintedDocument.kind == KIND
        )
    ).all():
        for item in items:
            if only is None or item == only:
                out.setdefault(item, []).append(at)
    return out


def _expiry(value: date | None) -> kitlib.Expiry:
    if value is None:  # pragma: no cover - every stored kit has an expiry
        raise Conflict("a kit without an expiry date cannot be labelled")
    return kitlib.Expiry(value.year, value.month)
