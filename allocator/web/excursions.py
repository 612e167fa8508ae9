"""Temperature excursion pages (issue 19): the list and the report form, one excursion with its kits
and the sponsor's signed decision, the logger's file. Blinded: counts, kit numbers and statuses only,
never an arm (the report quarantines both arms alike)."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator.permissions import Permission, requires
from allocator.services import sites
from allocator.services.errors import DomainError, bad_character
from allocator.services.subjects import views
from allocator.services.supply import excursions as supply_excursions
from allocator.web import forms, hygiene
from allocator.web.security import actor, ctx, holds_any, scope

bp = Blueprint("excursions", __name__)

REPORT_FORM = "report"
EXCURSION_PAGE = supply_excursions.EXCURSION_PAGE  # excursions per page of the list (issue 21)
SITE_FILTER_LENGTH = 10  # a site code
CURSOR_LENGTH = 20  # an excursion number


def _labels() -> dict[str, str]:
    return {
        "place": _("Where"),
        "shipment": _("Shipment"),
        "site": _("Site"),
        "minimum": _("Lowest temperature (°C)"),
        "maximum": _("Highest temperature (°C)"),
        "duration_minutes": _("Duration outside 2-8 °C (minutes)"),
        "logger": _("Temperature logger file"),
        "password": _("Your password (electronic signature)"),
        "otp": _("Authenticator code (if you use one)"),
        "decision": _("Decision"),
        "reason": _("Reason"),
    }


def _logger() -> supply_excursions.LoggerFile | None:
    upload = request.files.get("logger")
    if upload is None or not upload.filename:
        return None
    return supply_excursions.LoggerFile(name=upload.filename, content=upload.read())


def _report(trial: str, permission: Permission) -> WerkzeugResponse:
    page = url_for("excursions.excursions", trial=trial, shipment=forms.text("shipment") or None)
    try:
        view = supply_excursions.report_excursion(
            ctx(),
            actor(permission),
            trial,
            place=forms.text("place"),
            shipment_number=forms.text("shipment"),
            site_code=forms.text("site"),
            minimum=forms.text("minimum"),
            maximum=forms.text("maximum"),
            duration_minutes=forms.text("duration_minutes"),
            note=forms.text("note"),
            logger=_logger(),
            scope=scope(permission),
            signature=forms.optional_signature(),
        )
    except DomainError as exc:
        if not exc.errors:
            forms.flash_error(exc, _labels())
            return redirect(page, code=303)
        forms.remember(
            f"{url_for('excursions.excursions', trial=trial)}#{REPORT_FORM}", forms.shown(exc, _labels())
        )
        return redirect(f"{page}#{REPORT_FORM}", code=303)
    flash(
        _("Excursion %(number)s reported: %(count)s kit(s) in quarantine until the sponsor decides.")
        % {"number": view.number, "count": view.kit_count},
        "ok",
    )
    return redirect(url_for("excursions.excursion", trial=trial, number=view.number), code=303)


def _prefill(value: str | None) -> str:
    """The report form's shipment number as the link gave it (the receipt's logger question), at
    most a shipment number long; one holding a character no number holds is left out."""
    value = (value or "").strip()[:CURSOR_LENGTH]
    return "" if bad_character(value) else value


@bp.route("/trials/<trial>/excursions")
@requires(Permission.KIT_VIEW)
def excursions(trial: str) -> str:
    """The excursions of the sites within reach, a page of EXCURSION_PAGE, newest first, optionally
    of one site and one status (issue 21); the report form for the site pharmacist and the depot.
    `?shipment=SH-0001` opens the form for that shipment (the receipt's logger question)."""
    site_scope = scope(Permission.KIT_VIEW)
    site = hygiene.query_text("site", max_length=SITE_FILTER_LENGTH)
    status = hygiene.query_text("status", max_length=12)
    before = hygiene.query_text("before", max_length=CURSOR_LENGTH)
    page = supply_excursions.excursions(
        ctx(), trial, site_scope, before=before, limit=EXCURSION_PAGE, site=site, status=status
    )
    can_site = holds_any(Permission.KIT_MANAGE)
    can_depot = holds_any(Permission.SHIPMENT_MANAGE)
    reach = scope(Permission.KIT_MANAGE) if can_site else scope(Permission.SHIPMENT_MANAGE)
    return render_template(
        "supply/excursions.html",
        trial=trial,
        rows=page.excursions,
        **forms.page_links(
            "excursions.excursions",
            trial,
            next_before=page.next_before,
            before=before,
            kept={"site": site, "status": status},
            anchor="list",
        ),
        site=site,
        status=status,
        statuses=supply_excursions.EXCURSION_STATUSES,
        site_choices=views.site_choices(ctx(), trial, site_scope),
        can_report=can_site or can_depot,
        report_action=url_for("excursions.report" if can_site else "excursions.depot_report", trial=trial),
        sites=[s for s in sites.sites(ctx(), trial) if reach.allows_site(s.id)]
        if (can_site or can_depot)
        else [],
        shipment=_prefill(request.args.get("shipment")),
        form=forms.recall_for(request.path, REPORT_FORM),
    )


@bp.route("/trials/<trial>/excursions", methods=["POST"])
@requires(Permission.KIT_MANAGE)
def report(trial: str) -> WerkzeugResponse:
    """A site pharmacist reports an excursion (a shipment to their site, or their refrigerator)."""
    return _report(trial, Permission.KIT_MANAGE)


@bp.route("/trials/<trial>/depot/excursions", methods=["POST"])
@requires(Permission.SHIPMENT_MANAGE)
def depot_report(trial: str) -> WerkzeugResponse:
    """The depot reports an excursion (a shipment in transit, any site)."""
    return _report(trial, Permission.SHIPMENT_MANAGE)


@bp.route("/trials/<trial>/excursions/<number>")
@requires(Permission.KIT_VIEW)
def excursion(trial: str, number: str) -> str:
    return render_template(
        "supply/excursion.html",
        trial=trial,
        e=supply_excursions.excursion(ctx(), trial, number, scope(Permission.KIT_VIEW)),
        can_decide=holds_any(Permission.SHIPMENT_MANAGE),
    )


@bp.route("/trials/<trial>/excursions/<number>/logger")
@requires(Permission.KIT_VIEW)
def logger(trial: str, number: str) -> Response:
    """The logger's file as reported, under a name of our making (never the uploaded one)."""
    kind, content = supply_excursions.logger_file(ctx(), trial, number, scope(Permission.KIT_VIEW))
    return Response(
        content,
        mimetype=supply_excursions.LOGGER_TYPES[kind],
        headers={"Content-Disposition": f'attachment; filename="logger-{number}.{kind}"'},
    )


@bp.route("/trials/<trial>/excursions/<number>/decision", methods=["POST"])
@requires(Permission.SHIPMENT_MANAGE)
def decide(trial: str, number: str) -> WerkzeugResponse:
    """The sponsor's signed decision: release the kits, or destroy them."""
    decision = forms.text("decision")
    return forms.perform(
        lambda: supply_excursions.decide_excursion(
            ctx(),
            actor(Permission.SHIPMENT_MANAGE),
            trial,
            number,
            decision,
            reason=forms.text("reason"),
            signature=forms.optional_signature(),
        ),
        _("Decision recorded (signed): the kits are released.")
        if decision == "release"
        else _("Decision recorded (signed): the kits are to be destroyed."),
        url_for("excursions.excursion", trial=trial, number=number),
        None,
        _labels(),
    )
