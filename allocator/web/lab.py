"""The cohort's samples on their way to the central lab (issue 20, labship): the site's lab
shipments (prepare from scanned or picked tube sets, print the manifest, ship), the lab's receipt
(scan the manifest, then each tube set, close) and the sample accountability. Thin handlers:
parse, call one service, render or redirect (Post/Redirect/Get)."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

import kits as kitlib
from allocator.notices import N_
from allocator.permissions import Permission, requires
from allocator.services import sites as services_sites
from allocator.services.errors import DomainError
from allocator.services.reports.filters import Window
from allocator.services.samples import accountability as sample_accountability
from allocator.services.samples import lab_shipments
from allocator.web import forms, hygiene
from allocator.web.security import actor, ctx, holds_any, scope

bp = Blueprint("lab", __name__)

_form = forms.text

# Why a sample is unusable (lab_shipments.UNUSABLE_REASONS and NOT_RECEIVED), for the catalogue.
REASON_WORDS = {
    "haemolysed": N_("haemolysed"),
    "insufficient volume": N_("insufficient volume"),
    "leaked": N_("leaked"),
    "too late": N_("too late"),
    "other": N_("other"),
    "not received": N_("not received"),
}


@bp.app_template_filter("sample_reason")
def sample_reason(reason: str) -> str:
    """A recorded reason in the page's language: its category translated, the technician's words kept."""
    category, _sep, note = reason.partition(":")
    key = category.strip().replace("_", " ")
    shown = _(REASON_WORDS[key]) if key in REASON_WORDS else key
    return f"{shown}: {note.strip()}" if note.strip() else shown


@bp.app_template_filter("tube_set")
def tube_set(number: str) -> str:
    return kitlib.format_kit_number(number)


def _tube_set_labels() -> dict[str, str]:
    return {"tube_sets": _("Tube sets"), "site": _("Site")}


def _receipt_labels() -> dict[str, str]:
    return {
        "tube_set": _("Tube set"),
        "reason": _("Why unusable"),
        "note": _("Details"),
        "manifest": _("Manifest"),
    }


def _shown_tube_set(raw: str) -> str:
    """What a refusal calls a scanned or typed tube set: its number (from a label's payload too)."""
    parts = raw.strip().split("/")
    text = parts[2] if len(parts) == 5 else raw.strip()
    try:
        return kitlib.format_kit_number(text)
    except kitlib.KitsError:
        return text[:40]


# --- the site's lab shipments ----------------------------------------------------------------------


LAB_SHIPMENT_PAGE = lab_shipments.LAB_SHIPMENT_PAGE  # lab shipments per page (issue 21)
CURSOR_LENGTH = 20  # a lab shipment number


@bp.route("/trials/<trial>/lab-shipments")
@requires(Permission.LAB_SHIPMENT_PREPARE)
def shipments(trial: str) -> str:
    """The site's collected samples not yet shipped, the form that prepares a shipment, and the
    shipments with their manifest and shipping buttons."""
    within = scope(Permission.LAB_SHIPMENT_PREPARE)
    before = hygiene.query_text("before", max_length=CURSOR_LENGTH)
    page = lab_shipments.shipments(ctx(), trial, within, before=before, limit=LAB_SHIPMENT_PAGE)
    return render_template(
        "lab/shipments.html",
        trial=trial,
        collected=lab_shipments.collected_samples(ctx(), trial, within),
        shipments=page.shipments,
        **forms.page_links(
            "lab.shipments", trial, next_before=page.next_before, before=before, kept={}, anchor="list"
        ),
        before=before,
        sites=[s for s in services_sites.sites(ctx(), trial) if within.allows_site(s.id)],
        limit=lab_shipments.delay_limit(ctx(), trial),
        form=forms.recall(f"{request.path}#prepare"),
    )


@bp.route("/trials/<trial>/lab-shipments", methods=["POST"])
@requires(Permission.LAB_SHIPMENT_PREPARE)
def prepare(trial: str) -> WerkzeugResponse:
    scanned = [line.strip() for line in (request.form.get("tube_sets") or "").splitlines() if line.strip()]
    picked = [value.strip() for value in request.form.getlist("pick") if value.strip()]
    # A refusal names the tube set it is about (the picked ones first, then the scanned lines).
    labels = _tube_set_labels() | {
        f"tube_sets[{index}]": _("Tube set %(number)s", number=_shown_tube_set(raw))
        for index, raw in enumerate([*picked, *scanned])
    }
    return forms.perform(
        lambda: lab_shipments.prepare(
            ctx(),
            actor(Permission.LAB_SHIPMENT_PREPARE),
            trial,
            _form("site"),
            [*picked, *scanned],
            scope(Permission.LAB_SHIPMENT_PREPARE),
        ),
        _("Shipment prepared: print its manifest, put it in the box, then mark it shipped."),
        url_for("lab.shipments", trial=trial) + "#prepare",
        "prepare",
        labels,
    )


@bp.route("/trials/<trial>/lab-shipments/<number>/ship", methods=["POST"])
@requires(Permission.LAB_SHIPMENT_PREPARE)
def ship(trial: str, number: str) -> WerkzeugResponse:
    return forms.perform(
        lambda: lab_shipments.ship(
            ctx(),
            actor(Permission.LAB_SHIPMENT_PREPARE),
            trial,
            number,
            scope(Permission.LAB_SHIPMENT_PREPARE),
        ),
        _("Shipment %(number)s marked shipped.", number=number),
        _back_to_list(trial),
    )


def _back_to_list(trial: str) -> str:
    """The page of the lab shipments list the action was taken from (its cursor kept)."""
    return forms.back_to_list("lab.shipments", trial, {"before": lambda value: len(value) <= CURSOR_LENGTH})


@bp.route("/trials/<trial>/lab-shipments/<number>/manifests", methods=["POST"])
@requires(Permission.LAB_SHIPMENT_PREPARE)
def print_manifest(trial: str, number: str) -> WerkzeugResponse:
    """Print the manifest (a printed document and an audit entry), then show it (PRG: reloading
    the PDF prints nothing)."""
    try:
        document_id, _pdf = lab_shipments.print_manifest(
            ctx(),
            actor(Permission.LAB_SHIPMENT_PREPARE),
            trial,
            number,
            scope(Permission.LAB_SHIPMENT_PREPARE),
        )
    except DomainError as exc:
        forms.flash_error(exc)
        return redirect(_back_to_list(trial), code=303)
    return redirect(url_for("lab.manifest", trial=trial, number=number, document=document_id), code=303)


@bp.route("/trials/<trial>/lab-shipments/<number>/manifests/<document>.pdf")
@requires(Permission.LAB_SHIPMENT_PREPARE)
def manifest(trial: str, number: str, document: str) -> Response:
    """A printed manifest, exactly as printed; viewing it creates nothing."""
    pdf = lab_shipments.manifest_pdf(ctx(), trial, number, document, scope(Permission.LAB_SHIPMENT_PREPARE))
    return Response(
        pdf, mimetype="application/pdf", headers={"Content-Disposition": f'inline; filename="{document}.pdf"'}
    )


# --- the receipt at the central lab ----------------------------------------------------------------


@bp.route("/trials/<trial>/lab-receipt")
@requires(Permission.SAMPLE_RECEIVE)
def receipt_start(trial: str) -> str:
    """Scan the manifest's QR (or type its number); the shipments on their way are listed."""
    within = scope(Permission.SAMPLE_RECEIVE)
    before = hygiene.query_text("before", max_length=CURSOR_LENGTH)
    page = lab_shipments.shipments(
        ctx(),
        trial,
        within,
        before=before,
        limit=LAB_SHIPMENT_PAGE,
        status=lab_shipments.ON_THEIR_WAY,
        samples=False,  # the list names each shipment; its tube sets open with its receipt
    )
    return render_template(
        "lab/receipt_start.html",
        trial=trial,
        in_transit=page.shipments,
        **forms.page_links(
            "lab.receipt_start",
            trial,
            next_before=page.next_before,
            before=before,
            kept={},
            anchor="on-the-way",
        ),
        form=forms.recall(f"{request.path}#manifest"),
    )


@bp.route("/trials/<trial>/lab-receipt", methods=["POST"])
@requires(Permission.SAMPLE_RECEIVE)
def open_receipt(trial: str) -> WerkzeugResponse:
    try:
        number = lab_shipments.open_receipt(ctx(), trial, _form("manifest"), scope(Permission.SAMPLE_RECEIVE))
    except DomainError as exc:
        target = url_for("lab.receipt_start", trial=trial)
        if exc.errors:
            forms.remember(f"{target}#manifest", forms.shown(exc, _receipt_labels()))
        else:
            forms.flash_error(exc, _receipt_labels())
        return redirect(f"{target}#manifest", code=303)
    return redirect(url_for("lab.receipt", trial=trial, number=number), code=303)


@bp.route("/trials/<trial>/lab-receipt/<number>")
@requires(Permission.SAMPLE_RECEIVE)
def receipt(trial: str, number: str) -> str:
    """The receipt of one shipment, made for a phone: one scan field, what was found, the list."""
    return render_template(
        "lab/receipt.html",
        trial=trial,
        shipment=lab_shipments.shipment(ctx(), trial, number, scope(Permission.SAMPLE_RECEIVE)),
        reasons=lab_shipments.UNUSABLE_REASONS,
        limit=lab_shipments.delay_limit(ctx(), trial),
        form=forms.recall(f"{request.path}#scan"),
    )


@bp.route("/trials/<trial>/lab-receipt/<number>/samples", methods=["POST"])
@requires(Permission.SAMPLE_RECEIVE)
def receive_sample(trial: str, number: str) -> WerkzeugResponse:
    outcome = lab_shipments.SampleOutcome(
        scan=_form("tube_set"),
        usable=_form("outcome") != "unusable",
        reason=_form("reason"),
        note=_form("note"),
    )
    return forms.perform(
        lambda: lab_shipments.receive_sample(
            ctx(), actor(Permission.SAMPLE_RECEIVE), trial, number, outcome, scope(Permission.SAMPLE_RECEIVE)
        ),
        _("Recorded: received.") if outcome.usable else _("Recorded: unusable."),
        url_for("lab.receipt", trial=trial, number=number) + "#scan",
        "scan",
        _receipt_labels(),
    )


@bp.route("/trials/<trial>/lab-receipt/<number>/close", methods=["POST"])
@requires(Permission.SAMPLE_RECEIVE)
def close_receipt(trial: str, number: str) -> WerkzeugResponse:
    def act() -> None:
        missing = lab_shipments.close_receipt(
            ctx(), actor(Permission.SAMPLE_RECEIVE), trial, number, scope(Permission.SAMPLE_RECEIVE)
        )
        if missing:
            flash(
                _("%(count)s tube set(s) not scanned: recorded as not received.", count=len(missing)), "error"
            )

    return forms.perform(
        act,
        _("Receipt of %(number)s closed.", number=number),
        url_for("lab.receipt", trial=trial, number=number),
    )


# --- sample accountability -------------------------------------------------------------------------


@bp.route("/trials/<trial>/sample-accountability")
@requires(Permission.SAMPLE_VIEW)
def accountability(trial: str) -> str:
    """The counts per site over every collected sample, and a page of the samples (issue 21: one
    row per tube set collected; the CSV holds every one)."""
    window = Window.parse(hygiene.single_args())
    return render_template(
        "lab/accountability.html",
        trial=trial,
        report=sample_accountability.accountability(
            ctx(), trial, scope(Permission.SAMPLE_VIEW), window=window
        ),
        can_receive=holds_any(Permission.SAMPLE_RECEIVE),
    )


@bp.route("/trials/<trial>/sample-accountability.csv")
@requires(Permission.SAMPLE_VIEW)
def accountability_csv(trial: str) -> Response:
    text = sample_accountability.accountability_csv(ctx(), trial, scope(Permission.SAMPLE_VIEW))
    return Response(
        text,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{trial}-sample-accountability.csv"'},
    )
