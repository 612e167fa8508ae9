"""Electronic signatures (ACC-12): re-authentication, manifestation, link to the signed content."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from allocator import crypto
from allocator.audit import Actor
from allocator.models import AuditEvent, LoginThrottle
from allocator.services import auth, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import TooManyRequests
from allocator.services.signatures import SignatureRefused, SignatureRequest
from tests.support import GOOD_PASSWORD, Clock, enroll_totp, load_ifn, make_user

HERE = auth.Client("192.0.2.1", "pytest", "req")


def signer(ctx: ServiceContext, role: str = "investigator", site: str | None = "P1") -> Actor:
    load_ifn(ctx)
    created = make_user(ctx, "signer", role, site=site, full_name="Dr Sophie Signataire")
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    return Actor(
        user_id=created.user_id, username="signer", name="Dr Sophie Signataire", role=role, request_id="r"
    )


def apply(
    ctx: ServiceContext, who: Actor, request: SignatureRequest, content: object
) -> signatures.Signature:
    with ctx.db.unit_of_work() as session:
        return signatures.sign(
            ctx,
            session,
            actor=who,
            chain="IFNG-PAIS",
            trial_id=None,
            request=request,
            meaning="emergency unblinding",
            object_type="subject",
            object_id="P1-001",
            content=content,
            now=ctx.now(),
        )


@pytest.mark.req("ACC-12")
def test_a_signature_records_name_time_meaning_and_content_hash(ctx: ServiceContext, clock: Clock) -> None:
    who = signer(ctx)
    content = {"subject": "P1-001", "reason": "anaphylaxis"}
    signature = apply(ctx, who, SignatureRequest(password=GOOD_PASSWORD), content)
    assert (signature.printed_name, signature.meaning, signature.method) == (
        "Dr Sophie Signataire",
        "emergency unblinding",
        "password",
    )
    assert signature.signed_at == clock()
    assert signatures.verify(signature, content)
    assert not signatures.verify(signature, {**content, "reason": "changed afterwards"})
    line = signatures.manifestation(signature).line()
    assert (
        "Dr Sophie Signataire" in line
        and "2026-03-02 09:30:00 UTC" in line
        and "emergency unblinding" in line
    )
    with ctx.db.reading() as s:
        assert s.execute(
            select(AuditEvent.action).where(AuditEvent.action == "signature.applied")
        ).scalar_one()


@pytest.mark.req("ACC-12")
def test_signing_without_the_right_password_fails_and_counts_toward_lockout(ctx: ServiceContext) -> None:
    who = signer(ctx)
    for _ in range(ctx.settings.login_max_failures_per_account):
        with pytest.raises(SignatureRefused) as caught:
            apply(ctx, who, SignatureRequest(password="not my password"), {"x": 1})
        assert caught.value.errors[0].field == "password"
        signatures.record_failure(
            ctx,
            actor=who,
            chain="IFNG-PAIS",
            meaning="emergency unblinding",
            object_type="subject",
            object_id="P1-001",
        )
    with pytest.raises(TooManyRequests):
        apply(ctx, who, SignatureRequest(password=GOOD_PASSWORD), {"x": 1})
    with ctx.db.reading() as s:
        failed = s.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "signature.failed")
        ).scalar_one()
        locked = s.execute(
            select(LoginThrottle.locked_until).where(LoginThrottle.key == "account:signer")
        ).scalar_one()
    assert failed == ctx.settings.login_max_failures_per_account and locked is not None


@pytest.mark.req("ACC-12")
def test_enrolled_signers_also_give_a_fresh_authenticator_code(ctx: ServiceContext, clock: Clock) -> None:
    who = signer(ctx, "unblinded_statistician", None)
    secret = enroll_totp(ctx, who.user_id or 0, clock)
    clock.advance(seconds=60)
    with pytest.raises(SignatureRefused) as caught:
        apply(ctx, who, SignatureRequest(password=GOOD_PASSWORD), {"x": 1})
    assert caught.value.errors[0].field == "otp"
    code = crypto.totp_now(secret, clock())
    signature = apply(ctx, who, SignatureRequest(password=GOOD_PASSWORD, totp=code), {"x": 1})
    assert signature.method == "password+totp"
    with pytest.raises(SignatureRefused):  # the same code cannot sign twice
        apply(ctx, who, SignatureRequest(password=GOOD_PASSWORD, totp=code), {"x": 2})
