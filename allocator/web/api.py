"""JSON API under /api/v1 (bearer tokens; errors as application/problem+json)."""

from __future__ import annotations

import base64
import hashlib

from flask import Blueprint, g, jsonify, url_for
from werkzeug.wrappers import Response

from allocator.permissions import Permission, requires
from allocator.services import (
    audit_trail,
    bedside,
    dispensing,
    exports,
    signatures,
    trials,
    unblinding,
    unblinding_drills,
)
from allocator.services import idempotency as stored_answers
from allocator.services.errors import FieldProblem, ValidationFailed
from allocator.services.subjects import confirmation as subjects_confirmation
from allocator.services.subjects import participants, views
from allocator.services.subjects import randomize as subjects_randomize
from allocator.services.subjects import register as subjects_register
from allocator.web import hygiene
from allocator.web import idempotency as idempotent
from allocator.web.errors import problem
from allocator.web.openapi import document
from allocator.web.security import actor, ctx, current_trial, definition_of, holds_any, scope

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
    data = summary.as_json()
    if not holds_any(*trials.SETUP_NOTE_READERS):
        del data["unconfirmed"]
    return jsonify(data)


@bp.route("/trials/<trial>/audit")
@requires(Permission.AUDIT_VIEW)
def audit(trial: str) -> Response:
    """Blinded audit entries in sequence order; follow `next_after` to page."""
    flt = audit_trail.AuditFilter.parse(hygiene.single_args())
    page = audit_trail.page(
        ctx(),
        current_trial().code,
        flt,
        after=hygiene.query_int("after", 0, minimum=0, maximum=hygiene.MAX_SEQUENCE),  # seq starts at 1
        limit=hygiene.query_int("limit", 100, minimum=1, maximum=1000),
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
    return hygiene.json_body()


@bp.route("/trials/<trial>/subjects", methods=["POST"])
@requires(Permission.SUBJECT_RANDOMIZE)
def randomize(trial: str) -> Response:
    """Screen and randomize. Any field beyond site, screening_number, eligibility and strata — a
    slot, an arm, a kit — is refused, never used (RND-05)."""
    body = _json_body()
    if definition_of(trial).observational:
        return _register(trial, body)
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
    wanted = subjects_randomize.RandomizationRequest(
        site=str(body["site"]),
        screening_number=str(body["screening_number"]),
        eligibility=eligibility,
        strata=strata,
        json_numbers=True,
    )

    def run() -> tuple[Response, int]:
        try:
            result = subjects_randomize.randomize(
                ctx(),
                actor(Permission.SUBJECT_RANDOMIZE),
                trial,
                wanted,
                scope(Permission.SUBJECT_RANDOMIZE),
            )
        except subjects_randomize.AlreadyRandomized as error:
            return _already_randomized(error, trial, wanted.screening_number), 409
        return jsonify(result.as_json()), 201

    return idempotent.respond(body, run)


_REGISTER_FIELDS = frozenset({"site", "screening_number", "eligibility"})


def _register(trial: str, body: dict[str, object]) -> Response:
    """Issue 20: in an observational study the same request registers the patient — no strata, no
    randomization fields in the answer, the sample schedule instead."""
    problems = [
        FieldProblem(key, "is not accepted (an observational study has no strata, arms or kits to choose)")
        for key in sorted(set(body) - _REGISTER_FIELDS)
    ]
    if not isinstance(body.get("eligibility"), dict):
        problems.append(FieldProblem("eligibility", "must be an object"))
    for key in ("site", "screening_number"):
        if not isinstance(body.get(key), str):
            problems.append(FieldProblem(key, "must be a string"))
    eligibility = body.get("eligibility")
    if problems or not isinstance(eligibility, dict):
        raise ValidationFailed("invalid registration request", errors=problems)
    wanted = subjects_register.RegistrationRequest(
        site=str(body["site"]),
        screening_number=str(body["screening_number"]),
        eligibility=eligibility,
        json_numbers=True,
    )

    def run() -> tuple[Response, int]:
        result = subjects_register.register(
            ctx(), actor(Permission.SUBJECT_RANDOMIZE), trial, wanted, scope(Permission.SUBJECT_RANDOMIZE)
        )
        return jsonify(result.as_json()), 201

    return idempotent.respond(body, run)


def _already_randomized(
    error: subjects_randomize.AlreadyRandomized, trial: str, screening_number: str
) -> Response:
    """Issue 14: a client that retries a randomization whose answer it lost learns the subject
    number it was given, when it randomized that screening number itself."""
    number = stored_answers.existing_subject_number(ctx(), trial, screening_number, g.auth.user_id)
    return problem(
        error.status,
        error.slug,
        error.title,
        error.detail,
        [{"field": e.field, "message": e.message} for e in error.errors],
        {"subject_number": number} if number else None,
    )


@bp.route("/trials/<trial>/subjects")
@requires(Permission.SUBJECT_VIEW)
def subject_list(trial: str) -> Response:
    """A page of subjects in randomization order; follow `next_after` to page (issue 21). In an
    observational study, its registered participants with their samples (issue 20)."""
    if definition_of(trial).observational:
        cohort = participants.participants_page(
            ctx(),
            trial,
            scope(Permission.SUBJECT_VIEW),
            after=hygiene.query_text("after", max_length=64),
            limit=hygiene.query_int("limit", 100, minimum=1, maximum=participants.MAX_PAGE),
            site=hygiene.query_text("site", max_length=10),
        )
        return jsonify(
            {"subjects": [p.as_json() for p in cohort.participants], "next_after": cohort.next_after}
        )
    page = views.subjects_page(
        ctx(),
        trial,
        scope(Permission.SUBJECT_VIEW),
        after=hygiene.query_text("after", max_length=64),
        limit=hygiene.query_int("limit", 100, minimum=1, maximum=views.MAX_PAGE),
        site=hygiene.query_text("site", max_length=10),
    )
    return jsonify({"subjects": [s.as_json() for s in page.subjects], "next_after": page.next_after})


@bp.route("/trials/<trial>/subjects/<subject>")
@requires(Permission.SUBJECT_VIEW)
def subject_detail(trial: str, subject: str) -> Response:
    if definition_of(trial).observational:  # a registered participant (issue 20)
        return jsonify(
            participants.participant(ctx(), trial, subject, scope(Permission.SUBJECT_VIEW)).as_json()
        )
    return jsonify(views.subject(ctx(), trial, subject, scope(Permission.SUBJECT_VIEW)).as_json())


@bp.route("/trials/<trial>/subjects/<subject>/dispensation-sheets", methods=["POST"])
@requires(Permission.DISPENSATION_DISPENSE)
def print_dispensation_sheet(trial: str, subject: str) -> tuple[Response, int]:
    """Print the QR-labelled dispensation sheet (recorded and audited; a reprint is a DUPLICATA).
    The answer names the printed document; GET its location to download it."""
    document_id, _ = dispensing.dispensation_sheet(
        ctx(),
        actor(Permission.DISPENSATION_DISPENSE),
        trial,
        subject,
        scope(Permission.DISPENSATION_DISPENSE),
    )
    location = url_for("api.dispensation_sheet", trial=trial, subject=subject, document=document_id)
    response = jsonify({"document_id": document_id, "href": location})
    response.headers["Location"] = location
    return response, 201


@bp.route("/trials/<trial>/subjects/<subject>/dispensation-sheets/<document>.pdf")
@requires(Permission.DISPENSATION_DISPENSE)
def dispensation_sheet(trial: str, subject: str, document: str) -> Response:
    """A printed dispensation sheet, exactly as printed; downloading it creates nothing."""
    pdf = dispensing.printed_dispensation_sheet(
        ctx(), trial, subject, document, scope(Permission.DISPENSATION_DISPENSE)
    )
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document}.pdf"'},
    )


@bp.route("/trials/<trial>/subjects/<subject>/confirmations", methods=["POST"])
@requires(Permission.SUBJECT_VIEW)
def print_confirmation(trial: str, subject: str) -> tuple[Response, int]:
    """Print the randomization confirmation (recorded and audited; a reprint is a DUPLICATA). The
    answer names the printed document; GET its location to download it."""
    document_id, _ = subjects_confirmation.print_confirmation(
        ctx(), actor(Permission.SUBJECT_VIEW), trial, subject, scope(Permission.SUBJECT_VIEW)
    )
    location = url_for("api.confirmation", trial=trial, subject=subject, document=document_id)
    response = jsonify({"document_id": document_id, "href": location})
    response.headers["Location"] = location
    return response, 201


@bp.route("/trials/<trial>/subjects/<subject>/confirmations/<document>.pdf")
@requires(Permission.SUBJECT_VIEW)
def confirmation(trial: str, subject: str, document: str) -> Response:
    """A printed randomization confirmation, exactly as printed; downloading it creates nothing."""
    pdf = subjects_confirmation.printed_confirmation(
        ctx(), trial, subject, document, scope(Permission.SUBJECT_VIEW)
    )
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{document}.pdf"'},
    )


_SCAN_FIELDS = {"payload", "subject_number", "day", "administered_at", "late_reason", "confirmation"}
MAX_LATE_REASON = 1000


@bp.route("/trials/<trial>/scans", methods=["POST"])
@requires(Permission.ADMINISTRATION_RECORD)
def scan(trial: str) -> Response:
    """Verify a scanned label and record the administration."""
    body = _json_body()
    problems = [FieldProblem(key, "is not accepted") for key in sorted(set(body) - _SCAN_FIELDS)]
    for key in ("payload", "subject_number", "day"):
        if not isinstance(body.get(key), str) or not str(body.get(key)).strip():
            problems.append(FieldProblem(key, "is required"))
    late_reason = body.get("late_reason")
    if late_reason is not None and (not isinstance(late_reason, str) or len(late_reason) > MAX_LATE_REASON):
        # As the OpenAPI document states: a string of at most 1000 characters (a number was read
        # as its text, and any length was taken).
        problems.append(
            FieldProblem("late_reason", f"must be a text of at most {MAX_LATE_REASON} characters")
        )
    confirmation = body.get("confirmation")
    if confirmation is not None and (
        not isinstance(confirmation, str) or len(confirmation) > MAX_LATE_REASON
    ):
        problems.append(
            FieldProblem("confirmation", f"must be a text of at most {MAX_LATE_REASON} characters")
        )
    given = None
    if body.get("administered_at") is not None:
        try:
            given = hygiene.parse_time("administered_at", body["administered_at"])
        except ValidationFailed as exc:
            problems.extend(exc.errors)
    if problems:
        raise ValidationFailed("invalid scan", errors=problems)

    def run() -> tuple[Response, int]:
        result = bedside.record_scan(
            ctx(),
            actor(Permission.ADMINISTRATION_RECORD),
            trial,
            payload=str(body["payload"]),
            subject_number=str(body["subject_number"]),
            day=str(body["day"]),
            scope=scope(Permission.ADMINISTRATION_RECORD),
            administered_at=given,
            late_reason=str(body.get("late_reason") or ""),
            # Check, then record (issue 13), as on the bedside page: a dose outside its planned day
            # (or before an earlier dose) is a 409 confirmation-needed and nothing is recorded,
            # until the same scan comes back with `confirmation`, the reason for giving it.
            confirmation=str(confirmation or ""),
        )
        return jsonify(result.as_json()), 201

    return idempotent.respond(body, run)


_UNBLIND_FIELDS = {"reason_category", "reason", "password", "otp"}


@bp.route("/trials/<trial>/subjects/<subject>/unblind", methods=["POST"])
@requires(Permission.SUBJECT_UNBLIND)
def unblind(trial: str, subject: str) -> Response:
    """Emergency unblinding of ONE subject by an investigator of its site (UNB-01..05). The call
    itself is the explicit confirmation; the password (and code) sign it. The arm is in this
    answer only. With an Idempotency-Key, a replay by the same user with the same body gets that
    answer again after its password is checked again, audited as an arm.read (issue 14)."""
    body = _json_body()
    wrong_type = [k for k, v in body.items() if v is not None and not isinstance(v, str)]
    if wrong_type:
        raise unblinding.OneSubjectOnly(
            "every field is one string: no list, no object; nothing was revealed",
            errors=[FieldProblem(k, "must be a string") for k in sorted(wrong_type)],
        )
    problems = [FieldProblem(key, "is not accepted") for key in sorted(set(body) - _UNBLIND_FIELDS)]
    otp = body.get("otp")
    if isinstance(otp, str) and not signatures.well_formed_code(otp):
        # What the OpenAPI document states (signatures.CODE_PATTERN), whether a factor is enrolled
        # or not: a code that cannot be one is a 422, before any password is checked.
        problems.append(FieldProblem("otp", "must be the 6 digits shown by the authenticator app"))
    if problems:
        raise ValidationFailed("invalid unblinding request", errors=problems)

    # A drill subject (DRILL-...) runs an unblinding drill (UNB-11): same checks, answer marked drill.
    unblind = (
        unblinding_drills.drill_unblind
        if unblinding_drills.is_drill_number(subject)
        else unblinding.emergency_unblind
    )

    def run() -> Response:
        revealed = unblind(
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
        return jsonify(revealed.as_json())

    return idempotent.respond_unblinding(body, subject, run, Permission.SUBJECT_UNBLIND)
