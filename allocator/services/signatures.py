"""Electronic signatures (21 CFR 11.50, 11.70, 11.200; ACC-12).

A signature is applied inside the unit of work of the act it signs (list approval, dispensing,
emergency unblinding, ...): the signer re-enters the password (and a TOTP code when enrolled); the
record keeps the printed name, the UTC time, the meaning, and the SHA-256 of the signed content, so
changing the record afterwards is detected by `verify`. A wrong password is audited and counts
toward the account's lockout like a failed sign-in (ACC-05).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

import kits as kitlib
from allocator import crypto, passwords
from allocator.audit import Action, Actor
from allocator.db import require
from allocator.models import Signature, User
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, TooManyRequests, ValidationFailed


class SignatureRefused(ValidationFailed):
    slug = "signature-refused"
    title = "The electronic signature was not accepted"


@dataclass(frozen=True, slots=True)
class SignatureRequest:
    """What the signer typed. `totp` is required when the signer has enrolled a second factor."""

    password: str
    totp: str | None = None


# The API's document states it (allocator/web/openapi.py): six ASCII digits, spaces around ignored.
CODE_PATTERN = f"^$|{crypto.TOTP_CODE_PATTERN}"


def well_formed_code(code: str) -> bool:
    """Whether a typed second-factor code can be one at all (six ASCII digits, the white space
    around it ignored); the empty string stands for no code."""
    return code == "" or crypto.totp_code(code) is not None


@dataclass(frozen=True, slots=True)
class Manifestation:
    """The human-readable form shown on screens and printed on PDFs (21 CFR 11.50)."""

    printed_name: str
    username: str
    signed_at: datetime
    meaning: str
    signature_id: int

    def line(self) -> str:
        return (
            f"Signed electronically by {self.printed_name} ({self.username}) on "
            f"{self.signed_at.strftime('%Y-%m-%d %H:%M:%S UTC')}, meaning: {self.meaning} [signature #{self.signature_id}]"
        )


def content_hash(content: Any) -> str:
    """SHA-256 of the canonical JSON of the signed content (sorted keys, no spaces)."""
    raw = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def sign(
    ctx: ServiceContext,
    session: Session,
    *,
    actor: Actor,
    chain: str,
    trial_id: int | None,
    request: SignatureRequest,
    meaning: str,
    object_type: str,
    object_id: object,
    content: Any,
    now: datetime,
) -> Signature:
    """Check the signer's credentials and record the signature, in the caller's transaction.

    Raises SignatureRefused (wrong password or code) or TooManyRequests (account locked). On a
    refusal the caller's whole act is abandoned; the failed attempt itself is recorded by
    `record_failure`, which the caller runs in its own unit of work (the act's transaction rolls
    back)."""
    from allocator.services.auth import check_totp, throttle_row  # noqa: PLC0415 - avoids an import cycle

    if actor.user_id is None:
        raise SignatureRefused(
            "only a signed-in person can sign", errors=[FieldProblem("password", "no user")]
        )
    refuse_a_scan(request.password)
    user = require(session, User, actor.user_id)
    throttle = throttle_row(session, f"account:{user.username}", now, ctx)
    if throttle.locked_until is not None and throttle.locked_until > now:
        raise TooManyRequests("too many failed attempts: the account is locked for a while")
    if not crypto.verify_password(user.password_hash, passwords.normalise(request.password), ctx.passwords):
        raise SignatureRefused("the password is wrong", errors=[FieldProblem("password", "is wrong")])
    method = "password"
    if user.totp_enabled_at is not None:
        if not request.totp or not check_totp(ctx, session, user, request.totp, now):
            raise SignatureRefused(
                "the authenticator code is wrong",
                errors=[FieldProblem("otp", "is wrong, missing or already used")],
            )
        method = "password+totp"
    throttle.failures = 0
    signature = Signature(
        trial_id=trial_id,
        user_id=user.id,
        username=user.username,
        printed_name=user.full_name,
        meaning=meaning,
        signed_at=now,
        method=method,
        object_type=object_type,
        object_id=str(object_id),
        content_sha256=content_hash(content),
    )
    session.add(signature)
    session.flush()
    ctx.audit.record(
        session,
        actor=actor,
        chain=chain,
        action=Action.SIGNATURE_APPLIED,
        object_type=object_type,
        object_id=object_id,
        new={
            "signature": signature.id,
            "meaning": meaning,
            "method": method,
            "content_sha256": signature.content_sha256,
        },
        at=now,
    )
    return signature


def refuse_a_scan(password: str) -> None:
    """Issue 13: a keyboard-wedge scanner types a label and presses Enter; on a form whose Enter
    jumped to the password field, the next label landed there. A kit label or a kit number is never
    a password (a label carries a MAC; a kit number is shorter than any acceptable password), so it
    is refused as what it is: nothing is signed, and it is neither a failed signature in the audit
    trail nor a step toward the account's lockout."""
    if kitlib.looks_like_scan(password):
        raise ValidationFailed(
            "a scanned label was typed into the password field: nothing was signed",
            errors=[FieldProblem("password", "this is a scanned label, not your password")],
        )


def check_password(ctx: ServiceContext, actor: Actor, password: str) -> None:
    """Check a signed-in person's password again without signing anything (the replay of a signed
    act, issue 14). Raises SignatureRefused (wrong password; the caller records it with
    `record_failure`) or TooManyRequests (account locked)."""
    from allocator.services.auth import throttle_row  # noqa: PLC0415 - avoids an import cycle

    if actor.user_id is None:
        raise SignatureRefused(
            "only a signed-in person can sign", errors=[FieldProblem("password", "no user")]
        )
    refuse_a_scan(password)
    now = ctx.now()
    with ctx.db.unit_of_work() as session:  # the throttle row may be created
        user = require(session, User, actor.user_id)
        throttle = throttle_row(session, f"account:{user.username}", now, ctx)
        if throttle.locked_until is not None and throttle.locked_until > now:
            raise TooManyRequests("too many failed attempts: the account is locked for a while")
        if not crypto.verify_password(user.password_hash, passwords.normalise(password), ctx.passwords):
            raise SignatureRefused("the password is wrong", errors=[FieldProblem("password", "is wrong")])


def record_failure(
    ctx: ServiceContext, *, actor: Actor, chain: str, meaning: str, object_type: str, object_id: object
) -> None:
    """Audit a refused signature and count it toward the account lockout (own unit of work)."""
    from allocator.services.auth import Client, count_failed_attempt, throttle_row  # noqa: PLC0415 - avoids an import cycle

    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        ctx.audit.record(
            session,
            actor=actor,
            chain=chain,
            action=Action.SIGNATURE_FAILED,
            object_type=object_type,
            object_id=object_id,
            new={"meaning": meaning},
            at=now,
        )
        throttle = throttle_row(session, f"account:{actor.username}", now, ctx)
        client = Client(address=actor.address or "-", user_agent="-", request_id=actor.request_id)
        count_failed_attempt(
            ctx, session, throttle, ctx.settings.login_max_failures_per_account, now, client, actor.username
        )


@contextmanager
def failures_recorded(
    ctx: ServiceContext, *, actor: Actor, chain: str, meaning: str, object_type: str, object_id: object
) -> Iterator[None]:
    """Wrap a signed operation: when its signature is refused, the refusal is recorded
    (`record_failure`, after the operation's own unit of work has rolled back) and re-raised."""
    try:
        yield
    except SignatureRefused:
        record_failure(
            ctx, actor=actor, chain=chain, meaning=meaning, object_type=object_type, object_id=object_id
        )
        raise


def manifestation(signature: Signature) -> Manifestation:
    return Manifestation(
        printed_name=signature.printed_name,
        username=signature.username,
        signed_at=signature.signed_at,
        meaning=signature.meaning,
        signature_id=signature.id,
    )


def verify(signature: Signature, content: Any) -> bool:
    """True when `content` is what was signed (21 CFR 11.70: the signature stays linked to it)."""
    return signature.content_sha256 == content_hash(content)
