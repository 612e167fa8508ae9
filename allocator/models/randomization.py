"""Randomization lists, their versions, strata and slots. Arms exist here only sealed (BLD-05)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class ListMode(enum.StrEnum):
    """RND-13: TEST lists (UAT, training, demo) and PRODUCTION lists never mix."""

    TEST = "test"
    PRODUCTION = "production"


class ListStatus(enum.StrEnum):
    DRAFT = "draft"  # generated, awaiting QC and signed approval (RND-02)
    ACTIVE = "active"  # in use; immutable (RND-10)
    RETIRED = "retired"  # replaced or withdrawn; kept for ever


class RandomizationList(Base):
    __tablename__ = "randomization_list"
    __table_args__ = (UniqueConstraint("trial_id", "label"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    definition_id: Mapped[int] = mapped_column(ForeignKey("trial_definition.id"))
    mode: Mapped[str] = mapped_column(String(12))
    label: Mapped[str] = mapped_column(String(64))  # e.g. IFNG-PAIS/TEST/1; part of the stream domain
    status: Mapped[str] = mapped_column(String(12), default=ListStatus.DRAFT.value)
    method: Mapped[str] = mapped_column(String(24))
    algorithm: Mapped[str] = mapped_column(String(64))
    algorithm_version: Mapped[str] = mapped_column(String(16))
    parameters_json: Mapped[str] = mapped_column(Text)
    seed_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    seed_id: Mapped[str] = mapped_column(String(64))  # a digest that names the seed without revealing it
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    generated_at: Mapped[datetime]
    generated_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    generated_by_name: Mapped[str] = mapped_column(String(200))
    approved_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    activated_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]


class ListExtensionProposal(Base):
    """A list extension under change control (RND-10): proposed and signed by one person, then
    approved and signed by another, which appends the blocks as a new version; or declined with a
    reason. At most one is pending per list (the list's row lock). Never deleted; once decided,
    never changed (a trigger refuses both)."""

    __tablename__ = "list_extension_proposal"

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"), index=True)
    from_version: Mapped[int] = mapped_column(Integer)  # the version it extends: stale once changed
    additional: Mapped[int] = mapped_column(Integer)  # at least this many slots per stratum
    strata: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # None: every stratum
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12))  # pending | applied | declined
    proposed_at: Mapped[datetime]
    proposed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    proposed_by_name: Mapped[str] = mapped_column(String(200))
    proposal_signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))
    decided_at: Mapped[datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    decided_by_name: Mapped[str | None] = mapped_column(String(200))
    decision_reason: Mapped[str | None] = mapped_column(Text)  # why it was declined
    applied_version: Mapped[int | None] = mapped_column(Integer)


class ListVersion(Base):
    """Version 1 is the generated list; each extension appends blocks as a new version (RND-10)."""

    __tablename__ = "list_version"
    __table_args__ = (UniqueConstraint("list_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(
        String(64)
    )  # over the plaintext list (docs/randomization.md §7)
    storage_sha256: Mapped[str] = mapped_column(
        String(64)
    )  # over the stored (sealed) rows, checked without keys
    slot_count: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_by_name: Mapped[str] = mapped_column(String(200))
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))


class Stratum(Base):
    """One stratum of a list. `used` is the counter row locked to take the next slot (RND-05/08)."""

    __tablename__ = "stratum"
    __table_args__ = (UniqueConstraint("list_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"), index=True)
    key: Mapped[str] = mapped_column(String(500))  # e.g. site=P1;admission_cause=septic
    ordinal: Mapped[int] = mapped_column(Integer)
    requested: Mapped[int] = mapped_column(
        Integer
    )  # slots asked for; capacity is whole blocks, so >= requested
    capacity: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer, default=0)
    alert_remaining: Mapped[int] = mapped_column(Integer)
    # Digest of this stratum's stored slots: re-checked before every allocation from it (RND-10).
    storage_sha256: Mapped[str] = mapped_column(String(64))


class Slot(Base):
    """One allocation slot. Never updated: a subject points at its slot (Subject.slot_id, unique).

    `sealed` holds the arm, block number and block size (RND-12: block structure is as secret as
    the arm). `randomization_number` is random and opaque, so it says nothing about the stratum,
    the position or the block."""

    __tablename__ = "slot"
    __table_args__ = (
        UniqueConstraint("stratum_id", "position"),
        UniqueConstraint("list_id", "randomization_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"))
    stratum_id: Mapped[int] = mapped_column(ForeignKey("stratum.id"))
    position: Mapped[int] = mapped_column(Integer)
    list_version: Mapped[int] = mapped_column(Integer)
    randomization_number: Mapped[str] = mapped_column(String(16))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    # crypto.SlotMacer over this slot (issue 16): an allocation checks the slot it uses in O(1).
    # NULL for slots stored before migration 0012: their stratum is checked whole, as before.
    mac: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class IntegrityCheck(Base):
    """A check of a list's stored slots against the digests recorded at generation (RND-10).
    While the latest check of an active list failed, randomization from it is refused (ACC-15)."""

    __tablename__ = "integrity_check"

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"), index=True)
    at: Mapped[datetime]
    ok: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str] = mapped_column(Text)
    checked_by: Mapped[str] = mapped_column(String(200))


class MinimizationDecision(Base):
    """One minimization allocation. The arm and the imbalance figures behind it are sealed for the
    statistician; blinded roles see that a decision exists, never its content."""

    __tablename__ = "minimization_decision"
    __table_args__ = (UniqueConstraint("list_id", "arrival"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"), index=True)
    arrival: Mapped[int] = mapped_column(Integer)
    stratum_id: Mapped[int] = mapped_column(ForeignKey("stratum.id"))
    randomization_number: Mapped[str] = mapped_column(String(16))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
