"""Data exports as downloads (DIB-04, DIB-07): for the monitor, the auditor, the trial manager and
the unblinded statistician, a blinded export in any format; for the unblinded statistician alone,
after the final unblinding, a signed unblinded export. Every download is a ZIP holding the export
and its signed manifest (`allocator export verify` checks it once unpacked). Nothing about an arm
appears in a URL or a file name (BLD-14)."""

from __future__ import annotations

import io
import zipfile

from flask import Blueprint, Response, render_template, request
from flask_babel import gettext as _

from allocator.permissions import Permission, requires
from allocator.services import exports, signatures
from allocator.services.errors import DomainError
from allocator.web import forms
from allocator.web.security import actor, ctx, current_trial

bp = Blueprint("exports", __name__)
FORMATS = "any(odm, fhir, redcap, csv)"


def bundle(made: exports.Export, name: str) -> bytes:
    """The export's files and its manifest (`NAME.manifest.json`), as laid out on disk by the
    command line, in one ZIP."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in sorted(made.files.items()):
            archive.writestr(path, content)
        archive.writestr(f"{name}.manifest.json", exports.manifest_text(made.manifest))
    return buffer.getvalue()


def _name(trial: str, fmt: str, stamp: str, *, unblinded: bool = False) -> str:
    kind = f"{fmt}-unblinded" if unblinded else fmt
    return f"{trial}-{kind}-{stamp}{exports.EXTENSIONS.get(fmt, '')}"


def _download(made: exports.Export, name: str) -> Response:
    return Response(
        bundle(made, name),
        mimetype="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}.zip"',
            "Cache-Control": "no-store",
        },
    )


def _page(http_status: int = 200, **values: object) -> Response:
    html = render_template(
        "exports/index.html",
        trial=current_trial().code,
        formats=exports.FORMATS,
        meaning=exports.UNBLINDED_EXPORT_MEANING,
        **{"form": forms.FormState(), **values},
    )
    return Response(html, status=http_status, mimetype="text/html")


@bp.route("/trials/<trial>/exports")
@requires(Permission.EXPORT_BLINDED)
def index(trial: str) -> Response:
    return _page()


@bp.route(f"/trials/<trial>/exports/<{FORMATS}:fmt>")
@requires(Permission.EXPORT_BLINDED)
def download(trial: str, fmt: str) -> Response:
    """A blinded export and its manifest (audited)."""
    code = current_trial().code
    name = _name(code, fmt, exports.stamp(ctx().now()))
    made = exports.export_trial(ctx(), actor(Permission.EXPORT_BLINDED), code, fmt, name=name)
    return _download(made, name)


@bp.route("/trials/<trial>/exports/unblinded", methods=["POST"])
@requires(Permission.EXPORT_UNBLINDED)
def unblinded(trial: str) -> Response:
    """An unblinded export: 409 until the final unblinding; signed by the unblinded statistician."""
    code = current_trial().code
    fmt = request.form.get("format") or ""
    name = _name(code, fmt, exports.stamp(ctx().now()), unblinded=True)
    try:
        made = exports.export_trial(
            ctx(),
            actor(Permission.EXPORT_UNBLINDED),
            code,
            fmt,
            name=name,
            unblinded=True,
            signature=signatures.SignatureRequest(
                password=request.form.get("password") or "", totp=request.form.get("otp") or None
            ),
        )
    except DomainError as exc:
        labels = {
            "format": _("Format"),
            "password": _("Your password (electronic signature)"),
            "otp": _("Authenticator code"),
        }
        return _page(exc.status, form=forms.shown(exc, labels))
    return _download(made, name)
