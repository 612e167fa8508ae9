"""The audit trail: append-only, hash-chained per trial, with signed checkpoints (AUD-01..04)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base, BigIntPK


class AuditEvent(Base):
    """One audit entry. `hash` is the SHA-256 of the canonical JSON of every other column plus
    `prev_hash`; see allocator/audit.py for the exact form."""

    __tablename__ = "audit_event"
    __table_args__ = (
        UniqueConstraint("chain", "seq"),
        Index("ix_audit_event_chain_action", "chain", "action"),
        Index("ix_audit_event_chain_object", "chain", "object_type", "object_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    chain: Mapped[str] = mapped_column(String(24))  # a trial code, or "system"
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[str] = mapped_column(String(27))  # UTC, ISO 8601 with microseconds and Z
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    actor_username: Mapped[str] = mapped_column(String(64))
    actor_name: Mapped[str] = mapped_column(String(200))
    actor_role: Mapped[str] = mapped_column(String(32))
    actor_site: Mapped[str | None] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(64))
    site_code: Mapped[str | None] = mapped_column(String(10))  # the site the object belongs to
    old_values: Mapped[str | None] = mapped_column(Text)
    new_values: Mapped[str | None] = mapped_column(Text)
    sealed_values: Mapped[bytes | None] = mapped_column(LargeBinary)  # arm-revealing values (AUD-05)
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str] = mapped_column(String(64))
    software_version: Mapped[str] = mapped_column(String(32))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """The head of each chain. Locked (FOR UPDATE / BEGIN IMMEDIATE) by every append, so entries
    get gap-free sequence numbers and each links to the one before."""

    __tablename__ = "audit_chain_head"

    chain: Mapped[str] = mapped_column(String(24), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    checkpoint_seq: Mapped[int] = mapped_column(BigInteger)
    checkpoint_at: Mapped[datetime | None]
    # Ed25519 signature of (chain, seq, hash), renewed by every transaction that appends: a change
    # to any committed entry breaks it, without waiting for the next checkpoint (issue 15).
    head_key_id: Mapped[str | None] = mapped_column(String(64))
    head_signature: Mapped[bytes | None] = mapped_column(LargeBinary)


class AuditCheckpoint(Base):
    """An Ed25519 signature, made with a key kept outside the database, over the chain's head and
    the hashes of every entry since the previous checkpoint (kept in `entry_hashes`, 32 bytes
    each), so that a rewritten entry can be named exactly."""

    __tablename__ = "audit_checkpoint"
    __table_args__ = (UniqueConstraint("chain", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    chain: Mapped[str] = mapped_column(String(24))
    from_seq: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    entry_hashes: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary)


class AuditVerification(Base):
    """The last verification of a chain that found it intact (issue 21): the audit pages show it and
    verify only what was appended since, instead of the whole chain on every view. Signed with the
    audit key (its own domain), so that a row edited by hand is ignored and the chain verified in
    full again. `resume_seq`/`resume_hash` are the last signed checkpoint verified: the next
    verification starts after it (entries after it are re-read, being covered by the next one)."""

    __tablename__ = "audit_verification"

    chain: Mapped[str] = mapped_column(String(24), primary_key=True)
    verified_seq: Mapped[int] = mapped_column(BigInteger)  # entries 1..verified_seq found intact
    verified_at: Mapped[datetime]
    resume_seq: Mapped[int] = mapped_column(BigInteger)
    resume_hash: Mapped[str] = mapped_column(String(64))
    checkpoints: Mapped[int] = mapped_column(BigInteger)  # signed checkpoints verified up to resume_seq
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
