"""Idempotent retries of the API's POST requests (issue 14; the IETF httpapi Idempotency-Key draft).

With an `Idempotency-Key` header, a POST's answer (success or refusal, not a 5xx) is stored in the
same transaction as the action (`Database.shared_transaction`). The same key from the same user
with the same method, path and body gets the original status and body again, with
`Idempotent-Replayed: true`, and nothing is done twice; the same key with anything else is a 422
naming the header. A 5xx stores nothing (the transaction rolled back), so a retry runs afresh.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping

from flask import g, request
from werkzeug.wrappers import Response

from allocator.audit import canonical_json
from allocator.permissions import Permission
from allocator.services import arm_access, idempotency, unblinding
from allocator.services.errors import DomainError, FieldProblem, ValidationFailed
from allocator.web.errors import render_domain
from allocator.web.security import actor, ctx, current_trial

HEADER = "Idempotency-Key"
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, e.g. a UUID


def _fingerprint(body: Mapping[str, object]) -> str:
    text = canonical_json({"method": request.method, "path": request.path, "body": body})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _replay(stored: idempotency.StoredAnswer, fingerprint: str) -> Response:
    if stored.endpoint != request.endpoint or stored.fingerprint != fingerprint:
        raise ValidationFailed(
            "this Idempotency-Key was used for another request",
            errors=[FieldProblem(HEADER, "already used with another body or path; use a new key")],
        )
    response = Response(stored.body, status=stored.status, mimetype=stored.content_type)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def respond(
    body: Mapping[str, object],
    action: Callable[[], tuple[Response, int]],
) -> Response:
    """Run `action` (which returns the response and its status) once per Idempotency-Key.

    The answer must be blinded: it is stored in clear."""
    key = request.headers.get(HEADER)
    if key is None:
        response, status = action()
        response.status_code = status
        return response
    if not _KEY.fullmatch(key):
        raise ValidationFailed(
            f"invalid {HEADER}", errors=[FieldProblem(HEADER, "1 to 255 visible ASCII characters")]
        )
    service = ctx()
    user_id: int = g.auth.user_id
    fingerprint = _fingerprint(body)
    stored = idempotency.find(service, user_id, key)
    if stored is not None:
        return _replay(stored, fingerprint)
    taken = False
    with service.db.shared_transaction() as shared:
        try:
            response, status = action()
            response.status_code = status
        except DomainError as error:
            response = render_domain(error)
        if response.status_code < 500:
            taken = not idempotency.store(
                service,
                user_id=user_id,
                key=key,
                endpoint=request.endpoint or "",
                fingerprint=fingerprint,
                trial_code=current_trial().code,
                status=response.status_code,
                content_type=response.mimetype or "application/json",
                body=response.get_data(as_text=True),
            )
            if not taken:
                shared.keep()
    if taken:  # a concurrent request with the same key answered first: its answer stands
        stored = idempotency.find(service, user_id, key)
        if stored is None:  # pragma: no cover - the conflicting row is committed before we get here
            raise ValidationFailed(f"{HEADER} in use", errors=[FieldProblem(HEADER, "retry")])
        return _replay(stored, fingerprint)
    return response


# --- the emergency unblinding: an answer that reveals an arm ----------------------------------------

_SIGNING_FIELDS = ("password", "otp")


def respond_unblinding(
    body: Mapping[str, object],
    subject_number: str,
    action: Callable[[], Response],
    permission: Permission,
) -> Response:
    """Like `respond`, for the emergency unblinding, whose answer reveals the arm.

    Only the 200 answer is stored, sealed (never the arm in clear in the database); a refusal is
    not stored (its audit entries are kept), so a retry runs afresh. The fingerprint leaves out the
    password and code (no hash of a password is stored). A replay checks the password again and
    opens the sealed answer through arm_access, audited as an `arm.read`: nothing is unblinded,
    signed or notified twice. The authenticator code is not checked again (it is single-use)."""
    key = request.headers.get(HEADER)
    if key is None:
        return action()
    if not _KEY.fullmatch(key):
        raise ValidationFailed(
            f"invalid {HEADER}", errors=[FieldProblem(HEADER, "1 to 255 visible ASCII characters")]
        )
    service = ctx()
    user_id: int = g.auth.user_id
    trial_code = current_trial().code
    fingerprint = _fingerprint({k: v for k, v in body.items() if k not in _SIGNING_FIELDS})
    stored = idempotency.find(service, user_id, key)
    if stored is None:
        taken = False
        with service.db.shared_transaction() as shared:
            try:
                response = action()
            except DomainError as error:
                response = render_domain(error)
            if response.status_code == 200:
                taken = not idempotency.store(
                    service,
                    user_id=user_id,
                    key=key,
                    endpoint=request.endpoint or "",
                    fingerprint=fingerprint,
                    trial_code=trial_code,
                    status=200,
                    content_type=response.mimetype or "application/json",
                    body=arm_access.seal_stored_answer(
                        service, trial_code, user_id, key, response.get_json()
                    ),
                )
            if response.status_code < 500 and not taken:
                shared.keep()  # a refusal's audit entries and lockout count are kept too
        if not taken:
            return response
        stored = idempotency.find(service, user_id, key)  # a concurrent request answered first
        if stored is None:  # pragma: no cover - the conflicting row is committed before we get here
            raise ValidationFailed(f"{HEADER} in use", errors=[FieldProblem(HEADER, "retry")])
    if stored.endpoint != request.endpoint or stored.fingerprint != fingerprint:
        raise ValidationFailed(
            "this Idempotency-Key was used for another request",
            errors=[FieldProblem(HEADER, "already used with another body or path; use a new key")],
        )
    answer = unblinding.replay_emergency_unblinding(
        service,
        actor(permission),
        trial_code,
        subject_number,
        key=key,
        stored=stored.body,
        password=str(body.get("password") or ""),
    )
    response = Response(canonical_json(answer), status=stored.status, mimetype=stored.content_type)
    response.headers["Idempotent-Replayed"] = "true"
    response.headers["Cache-Control"] = "no-store"
    return response
