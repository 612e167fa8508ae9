"""Electronic signatures (21 CFR 11.50/11.70; ACC-12)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class Signature(Base):
    """Printed name, UTC time and meaning, linked to the signed record by a hash of its content.
    Append-only."""

    __tablename__ = "signature"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trial.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    username: Mapped[str] = mapped_column(String(64))
    printed_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str] = mapped_column(String(100))
    signed_at: Mapped[datetime]
    method: Mapped[str] = mapped_column(String(32))  # password | password+totp
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(64))
    content_sha256: Mapped[str] = mapped_column(String(64))
