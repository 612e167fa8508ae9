"""Record audit events in the caller's transaction, and verify the chain.

Each trial has its own chain (its code); instance-level events (accounts, logins) go to the
"system" chain. An entry's hash is the SHA-256 of its canonical form (below), which includes the
previous entry's hash, so altering, deleting, inserting or reordering an entry breaks the chain
(AUD-03). Because a person with write access to the database could recompute a whole chain, every
`checkpoint_every` entries (and at least hourly) the head is signed with an Ed25519 key that lives
in the key directory, not in the database (AUD-04). A checkpoint also keeps the digest of every
entry it covers, so verification can name the exact entry that was rewritten.

Canonical form of an entry (version 1) — a JSON array, UTF-8, no spaces, in this order::

    ["allocator-audit/1", chain, seq, at, actor_user_id, actor_username, actor_name, actor_role,
     actor_site, action, object_type, object_id, site_code, old_values, new_values,
     sealed_values_base64, reason, request_id, software_version, prev_hash]

`old_values` / `new_values` are themselves canonical JSON texts (sorted keys) or null. The first
entry of a chain has prev_hash = 64 zeros. This is enough to re-verify an exported chain without
this software (DIB-05).

The audit row is written in the same transaction as the change it records: if it cannot be
written, the change does not happen (AUD-04, ACC-15).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from allocator import crypto
from allocator.db import insert_if_absent
from allocator.models import AuditChainHead, AuditCheckpoint, AuditEvent
from allocator.version import __version__

GENESIS = "0" * 64
SYSTEM_CHAIN = "system"
CANONICAL_TAG = "allocator-audit/1"


class Action(enum.StrEnum):
    """The fixed vocabulary of audited actions (AUD-01). Add here, never free text."""

    # accounts and access (system chain unless the event concerns one trial)
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_DEACTIVATED = "user.deactivated"
    USER_REACTIVATED = "user.reactivated"
    PASSWORD_SET = "user.password_set"  # noqa: S105 - an action name, not a secret
    PASSWORD_CHANGED = "user.password_changed"  # noqa: S105 - an action name, not a secret
    TOTP_ENROLLED = "user.totp_enrolled"
    TOTP_RESET = "user.totp_reset"
    LOGIN = "auth.login"
    LOGIN_FAILED = "auth.login_failed"
    LOCKED_OUT = "auth.locked_out"
    LOGOUT = "auth.logout"
    SESSION_EXPIRED = "auth.session_expired"
    SESSION_TERMINATED = "auth.session_terminated"
    PERMISSION_DENIED = "auth.permission_denied"
    ROLE_GRANTED = "role.granted"
    ROLE_REVOKED = "role.revoked"
    TOKEN_CREATED = "token.created"  # noqa: S105 - an action name, not a secret
    TOKEN_REVOKED = "token.revoked"  # noqa: S105 - an action name, not a secret
    SIGNATURE_APPLIED = "signature.applied"
    SIGNATURE_FAILED = "signature.failed"
    # trials and sites
    TRIAL_CREATED = "trial.created"
    DEFINITION_LOADED = "trial.definition_loaded"
    SITE_CREATED = "site.created"
    SITE_UPDATED = "site.updated"
    SITE_ACTIVATED = "site.activated"
    SITE_CLOSED = "site.closed"
    # audit itself
    AUDIT_CHECKPOINT = "audit.checkpoint"
    AUDIT_EXPORTED = "audit.exported"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who does something: the printed name and role are copied into every entry (AUD-01)."""

    user_id: int | None
    username: str
    name: str
    role: str
    site_code: str | None = None
    request_id: str = "-"
    address: str | None = None

    @classmethod
    def command_line(cls, os_user: str, request_id: str) -> Actor:
        """The operator of a CLI command on the server (init, load-trial, create-user ...)."""
        return cls(
            user_id=None,
            username=f"cli:{os_user}",
            name=f"{os_user} (command line)",
            role="system",
            request_id=request_id,
        )


@dataclass(frozen=True, slots=True)
class AuditLog:
    """What recording needs besides the session: the key ring (for sealed values and checkpoints),
    the checkpoint policy and the software version."""

    ring: crypto.KeyRing
    checkpoint_every: int = 100
    checkpoint_max_age: timedelta = timedelta(hours=1)
    software_version: str = __version__

    def record(
        self,
        session: Session,
        *,
        actor: Actor,
        chain: str,
        action: Action,
        object_type: str,
        object_id: object,
        at: datetime,
        old: Mapping[str, Any] | None = None,
        new: Mapping[str, Any] | None = None,
        sealed: Mapping[str, Any] | None = None,
        reason: str | None = None,
        site_code: str | None = None,
    ) -> AuditEvent:
        """Append one entry to `chain` inside the caller's transaction and return it.

        `sealed` holds values that could reveal an arm; they are encrypted and only unblinded views
        open them (AUD-05, BLD-07). Raises whatever the database raises: the caller's transaction
        then rolls back with the change it was recording."""
        head = _lock_head(session, chain)
        seq = head.seq + 1
        sealed_blob = None
        if sealed is not None:
            binding = crypto.Binding(
                trial=chain, table="audit_event", row=f"{chain}:{seq}", column="sealed_values"
            )
            sealed_blob = crypto.seal_json(self.ring, crypto.Purpose.LISTS, dict(sealed), binding)
        event = AuditEvent(
            chain=chain,
            seq=seq,
            at=format_time(at),
            actor_user_id=actor.user_id,
            actor_username=actor.username,
            actor_name=actor.name,
            actor_role=actor.role,
            actor_site=actor.site_code,
            action=action.value,
            object_type=object_type,
            object_id=str(object_id),
            site_code=site_code,
            old_values=canonical_json(old) if old is not None else None,
            new_values=canonical_json(new) if new is not None else None,
            sealed_values=sealed_blob,
            reason=reason,
            request_id=actor.request_id,
            software_version=self.software_version,
            prev_hash=head.hash,
            hash="",
        )
        event.hash = entry_hash(_canonical_fields(event))
        session.add(event)
        head.seq = seq
        head.hash = event.hash
        due_by_count = seq - head.checkpoint_seq >= self.checkpoint_every
        due_by_age = head.checkpoint_at is None or at - head.checkpoint_at >= self.checkpoint_max_age
        if due_by_count or due_by_age:
            session.flush()
            self._checkpoint(session, head, at)
        return event

    def checkpoint(self, session: Session, chain: str, at: datetime) -> AuditCheckpoint | None:
        """Sign the current head of `chain` now (if anything is unsigned). Used by `audit checkpoint`."""
        head = _lock_head(session, chain)
        if head.seq == head.checkpoint_seq:
            return None
        return self._checkpoint(session, head, at)

    def _checkpoint(self, session: Session, head: AuditChainHead, at: datetime) -> AuditCheckpoint:
        hashes = session.execute(
            select(AuditEvent.hash)
            .where(AuditEvent.chain == head.chain, AuditEvent.seq > head.checkpoint_seq)
            .order_by(AuditEvent.seq)
        ).scalars()
        covered = b"".join(bytes.fromhex(h) for h in hashes)
        message = checkpoint_message(head.chain, head.checkpoint_seq, head.seq, head.hash, covered)
        signed = crypto.sign_checkpoint(self.ring, message)
        checkpoint = AuditCheckpoint(
            chain=head.chain,
            from_seq=head.checkpoint_seq,
            seq=head.seq,
            hash=head.hash,
            entry_hashes=covered,
            at=at,
            key_id=signed.key_id,
            signature=signed.signature,
        )
        session.add(checkpoint)
        head.checkpoint_seq = head.seq
        head.checkpoint_at = at
        return checkpoint


def format_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _canonical_fields(e: AuditEvent) -> list[Any]:
    return [
        CANONICAL_TAG,
        e.chain,
        e.seq,
        e.at,
        e.actor_user_id,
        e.actor_username,
        e.actor_name,
        e.actor_role,
        e.actor_site,
        e.action,
        e.object_type,
        e.object_id,
        e.site_code,
        e.old_values,
        e.new_values,
        base64.b64encode(e.sealed_values).decode("ascii") if e.sealed_values is not None else None,
        e.reason,
        e.request_id,
        e.software_version,
        e.prev_hash,
    ]


def entry_hash(fields: list[Any]) -> str:
    raw = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def checkpoint_message(chain: str, from_seq: int, seq: int, head_hash: str, covered: bytes) -> bytes:
    """What a checkpoint signs: the chain, the range covered, the head hash and a digest of every
    covered entry hash."""
    digest = hashlib.sha256(covered).hexdigest()
    return f"{chain}|{from_seq}|{seq}|{head_hash}|{digest}".encode()


def _lock_head(session: Session, chain: str) -> AuditChainHead:
    """Lock (creating if needed) the head row of `chain`. Concurrent appends to one chain
    serialise here; on SQLite the write transaction already holds the database lock."""
    insert_if_absent(
        session,
        AuditChainHead,
        {"chain": chain, "seq": 0, "hash": GENESIS, "checkpoint_seq": 0, "checkpoint_at": None},
    )
    head = session.execute(
        select(AuditChainHead).where(AuditChainHead.chain == chain).with_for_update()
    ).scalar_one()
    session.refresh(head)
    return head


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int
    message: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of verifying one chain. `first_bad` is the sequence number of the first entry
    found altered, missing, inserted or reordered (None when the chain is intact)."""

    chain: str
    ok: bool
    entries: int
    first_bad: int | None
    problems: tuple[Problem, ...] = field(default=())
    checkpoints: int = 0
    unsigned_tail: int = 0

    def summary(self) -> str:
        if self.ok:
            return (
                f"chain {self.chain}: {self.entries} entries intact, {self.checkpoints} signed checkpoints"
                + (f", {self.unsigned_tail} entries after the last checkpoint" if self.unsigned_tail else "")
            )
        first = self.problems[0].message if self.problems else "unknown problem"
        return f"chain {self.chain}: BROKEN at entry {self.first_bad}: {first}"


_SELECT_ENTRIES = (
    "SELECT seq, chain, at, actor_user_id, actor_username, actor_name, actor_role, actor_site, action, "
    "object_type, object_id, site_code, old_values, new_values, sealed_values, reason, request_id, "
    "software_version, prev_hash, hash FROM audit_event WHERE chain = :chain ORDER BY seq, id"
)


def _rows(connection: Connection, chain: str) -> Iterator[Any]:
    # Per-statement options: Connection.execution_options() would change the connection itself.
    result = connection.execute(
        text(_SELECT_ENTRIES), {"chain": chain}, execution_options={"stream_results": True, "yield_per": 5000}
    )
    yield from result


def _fields(row: Any, seq: int | None = None) -> list[Any]:
    sealed = row[14]
    return [
        CANONICAL_TAG,
        row[1],
        row[0] if seq is None else seq,
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        base64.b64encode(bytes(sealed)).decode("ascii") if sealed is not None else None,
        row[15],
        row[16],
        row[17],
        row[18],
    ]


def verify_chain(connection: Connection, ring: crypto.KeyRing, chain: str) -> VerifyResult:
    """Check every entry of `chain`: sequence, links, hashes, checkpoints and head.

    Needs only the public half of the audit key in principle; here the ring supplies it."""
    checkpoints = list(
        connection.execute(
            select(
                AuditCheckpoint.from_seq,
                AuditCheckpoint.seq,
                AuditCheckpoint.hash,
                AuditCheckpoint.entry_hashes,
                AuditCheckpoint.key_id,
                AuditCheckpoint.signature,
            )
            .where(AuditCheckpoint.chain == chain)
            .order_by(AuditCheckpoint.seq)
        )
    )
    problems: list[Problem] = []
    expected_from: dict[int, str] = {}  # seq -> hash recorded by a valid checkpoint
    previous_end = 0
    for from_seq, seq, head_hash, covered_raw, key_id, signature in checkpoints:
        covered = bytes(covered_raw)
        message = checkpoint_message(chain, from_seq, seq, head_hash, covered)
        try:
            valid = crypto.verify_checkpoint(ring, key_id, message, bytes(signature))
        except crypto.KeyMissingError:
            valid = False
        if not valid or from_seq != previous_end or len(covered) != 32 * (seq - from_seq):
            problems.append(
                Problem(from_seq + 1, f"checkpoint at entry {seq} has an invalid signature or range")
            )
            break
        for index in range(seq - from_seq):
            expected_from[from_seq + 1 + index] = covered[32 * index : 32 * index + 32].hex()
        previous_end = seq
    prev_hash = GENESIS
    expected_seq = 1
    count = 0
    pending: Any = None
    for row in _rows(connection, chain):
        count += 1
        seq = row[0]
        if problems:
            continue
        recomputed = entry_hash(_fields(row))
        if seq != expected_seq:
            if seq > expected_seq:
                problems.append(Problem(expected_seq, f"entry {expected_seq} is missing (deleted?)"))
            else:
                problems.append(Problem(seq, f"entry {seq} appears twice"))
            continue
        if recomputed != row[19]:
            problems.append(Problem(seq, _diagnose_changed(row, pending)))
            continue
        if row[18] != prev_hash:
            problems.append(
                Problem(seq, f"entry {seq} does not link to entry {seq - 1} (inserted or reordered?)")
            )
            continue
        recorded = expected_from.get(seq)
        if recorded is not None and recorded != recomputed:
            problems.append(Problem(seq, f"entry {seq} differs from the signed checkpoint (chain rewritten)"))
            continue
        prev_hash = recomputed
        expected_seq = seq + 1
        pending = row
    if not problems:
        head = connection.execute(
            select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.chain == chain)
        ).first()
        last_seq = expected_seq - 1
        if previous_end > last_seq:
            problems.append(
                Problem(last_seq + 1, f"entries {last_seq + 1} to {previous_end} are missing (deleted?)")
            )
        elif head is not None and (head[0] != last_seq or head[1] != prev_hash):
            if head[0] > last_seq:
                problems.append(Problem(last_seq + 1, f"entries after {last_seq} are missing (deleted?)"))
            else:
                problems.append(
                    Problem(head[0] + 1, f"entry {head[0] + 1} is not part of the recorded chain (inserted?)")
                )
        elif head is None and count:
            problems.append(Problem(1, "the chain has entries but no head"))
    first_bad = min((p.seq for p in problems), default=None)
    return VerifyResult(
        chain=chain,
        ok=not problems,
        entries=count,
        first_bad=first_bad,
        problems=tuple(problems),
        checkpoints=len(checkpoints),
        unsigned_tail=max(0, count - previous_end) if not problems else 0,
    )


def _diagnose_changed(row: Any, _previous: Any) -> str:
    seq = row[0]
    for delta, label in ((1, "moved down from"), (-1, "moved up from")):
        if entry_hash(_fields(row, seq + delta)) == row[19]:
            return f"entry {seq} was entry {seq + delta} ({label} its place: reordered or an entry inserted)"
    return f"entry {seq} was altered (its content does not match its hash)"


def chains(connection: Connection) -> list[str]:
    return list(connection.execute(select(AuditChainHead.chain).order_by(AuditChainHead.chain)).scalars())


def verify_all(
    connection: Connection, ring: crypto.KeyRing, only: Iterable[str] | None = None
) -> list[VerifyResult]:
    names = list(only) if only is not None else chains(connection)
    return [verify_chain(connection, ring, name) for name in names]
