"""Unblinding drills (UNB-11): the trial manager's page of drill subjects, and the unblinded roles'
page that prints a drill subject's sealed code-break sheet. The drills themselves run on the
ordinary emergency and offline forms (allocator/web/unblinding.py); their log is a report."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response as WerkzeugResponse

from allocator.notices import N_
from allocator.permissions import Permission, requires
from allocator.services import sites, unblinding_drills
from allocator.services.errors import DomainError
from allocator.web import forms
from allocator.web.security import actor, ctx, scope

bp = Blueprint("drills", __name__)

# The meanings of the drills' signatures, as pages show them in the reader's language.
SIGNATURE_MEANINGS = (
    N_("emergency unblinding drill"),
    N_("registration of an offline unblinding drill"),
    N_("drill code-break sheet generation"),
)


def _labels() -> dict[str, str]:
    return {
        "site": _("Site"),
        "note": _("Note"),
        "subject": _("Drill subject"),
        "password": _("Your password (electronic signature)"),
        "otp": _("Authenticator code"),
    }


@bp.route("/trials/<trial>/drills")
@requires(Permission.SITE_MANAGE)
def index(trial: str) -> str:
    """The drill subjects of the trial manager's sites and the form that adds one."""
    reach = scope(Permission.SITE_MANAGE)
    return render_template(
        "drills/index.html",
        trial=trial,
        subjects=unblinding_drills.drill_subjects(ctx(), trial, reach),
        sites=[s for s in sites.sites(ctx(), trial) if reach.allows_site(s.id)],
        form=forms.recall_for(request.path, "create"),
    )


@bp.route("/trials/<trial>/drills", methods=["POST"])
@requires(Permission.SITE_MANAGE)
def create(trial: str) -> WerkzeugResponse:
    target = url_for("drills.index", trial=trial)
    try:
        number = unblinding_drills.create_drill_subject(
            ctx(),
            actor(Permission.SITE_MANAGE),
            trial,
            forms.text("site"),
            forms.text("note"),
            scope=scope(Permission.SITE_MANAGE),
        )
    except DomainError as exc:
        forms.remember(f"{target}#create", forms.shown(exc, _labels()))
        return redirect(f"{target}#create", code=303)
    flash(
        _("Drill subject %(number)s created. It is not a patient and is counted nowhere.", number=number),
        "ok",
    )
    return redirect(target, code=303)


@bp.route("/trials/<trial>/drills/sheets")
@requires(Permission.CODE_BREAK_GENERATE)
def sheets(trial: str) -> str:
    """Unblinded roles: print the sealed code-break sheet of a drill subject."""
    return render_template(
        "drills/sheets.html",
        trial=trial,
        subjects=unblinding_drills.drill_subjects(ctx(), trial, scope(Permission.CODE_BREAK_GENERATE)),
    )


@bp.route("/trials/<trial>/drills/sheets", methods=["POST"])
@requires(Permission.CODE_BREAK_GENERATE)
def generate_sheet(trial: str) -> Response | WerkzeugResponse:
    """The drill sheet's PDF as an attachment (named by its document id), or back to the page."""
    try:
        document_id, pdf = unblinding_drills.generate_drill_sheet(
            ctx(),
            actor(Permission.CODE_BREAK_GENERATE),
            trial,
            forms.text("subject"),
            signature=forms.optional_signature(),
            scope=scope(Permission.CODE_BREAK_GENERATE),
        )
    except DomainError as exc:
        forms.flash_error(exc, _labels())
        return redirect(url_for("drills.sheets", trial=trial), code=303)
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document_id}.pdf"'},
    )
