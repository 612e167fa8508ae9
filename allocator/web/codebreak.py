"""Offline code-break sheets (UNB-06, UNB-07): the blinded overview with checks and the
reconciliation (monitors, pharmacists, trial managers), and the generation page of the unblinded
statistician and pharmacist, whose forms answer with the PDF of the sheets (filename: the document
id, never an arm)."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator.permissions import Permission, requires
from allocator.services import codebreak
from allocator.services.errors import DomainError
from allocator.services.reports.filters import Window
from allocator.web import forms, hygiene, messages
from allocator.web.security import actor, ctx, current_trial, scope

bp = Blueprint("codebreak", __name__)


_form = forms.text


def _lines(name: str) -> list[str]:
    return [line.strip() for line in (request.form.get(name) or "").splitlines() if line.strip()]


_signature = forms.optional_signature
SHEET_FORMS = ("generate", "replace", "reprint")


def _labels() -> dict[str, str]:
    """The code-break forms' fields as their labels name them."""
    return {
        "sheet_number": _("Sheet number"),
        "status": _("Found"),
        "note": _("Note (required when opened or missing)"),
        "kits": _("Kit numbers"),
        "reason": _("Reason"),
        "password": _("Your password (electronic signature)"),
        "otp": _("Authenticator code"),
    }


def _refused(exc: DomainError, target: str, form_id: str) -> WerkzeugResponse:
    """Back to the form's page, with the errors beside its fields (or at the top) (PRG)."""
    if not exc.errors:
        forms.flash_error(exc, _labels())
        return redirect(target, code=303)
    forms.remember(f"{target}#{form_id}", forms.shown(exc, _labels()))
    return redirect(f"{target}#{form_id}", code=303)


def _pdf(trial: str, make: Callable[[], codebreak.SheetDocument], form_id: str) -> WerkzeugResponse:
    """Run a generation, reprint or replacement: the PDF as an attachment, or back to the page."""
    try:
        document = make()
    except DomainError as exc:
        return _refused(exc, url_for("codebreak.sheets", trial=trial), form_id)
    return Response(
        document.pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document.document_id}.pdf"'},
    )


@bp.route("/trials/<trial>/code-break")
@requires(Permission.CODE_BREAK_CHECK)
def overview(trial: str) -> str:
    """Blinded: the reconciliation of every sheet within reach, a page of the sheets (issue 21: a
    trial of 5,000 subjects has about 19,000; the CSV holds every one) and the check form."""
    window = Window.parse(hygiene.single_args())
    return render_template(
        "codebreak/overview.html",
        trial=trial,
        report=codebreak.reconciliation(ctx(), trial, scope(Permission.CODE_BREAK_CHECK), window=window),
        states=codebreak.STATES,
        statuses=codebreak.CHECK_STATUSES,
        form=forms.recall_for(request.path, "check"),
    )


@bp.route("/trials/<trial>/code-break.csv")
@requires(Permission.CODE_BREAK_CHECK)
def overview_csv(trial: str) -> Response:
    report = codebreak.reconciliation(ctx(), trial, scope(Permission.CODE_BREAK_CHECK))
    return Response(
        codebreak.reconciliation_csv(report),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="code-break-reconciliation-{trial}.csv"'},
    )


@bp.route("/trials/<trial>/code-break/checks", methods=["POST"])
@requires(Permission.CODE_BREAK_CHECK)
def check(trial: str) -> WerkzeugResponse:
    """A monitor or pharmacist records a sheet found intact, opened or missing."""
    try:
        recorded = codebreak.record_check(
            ctx(),
            actor(Permission.CODE_BREAK_CHECK),
            trial,
            _form("sheet_number"),
            _form("status"),
            _form("note"),
            scope(Permission.CODE_BREAK_CHECK),
        )
    except DomainError as exc:
        return _refused(exc, url_for("codebreak.overview", trial=trial), "check")
    else:
        flash(
            _(
                "Sheet %(sheet)s recorded as %(status)s.",
                sheet=recorded.sheet_number,
                status=messages.word(recorded.status),
            ),
            "ok",
        )
        if recorded.discrepancy:
            flash(forms.plain(recorded.discrepancy), "error")
    return redirect(url_for("codebreak.overview", trial=trial), code=303)


def _sheet_verdict(permission: Permission) -> Response:
    return forms.scan_verdict(
        "sheet_number",
        lambda: codebreak.check_sheet(ctx(), current_trial().code, forms.scanned("scan"), scope(permission)),
        ok_message=_("sheet found"),
    )


@bp.route("/trials/<trial>/code-break/sheet-check", methods=["POST"])
@requires(Permission.CODE_BREAK_CHECK)
def sheet_check(trial: str) -> Response:
    """A sheet number scanned on the check form, checked as it arrives (issue 13; JSON)."""
    return _sheet_verdict(Permission.CODE_BREAK_CHECK)


@bp.route("/trials/<trial>/code-break/replacements/check", methods=["POST"])
@requires(Permission.CODE_BREAK_GENERATE)
def replacement_check(trial: str) -> Response:
    """The lost sheet's number scanned on the replacement form, checked as it arrives (JSON)."""
    return _sheet_verdict(Permission.CODE_BREAK_GENERATE)


@bp.route("/trials/<trial>/code-break/sheets")
@requires(Permission.CODE_BREAK_GENERATE)
def sheets(trial: str) -> str:
    """Unblinded roles: generate, reprint and replace sheets (the arm appears only in the PDFs)."""
    return render_template(
        "codebreak/sheets.html",
        trial=trial,
        missing=codebreak.missing_sheets(ctx(), trial),
        documents=codebreak.documents(ctx(), trial),
        # The per-site summary only: no sheet row is put in words (issue 21).
        report=codebreak.reconciliation(
            ctx(), trial, scope(Permission.CODE_BREAK_GENERATE), window=Window(0, 0)
        ),
        states=codebreak.STATES,
        form_states={form_id: forms.recall_for(request.path, form_id) for form_id in SHEET_FORMS},
    )


@bp.route("/trials/<trial>/code-break/sheets", methods=["POST"])
@requires(Permission.CODE_BREAK_GENERATE)
def generate(trial: str) -> WerkzeugResponse:
    kit_numbers = _lines("kits") or None
    return _pdf(
        trial,
        lambda: codebreak.generate_sheets(
            ctx(),
            actor(Permission.CODE_BREAK_GENERATE),
            trial,
            signature=_signature(),
            kit_numbers=kit_numbers,
        ),
        "generate",
    )


@bp.route("/trials/<trial>/code-break/documents/<document_id>/reprint", methods=["POST"])
@requires(Permission.CODE_BREAK_GENERATE)
def reprint(trial: str, document_id: str) -> WerkzeugResponse:
    return _pdf(
        trial,
        lambda: codebreak.reprint_document(
            ctx(),
            actor(Permission.CODE_BREAK_GENERATE),
            trial,
            document_id,
            reason=_form("reason"),
            signature=_signature(),
        ),
        "reprint",
    )


@bp.route("/trials/<trial>/code-break/replacements", methods=["POST"])
@requires(Permission.CODE_BREAK_GENERATE)
def replace(trial: str) -> WerkzeugResponse:
    return _pdf(
        trial,
        lambda: codebreak.replace_sheet(
            ctx(),
            actor(Permission.CODE_BREAK_GENERATE),
            trial,
            _form("sheet_number"),
            reason=_form("reason"),
            signature=_signature(),
        ),
        "replace",
    )
