"""Idempotent retries of the API's POST requests (issue 14; the IETF httpapi Idempotency-Key draft).

One row per (user, key), written in the same transaction as the action it answers, holding the
original status and body, so that a client whose response was lost gets it again by retrying with
the same key. Only blinded answers are stored (never an arm: the emergency unblinding does not
take a key).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class IdempotentRequest(Base):
    __tablename__ = "idempotent_request"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    key: Mapped[str] = mapped_column(String(255))
    endpoint: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the method, path and body
    trial_code: Mapped[str] = mapped_column(String(24))
    status: Mapped[int]
    content_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
