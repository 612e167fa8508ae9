"""Kit supply pages: stock, shipments and receipt, kit status changes, labels, reconciliation,
batches, kit lists. Blinded everywhere but the kit-list pages of the unblinded statistician."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

import kits as kitlib
from allocator.permissions import NO_SCOPE, Permission, requires
from allocator.services import sites
from allocator.services.errors import DomainError, FieldProblem, ValidationFailed
from allocator.services.subjects import views
from allocator.services.supply import dashboard as supply_dashboard
from allocator.services.supply import disposal as supply_disposal
from allocator.services.supply import kit_lists, kit_rules
from allocator.services.supply import kit_status as supply_kit_status
from allocator.services.supply import labels as supply_labels
from allocator.services.supply import reconciliation as supply_reconciliation
from allocator.services.supply import shipments as supply_shipments
from allocator.services.supply import stock as supply_stock
from allocator.web import forms, hygiene, messages
from allocator.web.i18n import plain_number
from allocator.web.security import actor, ctx, holds_any, scope

bp = Blueprint("supply", __name__)


_form = forms.text
_signature = forms.optional_signature
_flash_error = forms.flash_error


def _perform(action: Callable[[], object], success: str, target: str) -> WerkzeugResponse:
    try:
        action()
    except DomainError as exc:
        _flash_error(exc)
    else:
        flash(success, "ok")
    return redirect(target, code=303)


def _int(name: str) -> int:
    raw = plain_number(_form(name))  # "1 200" as French users type it
    return hygiene.whole_number(raw, name, f"invalid {name}", "must be a whole number")


def _date(name: str) -> date:
    try:
        return date.fromisoformat(_form(name))
    except ValueError:
        raise ValidationFailed(
            f"{name} is not a date", errors=[FieldProblem(name, "must be a date (YYYY-MM-DD)")]
        ) from None


def _lines(name: str) -> list[str]:
    return [line.strip() for line in (request.form.get(name) or "").splitlines() if line.strip()]


def _trial_wide(permission: Permission) -> bool:
    return scope(permission).all_sites


@bp.route("/trials/<trial>/stock")
@requires(Permission.KIT_VIEW)
def stock(trial: str) -> str:
    visible = scope(Permission.KIT_VIEW)
    return render_template(
        "supply/stock.html",
        trial=trial,
        rows=supply_stock.stock(ctx(), trial, visible, include_depot=visible.all_sites),
        batches=supply_kit_status.batches(ctx(), trial) if visible.all_sites else [],
        can_manage=holds_any(Permission.KIT_MANAGE),
        statuses=kit_rules.STATUSES,
    )


@bp.route("/trials/<trial>/kits/status", methods=["POST"])
@requires(Permission.KIT_MANAGE)
def kit_status(trial: str) -> WerkzeugResponse:
    """A site pharmacist records a kit's new status (quarantine and release are signed)."""
    return _perform(
        lambda: supply_kit_status.change_status(
            ctx(),
            actor(Permission.KIT_MANAGE),
            trial,
            _form("kit_number"),
            _form("status"),
            reason=_form("reason"),
            scope=scope(Permission.KIT_MANAGE),
            depot=False,
            signature=_signature(),
        ),
        "Kit status recorded.",
        url_for("supply.stock", trial=trial),
    )


@bp.route("/trials/<trial>/depot/kits/status", methods=["POST"])
@requires(Permission.SHIPMENT_MANAGE)
def depot_kit_status(trial: str) -> WerkzeugResponse:
    """The supply manager records the status of a kit still at the depot."""
    return _perform(
        lambda: supply_kit_status.change_status(
            ctx(),
            actor(Permission.SHIPMENT_MANAGE),
            trial,
            _form("kit_number"),
            _form("status"),
            reason=_form("reason"),
            scope=NO_SCOPE,
            depot=True,
            signature=_signature(),
        ),
        "Depot kit status recorded.",
        url_for("supply.stock", trial=trial),
    )


@bp.route("/trials/<trial>/kits/labels", methods=["POST"])
@requires(Permission.KIT_MANAGE)
def labels(trial: str) -> WerkzeugResponse:
    try:
        document_id, pdf = supply_labels.print_kit_labels(
            ctx(),
            actor(Permission.KIT_MANAGE),
            trial,
            _lines("kits"),
            kind=_form("kind") or "outer",
            scope=scope(Permission.KIT_MANAGE),
            depot=False,
        )
    except DomainError as exc:
        _flash_error(exc)
        return redirect(url_for("supply.stock", trial=trial), code=303)
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document_id}.pdf"'},
    )


SHIPMENT_PAGE = supply_shipments.SHIPMENT_PAGE  # shipments per page of the list (issue 21)
SITE_FILTER_LENGTH = 10  # a site code
CURSOR_LENGTH = 20  # a shipment number
DISPOSAL_PAGE = supply_disposal.DISPOSAL_PAGE  # records per page of the returns page (issue 21)
DISPOSAL_CURSOR_LENGTH = 40  # a record number (RET-<site>-0001)


@bp.route("/trials/<trial>/shipments")
@requires(Permission.KIT_VIEW)
def shipments(trial: str) -> str:
    """A page of SHIPMENT_PAGE shipments, newest first, optionally of one site and one status
    (issue 21: a trial ships for years; the list is paged, not the whole history)."""
    within = scope(Permission.KIT_VIEW)
    site = hygiene.query_text("site", max_length=SITE_FILTER_LENGTH)
    status = hygiene.query_text("status", max_length=12)
    before = hygiene.query_text("before", max_length=CURSOR_LENGTH)
    page = supply_shipments.shipments(
        ctx(),
        trial,
        within,
        before=before,
        limit=SHIPMENT_PAGE,
        site=site,
        status=status,
    )
    return render_template(
        "supply/shipments.html",
        trial=trial,
        shipments=page.shipments,
        **forms.page_links(
            "supply.shipments",
            trial,
            next_before=page.next_before,
            before=before,
            kept={"site": site, "status": status},
            anchor="list",
        ),
        before=before,
        site=site,
        status=status,
        site_choices=views.site_choices(ctx(), trial, within),
        statuses=supply_shipments.SHIPMENT_STATUSES,
        sites=sites.sites(ctx(), trial),
        can_ship=holds_any(Permission.SHIPMENT_MANAGE) and _trial_wide(Permission.KIT_VIEW),
    )


@bp.route("/trials/<trial>/shipments/<number>")
@requires(Permission.KIT_VIEW)
def shipment(trial: str, number: str) -> str:
    """One shipment and its kits, in order: the depot's packing list, the site's check of the
    parcel (kit numbers only, never an arm). A site's staff see the numbers once the parcel is
    received: before, the list would let a receipt be typed from the screen instead of from the
    kits in hand (the receipt asks for every kit scanned; a kit missing is recorded with a reason)."""
    view = supply_shipments.shipment(ctx(), trial, number, scope(Permission.KIT_VIEW))
    return render_template(
        "supply/shipment.html",
        trial=trial,
        shipment=view,
        kits_shown=_trial_wide(Permission.KIT_VIEW) or view.status == "received",
    )


@bp.route("/trials/<trial>/shipments", methods=["POST"])
@requires(Permission.SHIPMENT_MANAGE)
def create_shipment(trial: str) -> WerkzeugResponse:
    return _perform(
        lambda: supply_shipments.create_shipment(
            ctx(), actor(Permission.SHIPMENT_MANAGE), trial, _form("site"), _int("count")
        ),
        "Shipment prepared: balanced across arms, kits chosen at random.",
        url_for("supply.shipments", trial=trial),
    )


@bp.route("/trials/<trial>/shipments/<number>/ship", methods=["POST"])
@requires(Permission.SHIPMENT_MANAGE)
def ship(trial: str, number: str) -> WerkzeugResponse:
    def act() -> None:
        taken_out = supply_shipments.ship(ctx(), actor(Permission.SHIPMENT_MANAGE), trial, number)
        if taken_out:
            shown = ", ".join(kitlib.format_kit_number(n) for n in taken_out)
            flash(f"Taken out of the shipment (no longer in depot stock): {shown}.", "error")

    return _perform(act, f"Shipment {number} dispatched.", _back_to_list(trial))


@bp.route("/trials/<trial>/shipments/<number>/receive", methods=["POST"])
@requires(Permission.KIT_MANAGE)
def receive(trial: str, number: str) -> WerkzeugResponse:
    """The site pharmacist scans (or types) every kit of the shipment, after answering whether the
    parcel's temperature logger shows an excursion: yes opens the excursion report (issue 19),
    and once the excursion is reported ("reported"), the receipt records the yes with it."""
    answer = _form("logger_excursion")
    if answer == "yes":
        flash(_("Report the excursion first: the kits are quarantined, then confirm the receipt."), "error")
        return redirect(url_for("excursions.excursions", trial=trial, shipment=number) + "#report", code=303)

    def act() -> None:
        if answer not in ("no", "reported"):
            raise ValidationFailed(
                "does the logger show an excursion?",
                errors=[FieldProblem("logger_excursion", "answer yes or no")],
            )
        receipt = supply_shipments.receive(
            ctx(),
            actor(Permission.KIT_MANAGE),
            trial,
            number,
            _lines("kits"),
            scope=scope(Permission.KIT_MANAGE),
            missing_reason=_form("missing_reason"),
            logger_excursion=answer == "reported",
        )
        if receipt.missing:
            flash(f"{len(receipt.missing)} kit(s) recorded lost.", "error")
        if receipt.held:
            shown = ", ".join(kitlib.format_kit_number(n) for n in receipt.held)
            flash(f"Kept in their current status (not in transit): {shown}.", "error")

    return _perform(act, f"Shipment {number} received.", _back_to_list(trial))


def _back_to_list(trial: str) -> str:
    """The page of the shipments list the action was taken from, filters and cursor kept."""
    return forms.back_to_list(
        "supply.shipments",
        trial,
        {
            "site": lambda value: len(value) <= SITE_FILTER_LENGTH,
            "status": lambda value: value in supply_shipments.SHIPMENT_STATUSES,
            "before": lambda value: len(value) <= CURSOR_LENGTH,
        },
    )


def _held_note(note: str) -> str:
    status = note.split(":", 1)[0]
    return forms.plain(note, {status: messages.word(status)})


@bp.route("/trials/<trial>/shipments/<number>/receive/check", methods=["POST"])
@requires(Permission.KIT_MANAGE)
def receive_check(trial: str, number: str) -> Response:
    """One kit scanned at the receipt, checked as it arrives (issue 13; JSON for static/scan.js)."""
    return forms.scan_verdict(
        "kits",
        lambda: supply_shipments.check_received_kit(
            ctx(), trial, number, forms.scanned("scan"), scope=scope(Permission.KIT_MANAGE)
        ),
        ok_message=_("in this shipment"),
        notes=lambda found: [_held_note(found[1])] if isinstance(found, tuple) and found[1] else [],
    )


@bp.route("/trials/<trial>/supply")
@requires(Permission.KIT_VIEW)
def dashboard(trial: str) -> str:
    """Per site: courses on hand, days of supply, shipments on the way, kits expiring within
    `within` days (default 30), quarantined kits. Counts only, never by arm (issue 19)."""
    raw = (hygiene.query_text("within", max_length=32) or "30").strip()
    within = hygiene.whole_number(
        raw, "within", "invalid number of days", "a whole number of days from 1 to 365"
    )
    view = supply_dashboard.dashboard(ctx(), trial, scope(Permission.KIT_VIEW), within_days=within)
    return render_template("supply/dashboard.html", trial=trial, board=view)


@bp.route("/trials/<trial>/reconciliation")
@requires(Permission.KIT_VIEW)
def reconciliation(trial: str) -> str:
    visible = scope(Permission.KIT_VIEW)
    report = supply_reconciliation.reconciliation(ctx(), trial, visible, include_depot=visible.all_sites)
    return render_template(
        "supply/reconciliation.html",
        trial=trial,
        report=report,
        statuses=kit_rules.STATUSES,
        status_words={status: messages.word(status) for status in kit_rules.STATUSES},
    )


@bp.route("/trials/<trial>/reconciliation.csv")
@requires(Permission.KIT_VIEW)
def reconciliation_csv(trial: str) -> Response:
    visible = scope(Permission.KIT_VIEW)
    report = supply_reconciliation.reconciliation(ctx(), trial, visible, include_depot=visible.all_sites)
    return Response(
        supply_reconciliation.reconciliation_csv(report),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="kit-reconciliation-{trial}.csv"'},
    )


@bp.route("/trials/<trial>/batches/<lot>/expiry", methods=["POST"])
@requires(Permission.SHIPMENT_MANAGE)
def batch_expiry(trial: str, lot: str) -> WerkzeugResponse:
    def act() -> None:
        signature = _signature()
        if signature is None:
            raise ValidationFailed("this change is signed", errors=[FieldProblem("password", "is required")])
        supply_kit_status.update_batch_expiry(
            ctx(),
            actor(Permission.SHIPMENT_MANAGE),
            trial,
            lot,
            _date("expiry"),
            reason=_form("reason"),
            signature=signature,
        )

    return _perform(act, f"Expiry of batch {lot} changed (signed).", url_for("supply.stock", trial=trial))


def _kit_list_labels(exc: DomainError) -> dict[str, str]:
    """The kit-list forms' fields as their labels name them, and a line of an imported file by its
    number ("line 3" in the service's words)."""
    labels = {
        "count": _("Number of kits"),
        "lot_code": _("Packaging lot (blinded)"),
        "expiry": _("Expiry"),
        "file": _("File"),
        "kit_type": _("kit type"),
    }
    for problem in exc.errors:
        number = problem.field.removeprefix("line ")
        if number != problem.field and number.isdigit():
            labels[problem.field] = _("Line %(number)s of the file", number=int(number))
    return labels


def _kit_list_action(action: Callable[[], object], success: str, trial: str) -> WerkzeugResponse:
    try:
        action()
    except DomainError as exc:
        _flash_error(exc, _kit_list_labels(exc))
    else:
        flash(success, "ok")
    return redirect(url_for("lists.manage", trial=trial), code=303)


@bp.route("/trials/<trial>/kit-lists", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def generate_kit_list(trial: str) -> WerkzeugResponse:
    return _kit_list_action(
        lambda: kit_lists.generate_kit_list(
            ctx(),
            actor(Permission.LIST_MANAGE),
            trial,
            count=_int("count"),
            lot_code=_form("lot_code"),
            expiry=_date("expiry"),
        ),
        "Kit list generated: the kits are at the depot.",
        trial,
    )


@bp.route("/trials/<trial>/kit-lists/import", methods=["POST"])
@requires(Permission.LIST_MANAGE)
def import_kit_list(trial: str) -> WerkzeugResponse:
    upload = request.files.get("file")

    def act() -> None:
        if upload is None or not upload.filename:
            raise ValidationFailed("choose a file", errors=[FieldProblem("file", "is required")])
        try:
            text = upload.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationFailed("not UTF-8", errors=[FieldProblem("file", "must be UTF-8 CSV")]) from None
        kit_lists.import_kit_list(ctx(), actor(Permission.LIST_MANAGE), trial, text, upload.filename)

    return _kit_list_action(act, "Kit list imported: the kits are at the depot.", trial)


# --- returns and destruction (issue 19) -------------------------------------------------------


@bp.route("/trials/<trial>/returns")
@requires(Permission.KIT_VIEW)
def returns(trial: str) -> str:
    """Kits returned to the depot or destroyed on site, with their documents (never by arm): a
    page of DISPOSAL_PAGE records, newest first, optionally of one site and one kind (issue 21)."""
    within = scope(Permission.KIT_VIEW)
    site = hygiene.query_text("site", max_length=SITE_FILTER_LENGTH)
    kind = hygiene.query_text("kind", max_length=12)
    before = hygiene.query_text("before", max_length=DISPOSAL_CURSOR_LENGTH)
    page = supply_disposal.disposals(
        ctx(), trial, within, before=before, limit=DISPOSAL_PAGE, site=site, kind=kind
    )
    return render_template(
        "supply/returns.html",
        trial=trial,
        records=page.records,
        **forms.page_links(
            "supply.returns",
            trial,
            next_before=page.next_before,
            before=before,
            kept={"site": site, "kind": kind},
            anchor="records",
        ),
        site=site,
        kind=kind,
        kinds=supply_disposal.KINDS,
        site_choices=views.site_choices(ctx(), trial, within),
        can_manage=holds_any(Permission.KIT_MANAGE),
    )


def _dispose(trial: str, kind: str) -> WerkzeugResponse:
    def act() -> None:
        number = supply_disposal.record(
            ctx(),
            actor(Permission.KIT_MANAGE),
            trial,
            kind,
            _lines("kits"),
            method=_form("method"),
            witness=_form("witness"),
            scope=scope(Permission.KIT_MANAGE),
            signature=_signature() if kind == supply_disposal.DESTRUCTION else None,
        )
        if kind == supply_disposal.DESTRUCTION:
            flash(
                _("Destruction %(number)s recorded (signed): download its certificate below.", number=number),
                "ok",
            )
        else:
            flash(
                _(
                    "Return %(number)s recorded: print its return form below and send it with the kits.",
                    number=number,
                ),
                "ok",
            )

    try:
        act()
    except DomainError as exc:
        _flash_error(exc, _disposal_labels(exc))
    return redirect(url_for("supply.returns", trial=trial), code=303)


def _disposal_labels(exc: DomainError) -> dict[str, str]:
    """The fields of the returns and destruction forms as their labels name them; a scanned line
    by its number (kits[0] is line 1)."""
    labels = {
        "kits": _("Kits"),
        "method": _("Method"),
        "witness": _("Witness"),
        "password": _("Your password (electronic signature)"),
        "otp": _("Authenticator code (if you use one)"),
    }
    for problem in exc.errors:
        if problem.field.startswith("kits[") and problem.field[5:-1].isdigit():
            labels[problem.field] = _("Kit line %(number)s", number=int(problem.field[5:-1]) + 1)
    return labels


@bp.route("/trials/<trial>/returns", methods=["POST"])
@requires(Permission.KIT_MANAGE)
def record_return(trial: str) -> WerkzeugResponse:
    """A site pharmacist scans the kits sent back to the depot."""
    return _dispose(trial, supply_disposal.RETURN)


@bp.route("/trials/<trial>/destructions", methods=["POST"])
@requires(Permission.KIT_MANAGE)
def record_destruction(trial: str) -> WerkzeugResponse:
    """A site pharmacist scans the kits destroyed on site and signs (re-authentication)."""
    return _dispose(trial, supply_disposal.DESTRUCTION)


@bp.route("/trials/<trial>/returns/<number>.pdf")
@requires(Permission.KIT_VIEW)
def disposal_document(trial: str, number: str) -> Response:
    """The return form or destruction certificate exactly as printed (creates nothing)."""
    document_id, pdf = supply_disposal.document(ctx(), trial, number, scope(Permission.KIT_VIEW))
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document_id}.pdf"'},
    )
