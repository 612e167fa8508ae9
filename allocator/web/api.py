"""JSON API under /api/v1 (bearer tokens; errors as application/problem+json)."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from flask import Blueprint, jsonify, request
from werkzeug.wrappers import Response

from allocator.permissions import Permission, requires
from allocator.services import (
    administration,
    audit_trail,
    dispensing,
    exports,
    signatures,
    subjects,
    trials,
    unblinding,
)
from allocator.services.errors import FieldProblem, ValidationFailed
from allocator.web.openapi import document
from allocator.web.security import actor, ctx, current_trial, scope

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.route("/openapi.json")
@requires(Permission.API_DOCS)
def openapi() -> Response:
    return jsonify(document())


@bp.route("/trials/<trial>")
@requires(Permission.TRIAL_VIEW)
def trial(trial: str) -> Response:
    visible = scope(Permission.TRIAL_VIEW)
    summary = trials.trial_summary(ctx(), trial, None if visible.all_sites else visible.site_ids)
    return jsonify(summary.as_json())


def _int_arg(name: str, default: int | None) -> int | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValidationFailed(f"invalid {name}", errors=[FieldProblem(name, "must be a whole number")])
    return int(raw)


@bp.route("/trials/<trial>/audit")
@requires(Permission.AUDIT_VIEW)
def audit(trial: str) -> Response:
    """Blinded audit entries in sequence order; follow `next_after` to page."""
    flt = audit_trail.AuditFilter.parse(request.args.to_dict())
    page = audit_trail.page(
        ctx(),
        current_trial().code,
        flt,
        after=_int_arg("after", None),
        limit=_int_arg("limit", 100) or 100,
        scope=scope(Permission.AUDIT_VIEW),
    )
    return jsonify({"entries": [e.as_json() for e in page.entries], "next_after": page.next_after})


@bp.route("/trials/<trial>/audit/verify")
@requires(Permission.AUDIT_VIEW)
def audit_verify(trial: str) -> Response:
    result = audit_trail.verify(ctx(), current_trial().code)
    return jsonify(
        {
            "ok": result.ok,
            "entries": result.entries,
            "first_bad": result.first_bad,
            "problems": [{"seq": p.seq, "message": p.message} for p in result.problems],
            "checkpoints": result.checkpoints,
            "unsigned_tail": result.unsigned_tail,
            "witness_configured": result.witness is not None,
            "witnessed_upto": result.witnessed_upto,
            "unwitnessed": result.unwitnessed,
        }
    )


# --- subjects, dispensing, bedside (contract.md) -----------------------------------------------

_RANDOMIZE_FIELDS = {"site", "screening_number", "eligibility", "strata"}


@bp.route("/trials/<trial>/exports/odm")
@requires(Permission.EXPORT_BLINDED)
def export_odm(trial: str) -> Response:
    """The blinded ODM snapshot for an EDC (DIB-07); audited with its SHA-256, sent as Repr-Digest."""
    code = current_trial().code
    name = f"{code}-odm-{exports.stamp(ctx().now())}.xml"
    made = exports.export_trial(ctx(), actor(Permission.EXPORT_BLINDED), code, "odm", name=name)
    body = made.files[name]
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    return Response(
        body,
        mimetype="application/xml",
        headers={
            "Repr-Digest": f"sha-256=:{digest}:",
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


def _json_body() -> dict[str, object]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationFailed(
            "the body must be a JSON object", errors=[FieldProblem("body", "expected a JSON object")]
        )
    return body


@bp.route("/trials/<trial>/subjects", methods=["POST"])
@requires(Permission.SUBJECT_RANDOMIZE)
def randomize(trial: str) -> tuple[Response, int]:
    """Screen and randomize. Any field beyond site, screening_number, eligibility and strata — a
    slot, an arm, a kit — is refused, never used (RND-05)."""
    body = _json_body()
    problems = [
        FieldProblem(key, "is not accepted (nobody chooses a slot, an arm or a kit)")
        for key in sorted(set(body) - _RANDOMIZE_FIELDS)
    ]
    for key in ("eligibility", "strata"):
        if not isinstance(body.get(key), dict):
            problems.append(FieldProblem(key, "must be an object"))
    for key in ("site", "screening_number"):
        if not isinstance(body.get(key), str):
            problems.append(FieldProblem(key, "must be a string"))
    if problems:
        raise ValidationFailed("invalid randomization request", errors=problems)
    eligibility, strata = body["eligibility"], body["strata"]
    if not isinstance(eligibility, dict) or not isinstance(strata, dict):  # pragma: no cover - checked above
        raise ValidationFailed("invalid randomization request")
    result = subjects.randomize(
        ctx(),
        actor(Permission.SUBJECT_RANDOMIZE),
        trial,
        subjects.RandomizationRequest(
            site=str(body["site"]),
            screening_number=str(body["screening_number"]),
            eligibility=eligibility,
            strata=strata,
        ),
        scope(Permission.SUBJECT_RANDOMIZE),
    )
    return jsonify(result.as_json()), 201


@bp.route("/trials/<trial>/subjects")
@requires(Permission.SUBJECT_VIEW)
def subject_list(trial: str) -> Response:
    return jsonify(
        {"subjects": [s.as_json() for s in subjects.subjects(ctx(), trial, scope(Permission.SUBJECT_VIEW))]}
    )


@bp.route("/trials/<trial>/subjects/<subject>")
@requires(Permission.SUBJECT_VIEW)
def subject_detail(trial: str, subject: str) -> Response:
    return jsonify(subjects.subject(ctx(), trial, subject, scope(Permission.SUBJECT_VIEW)).as_json())


@bp.route("/trials/<trial>/subjects/<subject>/dispensation-sheet.pdf")
@requires(Permission.DISPENSATION_DISPENSE)
def dispensation_sheet(trial: str, subject: str) -> Response:
    document_id, pdf = dispensing.dispensation_sheet(
        ctx(),
        actor(Permission.DISPENSATION_DISPENSE),
        trial,
        subject,
        scope(Permission.DISPENSATION_DISPENSE),
    )
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document_id}.pdf"'},
    )


_SCAN_FIELDS = {"payload", "subject_number", "day", "administered_at", "late_reason"}


@bp.route("/trials/<trial>/scans", methods=["POST"])
@requires(Permission.ADMINISTRATION_RECORD)
def scan(trial: str) -> tuple[Response, int]:
    """Verify a scanned label and record the administration."""
    body = _json_body()
    problems = [FieldProblem(key, "is not accepted") for key in sorted(set(body) - _SCAN_FIELDS)]
    for key in ("payload", "subject_number", "day"):
        if not isinstance(body.get(key), str) or not str(body.get(key)).strip():
            problems.append(FieldProblem(key, "is required"))
    given = None
    if body.get("administered_at") is not None:
        try:
            given = datetime.fromisoformat(str(body["administered_at"]).replace("Z", "+00:00"))
        except ValueError:
            problems.append(FieldProblem("administered_at", "must be an ISO 8601 time with a zone"))
    if problems:
        raise ValidationFailed("invalid scan", errors=problems)
    result = administration.record_scan(
        ctx(),
        actor(Permission.ADMINISTRATION_RECORD),
        trial,
        payload=str(body["payload"]),
        subject_number=str(body["subject_number"]),
        day=str(body["day"]),
        scope=scope(Permission.ADMINISTRATION_RECORD),
        administered_at=given,
        late_reason=str(body.get("late_reason") or ""),
    )
    return jsonify(result.as_json()), 201


_UNBLIND_FIELDS = {"reason_category", "reason", "password", "otp"}


@bp.route("/trials/<trial>/subjects/<subject>/unblind", methods=["POST"])
@requires(Permission.SUBJECT_UNBLIND)
def unblind(trial: str, subject: str) -> tuple[Response, int]:
    """Emergency unblinding of ONE subject by an investigator of its site (UNB-01..05). The call
    itself is the explicit confirmation; the password (and code) sign it. The arm is in this
    answer only."""
    body = _json_body()
    wrong_type = [k for k, v in body.items() if v is not None and not isinstance(v, str)]
    if wrong_type:
        raise unblinding.OneSubjectOnly(
            "every field is one string: no list, no object; nothing was revealed",
            errors=[FieldProblem(k, "must be a string") for k in sorted(wrong_type)],
        )
    problems = [FieldProblem(key, "is not accepted") for key in sorted(set(body) - _UNBLIND_FIELDS)]
    if problems:
        raise ValidationFailed("invalid unblinding request", errors=problems)
    revealed = unblinding.emergency_unblind(
        ctx(),
        actor(Permission.SUBJECT_UNBLIND),
        trial,
        subject,
        reason_category=str(body.get("reason_category") or ""),
        reason=str(body.get("reason") or ""),
        confirmed=True,
        signature=signatures.SignatureRequest(
            password=str(body.get("password") or ""), totp=str(body["otp"]) if body.get("otp") else None
        ),
        scope=scope(Permission.SUBJECT_UNBLIND),
    )
    return jsonify(revealed.as_json()), 200
