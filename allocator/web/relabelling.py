"""Relabelling pages (issue 19): the kits awaiting a new expiry label per site (and at the depot),
the relabelling sheet of a place (PDF), and the confirmation by scan. Blinded: kit numbers,
statuses and dates only."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

import kits as kitlib
from allocator.permissions import Permission, requires
from allocator.services.errors import DomainError
from allocator.services.supply import relabelling as supply_relabelling
from allocator.web import forms
from allocator.web.security import actor, ctx, holds_any, scope

bp = Blueprint("relabelling", __name__)


def _labels() -> dict[str, str]:
    return {"kit": _("Kit (scan its new label)"), "site": _("Site")}


@bp.route("/trials/<trial>/relabelling")
@requires(Permission.KIT_VIEW)
def page(trial: str) -> str:
    return render_template(
        "supply/relabelling.html",
        trial=trial,
        places=supply_relabelling.pending(
            ctx(), trial, scope(Permission.KIT_VIEW), include_depot=scope(Permission.KIT_VIEW).all_sites
        ),
        can_site=holds_any(Permission.KIT_MANAGE),
        can_depot=holds_any(Permission.SHIPMENT_MANAGE),
    )


def _sheet(trial: str, place: str, permission: Permission, depot: bool) -> WerkzeugResponse:
    try:
        document_id, pdf = supply_relabelling.print_sheet(
            ctx(), actor(permission), trial, place, scope=scope(permission), depot=depot
        )
    except DomainError as exc:
        forms.flash_error(exc, _labels())
        return redirect(url_for("relabelling.page", trial=trial), code=303)
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document_id}.pdf"'},
    )


@bp.route("/trials/<trial>/relabelling/sheet", methods=["POST"])
@requires(Permission.KIT_MANAGE)
def sheet(trial: str) -> WerkzeugResponse:
    """A site pharmacist prints the relabelling sheet of their site."""
    return _sheet(trial, forms.text("site"), Permission.KIT_MANAGE, depot=False)


@bp.route("/trials/<trial>/depot/relabelling/sheet", methods=["POST"])
@requires(Permission.SHIPMENT_MANAGE)
def depot_sheet(trial: str) -> WerkzeugResponse:
    """The depot prints the relabelling sheet of its kits."""
    return _sheet(trial, supply_relabelling.DEPOT, Permission.SHIPMENT_MANAGE, depot=True)


def _confirm(trial: str, permission: Permission, depot: bool) -> WerkzeugResponse:
    try:
        number = supply_relabelling.confirm(
            ctx(), actor(permission), trial, forms.text("kit"), scope=scope(permission), depot=depot
        )
    except DomainError as exc:
        forms.flash_error(exc, _labels())
    else:
        flash(
            _(
                "Kit %(kit)s relabelled: it can be allocated and dispensed again.",
                kit=kitlib.format_kit_number(number),
            ),
            "ok",
        )
    return redirect(url_for("relabelling.page", trial=trial), code=303)


@bp.route("/trials/<trial>/relabelling/confirm", methods=["POST"])
@requires(Permission.KIT_MANAGE)
def confirm(trial: str) -> WerkzeugResponse:
    """A site pharmacist confirms a kit's new label by scanning it."""
    return _confirm(trial, Permission.KIT_MANAGE, depot=False)


@bp.route("/trials/<trial>/depot/relabelling/confirm", methods=["POST"])
@requires(Permission.SHIPMENT_MANAGE)
def depot_confirm(trial: str) -> WerkzeugResponse:
    """The depot confirms a kit's new label by scanning it."""
    return _confirm(trial, Permission.SHIPMENT_MANAGE, depot=True)
