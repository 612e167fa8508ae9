"""Sites of a trial and their activation state (RND-14)."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class SiteStatus(enum.StrEnum):
    PENDING = "pending"  # defined, not yet allowed to randomize
    ACTIVE = "active"  # approvals and delegation recorded; randomization allowed
    CLOSED = "closed"  # no new subjects; follow-up continues


class Site(Base):
    __tablename__ = "site"
    __table_args__ = (UniqueConstraint("trial_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    code: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100))
    principal_investigator: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(12), default=SiteStatus.PENDING.value)
    approval_date: Mapped[date | None]
    delegation_log_date: Mapped[date | None]
    activated_at: Mapped[datetime | None]
    # UNB-07: where the site's offline code-break material is and who holds it, recorded at activation.
    code_break_evidence: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
