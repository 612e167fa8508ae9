"""Trials and their versioned definitions."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class TrialStatus(enum.StrEnum):
    """Trial life cycle. The planned unblinding is the signed walk ACTIVE -> LOCKED -> UNBLINDED."""

    SETUP = "setup"
    ACTIVE = "active"
    LOCKED = "locked"
    UNBLINDED = "unblinded"


class Trial(Base):
    __tablename__ = "trial"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    title: Mapped[str] = mapped_column(Text)
    short_title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=TrialStatus.SETUP.value)
    # The definition version in force (the highest loaded version).
    definition_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]


class TrialDefinitionVersion(Base):
    """One loaded version of a trial definition file. Append-only: a change is a new version."""

    __tablename__ = "trial_definition"
    __table_args__ = (UniqueConstraint("trial_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    allocation_fingerprint: Mapped[str] = mapped_column(String(64))
    source_name: Mapped[str] = mapped_column(String(300))
    source_text: Mapped[str] = mapped_column(Text)
    canonical_json: Mapped[str] = mapped_column(Text)
    loaded_at: Mapped[datetime]
    loaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    loaded_by_name: Mapped[str] = mapped_column(String(200))
