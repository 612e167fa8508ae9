"""Stored answers of POST requests sent with an Idempotency-Key (issue 14).

The stored bodies are blinded answers (a randomization, a scan, a refusal). `store` runs inside
the caller's shared transaction (`Database.shared_transaction`), so the answer is committed with
the action or not at all. A (user, key) pair is taken once: `store` reports
False when another request took it first, and the caller replays that one's answer instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from allocator.models import IdempotentRequest, Subject, Trial
from allocator.services.context import ServiceContext


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    endpoint: str
    fingerprint: str
    status: int
    content_type: str
    body: str


def find(ctx: ServiceContext, user_id: int, key: str) -> StoredAnswer | None:
    """The answer stored for `key` by `user_id`; None when none is."""
    with ctx.db.reading() as session:
        row = session.execute(
            select(IdempotentRequest).where(
                IdempotentRequest.user_id == user_id, IdempotentRequest.key == key
            )
        ).scalar_one_or_none()
    if row is None:
        return None
    return StoredAnswer(row.endpoint, row.fingerprint, row.status, row.content_type, row.body or "")


def store(
    ctx: ServiceContext,
    *,
    user_id: int,
    key: str,
    endpoint: str,
    fingerprint: str,
    trial_code: str,
    status: int,
    content_type: str,
    body: str,
) -> bool:
    """Record the answer to (user, key); False when that pair is already taken (nothing written).
    Never for an answer that reveals an arm: that would need sealing, and opening only through
    arm_access (BLD-05, BLD-08)."""
    values = {
        "user_id": user_id,
        "key": key,
        "endpoint": endpoint,
        "fingerprint": fingerprint,
        "trial_code": trial_code,
        "status": status,
        "content_type": content_type,
        "body": body,
        "created_at": ctx.now(),
    }
    with ctx.db.unit_of_work() as session:
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        result = session.execute(
            insert(IdempotentRequest)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(IdempotentRequest.id)
        )
        return result.first() is not None


def existing_subject_number(
    ctx: ServiceContext, trial_code: str, screening_number: str, user_id: int
) -> str | None:
    """The subject number given to `screening_number` when `user_id` randomized it, so that a
    client whose answer was lost can recover it from the 409 (issue 14); None otherwise."""
    with ctx.db.reading() as session:
        return session.execute(
            select(Subject.subject_number)
            .join(Trial, Trial.id == Subject.trial_id)
            .where(
                Trial.code == trial_code,
                Subject.screening_number == screening_number.strip().upper(),
                Subject.randomized_by_id == user_id,
            )
        ).scalar_one_or_none()
