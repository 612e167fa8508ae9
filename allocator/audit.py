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

Entries are queued on the session and written together just before the transaction commits: one
`SELECT ... FOR UPDATE` of each chain head, the hashes chained in memory, one multi-row INSERT, one
head UPDATE. Every append to a chain serialises on its head row, so taking that lock at the end
instead of at the first `record` keeps it for milliseconds rather than for the whole transaction
(issue 6). Nothing else changes: the entries are still written inside the caller's transaction
(if the transaction fails, no entry is written; if the write fails, the commit fails and the
change rolls back), in the order they were recorded, and with the same sequence numbers, hashes
and checkpoints as if written one by one. A query of the audit tables in the same session writes
the queue first, so code that reads its own entries back keeps seeing them.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Connection,
    String,
    Table,
    Text,
    Update,
    bindparam,
    event,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy import column as sql_column
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.sql.util import find_tables
from sqlalchemy.types import TypeEngine

from allocator import crypto
from allocator.db import Direct, insert_if_absent, upsert
from allocator.models import AuditChainHead, AuditCheckpoint, AuditEvent, AuditVerification
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
    # randomization lists (RND-02, RND-10)
    LIST_GENERATED = "list.generated"
    LIST_APPROVED = "list.approved"
    LIST_ACTIVATED = "list.activated"
    LIST_EXTENSION_PROPOSED = "list.extension_proposed"  # RND-10: first of two signatures
    LIST_EXTENSION_DECLINED = "list.extension_declined"
    LIST_EXTENSION_REFUSED = "list.extension_refused"  # e.g. its proposer tried to approve it
    LIST_EXTENDED = "list.extended"
    LIST_RETIRED = "list.retired"
    LIST_VERIFIED = "list.verified"
    LIST_EXPORTED = "list.exported"
    LIST_INTEGRITY_FAILED = "list.integrity_failed"
    TRIAL_STATUS_CHANGED = "trial.status_changed"
    # kits and supply (LBL, BLD-04)
    KIT_LIST_CREATED = "kit_list.created"
    SHIPMENT_PREPARED = "shipment.prepared"
    SHIPMENT_SHIPPED = "shipment.shipped"
    SHIPMENT_RECEIVED = "shipment.received"
    KIT_STATUS_CHANGED = "kit.status_changed"
    BATCH_EXPIRY_CHANGED = "batch.expiry_changed"
    EXCURSION_REPORTED = "excursion.reported"  # issue 19: kits quarantined after a temperature excursion
    EXCURSION_DECIDED = "excursion.decided"  # the sponsor's signed release or destruction
    KIT_RELABELLED = "kit.relabelled"  # issue 19: a new expiry label confirmed by scan
    KIT_CHECK_FAILED = "kit.check_failed"  # issue 21: kits whose records disagree with their histories
    RESUPPLY_IMPOSSIBLE = "supply.resupply_impossible"  # issue 19: the depot cannot resupply a site
    KITS_RETURNED = "supply.kits_returned"  # issue 19: a batch of kits sent back to the depot
    KITS_DESTROYED = "supply.kits_destroyed"  # issue 19: a batch of kits destroyed on site (signed)
    DOCUMENT_PRINTED = "document.printed"
    # subjects (RND-05..09)
    SCREENING_FAILED = "screening.ineligible"
    SUBJECT_RANDOMIZED = "subject.randomized"
    SUBJECT_REGISTERED = "subject.registered"  # an observational study's participant (issue 20)
    LAB_CLOSURE_ADDED = "lab.closure_added"  # a day the central lab of an observational study is closed
    LAB_CLOSURE_WITHDRAWN = "lab.closure_withdrawn"  # a closure entered by mistake, withdrawn
    # issue 20 (labship): collected samples shipped to the central lab and received there
    LAB_SHIPMENT_PREPARED = "lab_shipment.prepared"
    LAB_SHIPMENT_SHIPPED = "lab_shipment.shipped"
    SAMPLE_RECEIVED = "sample.received"  # one tube set scanned at the lab: received, or unusable
    LAB_SHIPMENT_RECEIVED = "lab_shipment.received"  # the receipt closed (tube sets not scanned: missing)
    # issue 20, the cohort's tube sets (services/samples): generated, damaged or missed, collected
    SAMPLE_KITS_GENERATED = "sample_kit.generated"
    SAMPLE_KIT_STATUS_CHANGED = "sample_kit.status_changed"
    SAMPLE_COLLECTED = "sample.collected"
    SAMPLE_SCAN_REFUSED = "sample.scan_refused"
    SUBJECT_FLAGGED_IN_ERROR = "subject.randomized_in_error"
    SUBJECT_STRATUM_CORRECTED = "subject.stratum_corrected"
    SUBJECT_WITHDRAWN = "subject.withdrawn"  # REP-04
    KIT_REPLACED = "kit.replaced"
    KITS_DISPENSED = "dispensation.dispensed"
    DISPENSING_REFUSED = "dispensation.refused"
    PREPARATION_READ = "dispensation.preparation_instruction"
    ADMINISTRATION_RECORDED = "administration.recorded"
    SCAN_REFUSED = "administration.scan_refused"
    # unblinding (UNB-01..11) and reports (REP, BLD-09)
    UNBLINDING_EMERGENCY = "unblinding.emergency"
    UNBLINDING_PV = "unblinding.pharmacovigilance"
    UNBLINDING_RESULT_SHOWN = "unblinding.result_shown"  # the arm shown to the unblinder, once (issue 13)
    UNBLINDING_OFFLINE = "unblinding.offline_registered"
    UNBLINDING_REFUSED = "unblinding.refused"
    UNBLINDING_RATE_ALERT = "unblinding.rate_alert"
    UNBLINDING_ACCIDENTAL = "unblinding.accidental_reported"
    CODE_BREAK_GENERATED = "code_break.generated"
    # unblinding drills (UNB-11): kept apart from the unblinding actions that reviews count
    DRILL_SUBJECT_CREATED = "drill.subject_created"
    DRILL_UNBLINDING = "drill.unblinding"
    DRILL_RESULT_SHOWN = "drill.result_shown"
    DRILL_SHEET_GENERATED = "drill.sheet_generated"
    DRILL_OFFLINE_REGISTERED = "drill.offline_registered"
    CODE_BREAK_CHECKED = "code_break.checked"
    INTERIM_PACKAGE_RELEASED = "report.interim_package"
    UNBLINDED_LISTING_RELEASED = "report.unblinded_listing"
    REPORT_EXPORTED = "report.exported"
    # audit itself
    AUDIT_CHECKPOINT = "audit.checkpoint"
    AUDIT_EXPORTED = "audit.exported"
    # every read of an arm, by anyone, for any purpose (BLD-08)
    ARM_READ = "arm.read"
    AUDIT_REVIEWED = "audit.reviewed"
    # data leaving the instance (DIB-04, DIB-05, DIB-07) and proven restores (DIB-02, VAL-06)
    TRIAL_EXPORTED = "trial.exported"
    TRIAL_ARCHIVED = "trial.archived"
    RESTORE_DRILL = "backup.restore_drill"


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
    # Where every signed head is appended after its transaction commits (see `Witness`).
    witness: Path | None = None

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
    ) -> Entry:
        """Append one entry to `chain` inside the caller's transaction and return it.

        The entry is queued on the session and written when the transaction commits (see the
        module docstring); its `seq`, `prev_hash`, `hash` and `sealed_values` are filled in then.
        `sealed` holds values that could reveal an arm; they are encrypted and only unblinded views
        open them (AUD-05, BLD-07). A failure to write raises from the commit: the caller's
        transaction then rolls back with the change it was recording."""
        entry = Entry(
            chain=chain,
            at=format_time(at),
            actor_user_id=actor.user_id,
            actor_username=printable(actor.username),
            actor_name=storable(actor.name),
            actor_role=actor.role,
            actor_site=_optional(actor.site_code),
            action=action.value,
            object_type=object_type,
            object_id=printable(str(object_id))[:64],
            site_code=_optional(site_code),
            old_values=canonical_json(storable_value(old)) if old is not None else None,
            new_values=canonical_json(storable_value(new)) if new is not None else None,
            sealed_values=None,
            reason=_optional(reason),
            request_id=storable(actor.request_id),
            software_version=self.software_version,
        )
        # The sealed values are copied now: the caller may change its mapping before the commit.
        queued = _Queued(entry, dict(sealed) if sealed is not None else None, at)
        queue = session.info.get(_QUEUE)
        if queue is not None and queue.log is not self:
            write_queued(session)  # another key ring or policy: keep each queue to one log
            queue = None
        if queue is None:
            queue = session.info[_QUEUE] = _Queue(self)
        queue.entries.append(queued)
        if session.in_nested_transaction():
            # A savepoint may roll back on its own: write at once so that the entry lives and dies
            # with the part of the transaction that recorded it.
            write_queued(session)
        return entry

    def _write(self, session: Session, entries: list[_Queued], connection: Connection | None = None) -> None:
        """Append `entries` (queued in this order) to their chains: lock each head (chains in
        name order, so two transactions writing to the same chains cannot deadlock on them),
        chain the hashes in memory, insert the rows, move the head, sign a checkpoint when due.
        `connection` is given when the entries must be written outside a savepoint just begun."""
        by_chain: dict[str, list[_Queued]] = {}
        for queued in entries:
            by_chain.setdefault(queued.entry.chain, []).append(queued)
        if connection is None:
            session.flush()  # the rows the entries refer to (a new user ...) go first
            connection = session.connection()
        for chain in sorted(by_chain):
            head = _lock_head(connection, chain)
            first_seq = head.seq  # the witness line of this transaction starts after it
            rows: list[dict[str, Any]] = []
            for queued in by_chain[chain]:
                entry = queued.entry
                entry.seq = head.seq + 1
                if queued.sealed is not None:
                    binding = crypto.Binding(
                        trial=chain, table="audit_event", row=f"{chain}:{entry.seq}", column="sealed_values"
                    )
                    entry.sealed_values = crypto.seal_json(
                        self.ring, crypto.Purpose.LISTS, queued.sealed, binding
                    )
                entry.prev_hash = head.hash
                entry.hash = entry_hash(canonical_fields(entry))
                rows.append({column: getattr(entry, column) for column in _INSERTED_COLUMNS})
                head.seq = entry.seq
                head.hash = entry.hash
                due_by_count = head.seq - head.checkpoint_seq >= self.checkpoint_every
                due_by_age = (
                    head.checkpoint_at is None or queued.at - head.checkpoint_at >= self.checkpoint_max_age
                )
                if due_by_count or due_by_age:
                    # The checkpoint covers exactly the entries up to this one, as when entries
                    # were written one by one.
                    _insert_entries(connection, rows)
                    rows = []
                    self._checkpoint(connection, head, queued.at)
            self._update_head(connection, head, rows)
            if self.witness is not None:
                witnessed = session.info.setdefault(_WITNESS, {})
                witnessed.setdefault(chain, (self.witness, first_seq))

    def checkpoint(self, session: Session, chain: str, at: datetime) -> AuditCheckpoint | None:
        """Sign the current head of `chain` now (if anything is unsigned). Used by `audit checkpoint`."""
        write_queued(session)
        connection = session.connection()
        head = _lock_head(connection, chain)
        if head.seq == head.checkpoint_seq:
            return None
        checkpoint = self._checkpoint(connection, head, at)
        self._update_head(connection, head)
        return checkpoint

    def _update_head(
        self, connection: Connection, head: _Head, rows: list[dict[str, Any]] | None = None
    ) -> None:
        """Insert `rows` (entries of the head's chain, in order) and move the head and sign it:
        every committed entry is then covered by a signature made with the audit key, which lives
        outside the database (no unsigned tail). On PostgreSQL the rows and the head go in one
        statement (issue 16: a round trip less for every transaction that records something)."""
        signed = crypto.sign_head(self.ring, head_message(head.chain, head.seq, head.hash))
        parameters = {
            "head_chain": head.chain,
            "seq": head.seq,
            "hash": head.hash,
            "checkpoint_seq": head.checkpoint_seq,
            "checkpoint_at": head.checkpoint_at,
            "head_key_id": signed.key_id,
            "head_signature": signed.signature,
        }
        if rows and connection.dialect.name == "postgresql":
            parameters["entries"] = _entries_json(rows)
            _APPEND_AND_UPDATE_HEAD.rows(connection, parameters)
            return
        _insert_entries(connection, rows or [])
        connection.execute(_UPDATE_HEAD, parameters)

    def _checkpoint(self, connection: Connection, head: _Head, at: datetime) -> AuditCheckpoint:
        """Sign the head: its hash and the hashes of every entry since the last checkpoint. The
        caller writes the head (its checkpoint fields are moved here)."""
        hashes = connection.execute(
            select(AuditEvent.hash)
            .where(AuditEvent.chain == head.chain, AuditEvent.seq > head.checkpoint_seq)
            .order_by(AuditEvent.seq)
        )
        covered = b"".join(bytes.fromhex(h) for (h,) in hashes)
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
        connection.execute(
            insert(_AUDIT_CHECKPOINT),
            {c.key: getattr(checkpoint, c.key) for c in _AUDIT_CHECKPOINT.columns if c.key != "id"},
        )
        head.checkpoint_seq = head.seq
        head.checkpoint_at = at
        return checkpoint


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def storable(text: str) -> str:
    """Encode what a database cannot store (issue 14, D3/D4): NUL, which PostgreSQL refuses in
    text, and lone surrogates, which no UTF-8 encoder writes. A refusal quoting hostile input is
    still recorded, with those characters as visible escapes."""
    return _UNSTORABLE.sub(_escape, text)


def storable_value(value: Any) -> Any:
    """`storable` applied to every string (keys included) of a JSON-like value."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, Mapping):
        return {storable(k) if isinstance(k, str) else k: storable_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_value(v) for v in value]
    return value


def printable(text: str) -> str:
    """Encode control characters (AUD-10): a username like "bob\\n[INFO] fake" cannot forge
    lines in a log or a report; and lone surrogates, which cannot be stored (`storable`)."""
    return storable(_CONTROL.sub(_escape, text))


def _optional(text: str | None) -> str | None:
    return None if text is None else storable(text)


def format_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical_fields(e: AuditEvent | Entry) -> list[Any]:
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


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def entry_hash(fields: list[Any]) -> str:
    """SHA-256 (hex) of the canonical form: the JSON array of `fields`, UTF-8, no spaces."""
    return hashlib.sha256(_ENCODER.encode(fields).encode("utf-8")).hexdigest()


def head_message(chain: str, seq: int, head_hash: str) -> bytes:
    """What a head signature signs: the chain, its last sequence number and that entry's hash
    (which depends on every entry before it)."""
    return f"{chain}|{seq}|{head_hash}".encode()


def checkpoint_message(chain: str, from_seq: int, seq: int, head_hash: str, covered: bytes) -> bytes:
    """What a checkpoint signs: the chain, the range covered, the head hash and a digest of every
    covered entry hash."""
    digest = hashlib.sha256(covered).hexdigest()
    return f"{chain}|{from_seq}|{seq}|{head_hash}|{digest}".encode()


@dataclass(slots=True)
class _Head:
    """The head row of a chain, as locked by `_lock_head` (plain values: the audit trail is
    written with Core statements, outside the ORM's unit of work)."""

    chain: str
    seq: int
    hash: str
    checkpoint_seq: int
    checkpoint_at: datetime | None


_HEAD_COLUMNS = (
    AuditChainHead.chain,
    AuditChainHead.seq,
    AuditChainHead.hash,
    AuditChainHead.checkpoint_seq,
    AuditChainHead.checkpoint_at,
)
_SELECT_HEAD = Direct(
    select(*_HEAD_COLUMNS).where(AuditChainHead.chain == bindparam("chain")).with_for_update()
)
_UPDATE_HEAD = (
    update(AuditChainHead)
    .where(AuditChainHead.chain == bindparam("head_chain"))
    .values(
        seq=bindparam("seq"),
        hash=bindparam("hash"),
        checkpoint_seq=bindparam("checkpoint_seq"),
        checkpoint_at=bindparam("checkpoint_at"),
        head_key_id=bindparam("head_key_id"),
        head_signature=bindparam("head_signature"),
    )
)


def _unbounded(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    return String() if isinstance(type_, String) and not isinstance(type_, Text) else type_


def _append_and_update_head() -> Update:
    """`_UPDATE_HEAD` with the insertion of the entries as a data-modifying CTE (PostgreSQL). The
    entries go as ONE text parameter (`entries`, see `_entries_json`): a JSON array of objects
    keyed by column, expanded into typed rows by `json_to_recordset`, `sealed_values` hex-encoded
    and decoded here. One statement for any number of entries, with 8 parameters: SQLAlchemy caches
    its compiled form (a multi-row `VALUES (…), (…)` has no cache key and was compiled in every
    transaction, issue 16) and psycopg its parsed form (it does not for statements of over 50
    parameters); and psycopg dumps one string instead of one array per column, element by element
    (about a tenth of a randomization's CPU in the client went to dumping array parameters)."""
    # Columns of VARCHAR without a length: VARCHAR(n) would cut a longer text silently, where the
    # insert into the column refuses it.
    record = [
        sql_column(name, Text() if name == "sealed_values" else _unbounded(_AUDIT_EVENT.c[name].type))
        for name in _INSERTED_COLUMNS
    ]
    rows = (
        func.json_to_recordset(sql_cast(bindparam("entries", type_=Text()), JSON()))
        .table_valued(*record)
        .render_derived(name="entries", with_types=True)
    )
    values = [
        func.decode(rows.c[name], literal_column("'hex'")) if name == "sealed_values" else rows.c[name]
        for name in _INSERTED_COLUMNS
    ]
    appended = insert(_AUDIT_EVENT).from_select(list(_INSERTED_COLUMNS), select(*values)).cte("appended")
    return _UPDATE_HEAD.add_cte(appended)


def _entries_json(rows: list[dict[str, Any]]) -> str:
    """The rows for `_APPEND_AND_UPDATE_HEAD`: JSON carries every value of an entry unchanged (its
    texts are `storable`: no NUL, no lone surrogate; its numbers are integers); the bytes of
    `sealed_values` go as hex."""
    for row in rows:
        sealed = row["sealed_values"]
        if sealed is not None:
            row["sealed_values"] = sealed.hex()
    return _ROWS_ENCODER.encode(rows)


_ROWS_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _lock_head(connection: Connection, chain: str) -> _Head:
    """Lock (creating if needed) the head row of `chain`. Concurrent appends to one chain
    serialise here; on SQLite the write transaction already holds the database lock. The head
    exists except for a chain's first entry, so one statement usually does."""
    row = _SELECT_HEAD.one_or_none(connection, {"chain": chain})
    if row is None:
        insert_if_absent(
            connection,
            AuditChainHead,
            {"chain": chain, "seq": 0, "hash": GENESIS, "checkpoint_seq": 0, "checkpoint_at": None},
        )
        row = _SELECT_HEAD.one(connection, {"chain": chain})
    return _Head(*row)


# --- the queue of entries not yet written ----------------------------------------------------

_QUEUE = "allocator.audit.queue"
_WITNESS = "allocator.audit.witness"  # chain -> (witness file, head seq before this transaction)
_WITNESS_LINES = "allocator.audit.witness_lines"  # lines to append once the commit succeeded
_AUDIT_TABLES = frozenset({"audit_event", "audit_chain_head", "audit_checkpoint"})
_AUDIT_EVENT = cast(Table, AuditEvent.__table__)
_AUDIT_CHECKPOINT = cast(Table, AuditCheckpoint.__table__)
_INSERTED_COLUMNS = tuple(c.key for c in _AUDIT_EVENT.columns if c.key != "id")
_APPEND_AND_UPDATE_HEAD = Direct(_append_and_update_head())


@dataclass(slots=True)
class Entry:
    """An entry being appended: the columns of `audit_event` except `id`, as plain values. The row
    is inserted with Core, so an ORM `AuditEvent` was only a container, and building one (its
    instrumented attributes) cost about as much as everything else `record` does (issue 16).
    `seq`, `sealed_values`, `prev_hash` and `hash` are filled in when the entry is written; until
    then they are None, as they were on the unsaved ORM object."""

    chain: str
    at: str
    actor_user_id: int | None
    actor_username: str
    actor_name: str
    actor_role: str
    actor_site: str | None
    action: str
    object_type: str
    object_id: str
    site_code: str | None
    old_values: str | None
    new_values: str | None
    reason: str | None
    request_id: str
    software_version: str
    seq: int | None = None
    sealed_values: bytes | None = None
    prev_hash: str | None = None
    hash: str | None = None


@dataclass(slots=True)
class _Queued:
    entry: Entry
    sealed: dict[str, Any] | None
    at: datetime


@dataclass(slots=True)
class _Queue:
    log: AuditLog
    entries: list[_Queued] = field(default_factory=list)


def write_queued(session: Session) -> None:
    """Write the entries recorded in `session` and not yet written. Called before every commit;
    call it directly before reading the audit tables with raw SQL in the same transaction."""
    queue = session.info.pop(_QUEUE, None)
    if queue is not None and queue.entries:
        queue.log._write(session, queue.entries)


def _insert_entries(connection: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(insert(_AUDIT_EVENT), rows)


@event.listens_for(Session, "before_commit")
def _write_before_commit(session: Session) -> None:
    write_queued(session)
    if _WITNESS in session.info and not session.in_nested_transaction():
        session.info[_WITNESS_LINES] = _witness_lines(session.connection(), session.info.pop(_WITNESS))


@event.listens_for(Session, "after_commit")
def _append_to_witness(session: Session) -> None:
    if not session.in_nested_transaction():
        for path, line in session.info.pop(_WITNESS_LINES, ()):
            append_witness_line(path, line)


@event.listens_for(Session, "after_transaction_create")
def _write_before_savepoint(session: Session, transaction: SessionTransaction) -> None:
    # Entries recorded before a savepoint belong to the enclosing transaction: write them on its
    # connection before the SAVEPOINT is emitted (the savepoint takes its connection lazily), so
    # that rolling the savepoint back does not take them along.
    queue = session.info.get(_QUEUE)
    if transaction.nested and transaction.parent is not None and queue is not None and queue.entries:
        session.info.pop(_QUEUE)
        queue.log._write(session, queue.entries, transaction.parent.connection(None))


@event.listens_for(Session, "after_transaction_end")
def _forget_after_transaction(session: Session, transaction: SessionTransaction) -> None:
    # A rolled-back transaction takes its unwritten entries with it (after a commit the queue is
    # already empty).
    if transaction.parent is None:
        session.info.pop(_QUEUE, None)
        session.info.pop(_WITNESS, None)
        session.info.pop(_WITNESS_LINES, None)


@event.listens_for(Session, "do_orm_execute")
def _write_before_audit_queries(state: ORMExecuteState) -> None:
    queue = state.session.info.get(_QUEUE)
    if queue is not None and queue.entries and _touches_audit(state.statement):
        write_queued(state.session)


def _touches_audit(statement: Any) -> bool:
    return any(
        getattr(table, "name", None) in _AUDIT_TABLES
        for table in find_tables(statement, include_crud=True, include_joins=True, include_aliases=True)
    )


# --- the witness: signed heads kept where the database cannot rewrite them ---------------------

_log = logging.getLogger(__name__)
WITNESS_TAG = "allocator-witness/1"


def _witness_lines(
    connection: Connection, chains: Mapping[str, tuple[Path, int]]
) -> list[tuple[Path, bytes]]:
    """One line per chain this transaction appended to: the entries it added (their hashes) and
    the signed head, read back just before the commit (after any savepoint rolled back)."""
    lines: list[tuple[Path, bytes]] = []
    for chain, (path, before) in sorted(chains.items()):
        head = connection.execute(
            select(
                AuditChainHead.seq,
                AuditChainHead.hash,
                AuditChainHead.head_key_id,
                AuditChainHead.head_signature,
            ).where(AuditChainHead.chain == chain)
        ).one()
        if head.seq <= before or head.head_signature is None:
            continue
        hashes = connection.execute(
            select(AuditEvent.hash)
            .where(AuditEvent.chain == chain, AuditEvent.seq > before, AuditEvent.seq <= head.seq)
            .order_by(AuditEvent.seq)
        ).scalars()
        record = {
            "v": WITNESS_TAG,
            "chain": chain,
            "after": before,
            "seq": head.seq,
            "hash": head.hash,
            "entries": list(hashes),
            "key": head.head_key_id,
            "sig": base64.b64encode(bytes(head.head_signature)).decode("ascii"),
        }
        lines.append((path, (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()))
    return lines


def append_witness_line(path: Path, line: bytes) -> None:
    """Append one line with a single write (O_APPEND: lines from concurrent processes never mix)
    and flush it to disk. The transaction has committed already: a failure is logged, and
    `audit verify` then reports the entries as newer than the witness."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _log.error("audit witness %s could not be written: %s", path, exc)


@dataclass(frozen=True, slots=True)
class Witnessed:
    """What the witness file vouches for about one chain: the hash of every entry it saw (by
    sequence number) and the highest head it saw."""

    path: Path
    pinned: dict[int, str]
    top: int
    lines: int
    problem: Problem | None = None


def read_witness(path: Path, ring: crypto.KeyRing, chain: str, *, behind: int = 0) -> Witnessed:
    """Read and check the witness lines of `chain`: each must carry a valid head signature and
    entry hashes that end in its head. Lines may arrive out of order (concurrent commits).
    Lines that end at or before entry `behind` (already verified, see `verify_chain_since`) are
    not checked again: they cannot tell anything about the entries after it."""
    pinned: dict[int, str] = {}
    top = 0
    count = 0
    try:
        # Bytes that are not UTF-8 become U+FFFD: their line is then reported as damaged.
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return Witnessed(path, pinned, 0, 0)
    except OSError as exc:
        return Witnessed(path, pinned, 0, 0, Problem(1, f"the witness file cannot be read ({exc.strerror})"))
    for number, raw in enumerate(text.splitlines(), start=1):
        try:
            record = json.loads(raw)
            if record.get("v") != WITNESS_TAG or record.get("chain") != chain:
                continue
            after, seq, head_hash = int(record["after"]), int(record["seq"]), str(record["hash"])
            if seq <= behind:
                top = max(top, seq)
                continue
            entries = [str(h) for h in record["entries"]]
            signature = base64.b64decode(record["sig"], validate=True)
            valid = crypto.verify_head(
                ring, str(record["key"]), head_message(chain, seq, head_hash), signature
            )
        except (ValueError, KeyError, TypeError, crypto.KeyMissingError):
            valid, after, seq, entries = False, 0, 0, []
        if not valid or len(entries) != seq - after or not entries or entries[-1] != head_hash:
            problem = Problem(max(seq, 1), f"witness line {number} is damaged or not signed by the audit key")
            return Witnessed(path, pinned, top, count, problem)
        count += 1
        top = max(top, seq)
        for offset, entry in enumerate(entries, start=after + 1):
            pinned[offset] = entry
    return Witnessed(path, pinned, top, count)


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
    unsigned_tail: int = 0  # entries after the last checkpoint (covered by the signed head)
    witness: Path | None = None  # None: no witness was given, truncation cannot be detected
    witnessed_upto: int = 0  # the highest entry the witness saw
    unwitnessed: int = 0  # entries newer than the witness (committed, witness not yet written)
    # Where a later verification may start, for a whole chain found intact: the last signed
    # checkpoint verified (its entry and head hash). See `kept_whole`.
    resume: tuple[int, str] | None = field(default=None, compare=False)

    def summary(self) -> str:
        if self.ok:
            if self.witness is None:
                protection = (
                    "; no witness given: removing the newest entries and rolling the head back "
                    "would not be detected (set ALLOCATOR_AUDIT_WITNESS)"
                )
            else:
                protection = f"; witness {self.witness}: seen up to entry {self.witnessed_upto}" + (
                    f", {self.unwitnessed} newer entries not yet witnessed" if self.unwitnessed else ""
                )
            return (
                f"chain {self.chain}: {self.entries} entries intact, {self.checkpoints} signed checkpoints, "
                f"head signed{protection}"
            )
        first = self.problems[0].message if self.problems else "unknown problem"
        return f"chain {self.chain}: BROKEN at entry {self.first_bad}: {first}"


_SELECT_ENTRIES = (
    "SELECT chain, seq, at, actor_user_id, actor_username, actor_name, actor_role, actor_site, action, "
    "object_type, object_id, site_code, old_values, new_values, sealed_values, reason, request_id, "
    "software_version, prev_hash, hash FROM audit_event WHERE chain = {p} AND seq >= {p} AND seq <= {p} "
    "ORDER BY seq, id"
)
_NO_LIMIT = 2**62


def _rows(connection: Connection, chain: str, low: int = 0, high: int = _NO_LIMIT) -> Iterator[Any]:
    """Plain tuples straight from the driver, fetched in batches: verification is a hot loop
    (issue 3 target: 100,000 entries per second), and SQLAlchemy's row objects cost more than the
    hashing itself. PostgreSQL streams through a server-side cursor."""
    raw = connection.connection.dbapi_connection
    if raw is None:  # pragma: no cover - a live Connection always has one
        raise RuntimeError("no database connection")
    if connection.dialect.name == "postgresql":
        cursor = raw.cursor(name=f"allocator_audit_verify_{low}")
        cursor.itersize = 10_000  # type: ignore[attr-defined] # psycopg server-side cursor
        cursor.execute(_SELECT_ENTRIES.format(p="%s"), (chain, low, high))
    else:
        cursor = raw.cursor()
        cursor.execute(_SELECT_ENTRIES.format(p="?"), (chain, low, high))
    try:
        while batch := cursor.fetchmany(10_000):
            yield from batch
    finally:
        cursor.close()


def _fields(row: Any, seq: int | None = None) -> list[Any]:
    """The canonical fields of a row selected by _SELECT_ENTRIES (which lists the columns in
    canonical order: everything up to prev_hash, then hash). `seq` overrides the stored one."""
    fields = [CANONICAL_TAG, *row[:19]]
    if row[14] is not None:
        fields[15] = base64.b64encode(bytes(row[14])).decode("ascii")
    if seq is not None:
        fields[2] = seq
    return fields


@dataclass(frozen=True, slots=True)
class _Segment:
    """What scanning one range of sequence numbers found."""

    count: int
    first_seq: int | None
    first_prev: str | None  # prev_hash stored in the first entry of the range
    last_seq: int
    last_hash: str
    problem: Problem | None


def _scan(
    rows: Iterable[Any],
    start_seq: int,
    start_prev: str | None,
    signed: bytes,
    pinned: Mapping[int, str] | None = None,
    signed_from: int = 0,
) -> _Segment:
    """Recompute and link every entry of a range. `signed` holds the checkpointed digests of
    entries 1..len(signed)/32, as verified signatures vouch for them; `pinned` the entry hashes a
    witness saw. With `start_prev` None the link into the range is checked by the caller.
    With `signed_from`, `signed` starts at entry signed_from + 1 (the range starts after it)."""
    encode = _ENCODER.encode
    sha256 = hashlib.sha256
    signed_upto = signed_from + len(signed) // 32
    expected_seq = start_seq
    prev_hash = start_prev
    count = 0
    first_seq: int | None = None
    first_prev: str | None = None
    for row in rows:
        count += 1
        seq = row[1]
        if first_seq is None:
            first_seq, first_prev = seq, row[18]
        fields = [CANONICAL_TAG, *row[:19]]
        if row[14] is not None:
            fields[15] = base64.b64encode(bytes(row[14])).decode("ascii")
        digest = sha256(encode(fields).encode("utf-8")).digest()
        recomputed = digest.hex()
        problem = None
        if seq != expected_seq:
            if seq > expected_seq:
                problem = Problem(expected_seq, f"entry {expected_seq} is missing (deleted?)")
            else:
                problem = Problem(seq, f"entry {seq} appears twice")
        elif recomputed != row[19]:
            problem = Problem(seq, _diagnose_changed(row, None))
        elif prev_hash is not None and row[18] != prev_hash:
            problem = Problem(seq, f"entry {seq} does not link to entry {seq - 1} (inserted or reordered?)")
        elif seq <= signed_upto and signed[32 * (seq - 1 - signed_from) : 32 * (seq - signed_from)] != digest:
            problem = Problem(seq, f"entry {seq} differs from the signed checkpoint (chain rewritten)")
        elif pinned and pinned.get(seq, recomputed) != recomputed:
            problem = Problem(seq, f"entry {seq} differs from what the witness saw (chain rewritten)")
        if problem is not None:
            return _Segment(count, first_seq, first_prev, seq, recomputed, problem)
        prev_hash = recomputed
        expected_seq = seq + 1
    return _Segment(count, first_seq, first_prev, expected_seq - 1, prev_hash or "", None)


@dataclass(frozen=True, slots=True)
class _Checkpoints:
    signed: bytes  # the signed digests of the entries after the starting point
    count: int  # checkpoints read
    problem: Problem | None
    last_seq: int  # the last valid checkpoint's entry (the starting point when none)
    last_hash: str | None  # its hash (None when no checkpoint was read)
    valid: int  # checkpoints found valid


def _checkpoints_after(connection: Connection, ring: crypto.KeyRing, chain: str, after: int) -> _Checkpoints:
    """Verify the signatures of the checkpoints that start at entry `after` or later."""
    rows = connection.execute(
        select(
            AuditCheckpoint.from_seq,
            AuditCheckpoint.seq,
            AuditCheckpoint.hash,
            AuditCheckpoint.entry_hashes,
            AuditCheckpoint.key_id,
            AuditCheckpoint.signature,
        )
        .where(AuditCheckpoint.chain == chain, AuditCheckpoint.seq > after)
        .order_by(AuditCheckpoint.seq)
    ).all()
    parts: list[bytes] = []
    previous_end = after
    last_hash: str | None = None
    for number, (from_seq, seq, head_hash, covered_raw, key_id, signature) in enumerate(rows):
        covered = bytes(covered_raw)
        message = checkpoint_message(chain, from_seq, seq, head_hash, covered)
        try:
            valid = crypto.verify_checkpoint(ring, key_id, message, bytes(signature))
        except crypto.KeyMissingError:
            valid = False
        if not valid or from_seq != previous_end or len(covered) != 32 * (seq - from_seq):
            problem = Problem(from_seq + 1, f"checkpoint at entry {seq} has an invalid signature or range")
            return _Checkpoints(b"".join(parts), len(rows), problem, previous_end, last_hash, number)
        parts.append(covered)
        previous_end, last_hash = seq, head_hash
    return _Checkpoints(b"".join(parts), len(rows), None, previous_end, last_hash, len(rows))


def verify_chain(
    connection: Connection, ring: crypto.KeyRing, chain: str, witness: Path | None = None
) -> VerifyResult:
    """Check every entry of `chain`: sequence, hashes, links, signed checkpoints, the signed head
    and, when a witness file is given, what the witness saw.

    Names the first entry found altered, deleted, inserted or reordered."""
    seen = read_witness(witness, ring, chain) if witness is not None else None
    found = _checkpoints_after(connection, ring, chain, 0)
    signed, checkpoint_count = found.signed, found.count
    problem = found.problem or (seen.problem if seen is not None else None)
    if problem is not None:
        count = connection.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.chain == chain)
        ).scalar_one()
        return _result(chain, count, [problem], checkpoint_count, len(signed) // 32, seen)
    pinned = seen.pinned if seen else None
    segment = _scan(_rows(connection, chain), 1, GENESIS, signed, pinned)
    problems = [segment.problem] if segment.problem else []
    count = segment.count
    if not problems:
        head, added, last_seq, last_hash, late = _catch_up(
            connection, chain, segment.last_seq, segment.last_hash, signed, pinned
        )
        count += added
        problems += (
            [late]
            if late
            else _head_problems(connection, ring, chain, last_seq, last_hash, len(signed) // 32, seen, head)
        )
    return _result(
        chain,
        count if not problems else _count(connection, chain),
        problems,
        checkpoint_count,
        len(signed) // 32,
        seen,
        found,
    )


@dataclass(frozen=True, slots=True)
class KeptVerification:
    """The last verification of a chain that found it intact (table audit_verification)."""

    chain: str
    verified_seq: int
    verified_at: datetime
    resume_seq: int  # the last signed checkpoint verified
    resume_hash: str
    checkpoints: int
    # The witness file it compared the entries with (resolved path; "" for none). Part of the
    # signed message, not a column: a verification made with another witness than the reader's
    # (a cron job without ALLOCATOR_AUDIT_WITNESS) does not verify for that reader, who then
    # verifies the whole chain with its own witness.
    witness: str = ""

    def message(self) -> bytes:
        at = self.verified_at.astimezone(UTC).isoformat()
        text = (
            f"{self.chain}|{self.verified_seq}|{at}|{self.resume_seq}|{self.resume_hash}|{self.checkpoints}"
        )
        return (text + (f"|witness={self.witness}" if self.witness else "")).encode()


def witness_identity(witness: Path | None) -> str:
    """How a kept verification names the witness it used: its resolved path, "" for none."""
    return str(witness.resolve()) if witness is not None else ""


def kept_verification(
    connection: Connection, ring: crypto.KeyRing, chain: str, witness: Path | None = None
) -> KeptVerification | None:
    """The kept verification of `chain` made with `witness` (the reader's), or None: none yet, one
    made with another witness, or a row not signed by the audit key. The chain is then verified
    in full."""
    return _kept(connection, ring, chain, witness_identity(witness))


def _kept(connection: Connection, ring: crypto.KeyRing, chain: str, witness: str) -> KeptVerification | None:
    table = cast(Table, AuditVerification.__table__)
    kept_row = connection.execute(select(table).where(table.c.chain == chain)).first()
    if kept_row is None:
        return None
    kept = KeptVerification(
        chain,
        int(kept_row.verified_seq),
        _aware(kept_row.verified_at),
        int(kept_row.resume_seq),
        str(kept_row.resume_hash),
        int(kept_row.checkpoints),
        witness,
    )
    try:
        valid = crypto.verify_verification(ring, kept_row.key_id, kept.message(), bytes(kept_row.signature))
    except crypto.KeyMissingError:
        valid = False
    return kept if valid else None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def verification_mark(connection: Connection, chain: str) -> bytes | None:
    """The signature of the row kept for `chain` as it stands (valid or not; None: no row), read
    before a verification starts: the verification is kept only while the row is still that one."""
    table = cast(Table, AuditVerification.__table__)
    signature = connection.execute(select(table.c.signature).where(table.c.chain == chain)).scalar()
    return bytes(signature) if signature is not None else None


def keep_verification(
    connection: Connection, ring: crypto.KeyRing, kept: KeptVerification, before: bytes | None
) -> None:
    """Store `kept` (signed) in place of the row whose mark (`verification_mark`) was `before` when
    its verification started, and only while that row is still there unchanged (None: while there
    is still no row). Meanwhile a page may have kept a verification that reached further, or a
    whole verification may have found the chain broken and reset the row (`forget_verification`):
    a verification that read the chain before then must not take its place. A row that does not
    verify (made with another witness, or edited by hand) is replaced like any other."""
    signed = crypto.sign_verification(ring, kept.message())
    values = {
        "verified_seq": kept.verified_seq,
        "verified_at": kept.verified_at,
        "resume_seq": kept.resume_seq,
        "resume_hash": kept.resume_hash,
        "checkpoints": kept.checkpoints,
        "key_id": signed.key_id,
        "signature": signed.signature,
    }
    table = cast(Table, AuditVerification.__table__)
    if before is not None:
        connection.execute(
            table.update().where(table.c.chain == kept.chain, table.c.signature == before).values(**values)
        )
    elif connection.execute(select(table.c.chain).where(table.c.chain == kept.chain)).first() is None:
        connection.execute(table.insert().values(chain=kept.chain, **values))


def forget_verification(
    connection: Connection, ring: crypto.KeyRing, chain: str, now: datetime, witness: Path | None
) -> None:
    """Once a whole verification found `chain` broken: its kept verification is reset to nothing
    verified (a signed row saying so, not a deletion, so that a verification that started before
    cannot be kept in its place). The pages then verify the chain whole and show the break. Only a
    cached result changes, never a record; the verification that found the break is what the
    command reports."""
    reset = KeptVerification(chain, 0, now, 0, GENESIS, 0, witness_identity(witness))
    signed = crypto.sign_verification(ring, reset.message())
    values = {
        "verified_seq": 0,
        "verified_at": now,
        "resume_seq": 0,
        "resume_hash": GENESIS,
        "checkpoints": 0,
        "key_id": signed.key_id,
        "signature": signed.signature,
    }
    # Whatever is there, a row another verification is inserting included: the reset must win.
    upsert(connection, AuditVerification, "chain", {"chain": chain, **values})


def _witness_saw_nothing(witness: Path | None, witnessed_upto: int) -> bool:
    """A witness given whose file is missing or saw no entry: a verification compared with it
    compared nothing, and kept it would stand for that witness (its lines behind it skipped)."""
    return witness is not None and (witnessed_upto == 0 or not witness.is_file())


def kept_whole(result: VerifyResult, now: datetime) -> KeptVerification | None:
    """The verification to keep after `verify_chain` or `verify_chain_parallel` found a whole
    chain intact (None otherwise), so that the audit pages verify only what is appended after it
    (`verify_chain_since`): run daily, `allocator audit verify` bounds what a page view verifies to
    a day's entries (issue 21)."""
    if not result.ok or result.resume is None or _witness_saw_nothing(result.witness, result.witnessed_upto):
        return None
    resume_seq, resume_hash = result.resume
    return KeptVerification(
        result.chain,
        result.entries,
        now,
        resume_seq,
        resume_hash,
        result.checkpoints,
        witness_identity(result.witness),
    )


def verify_chain_since(
    connection: Connection,
    ring: crypto.KeyRing,
    chain: str,
    kept: KeptVerification | None,
    now: datetime,
    witness: Path | None = None,
) -> tuple[VerifyResult, KeptVerification | None]:
    """`verify_chain`, starting after the last signed checkpoint that `kept` verified (issue 21):
    the checkpoints since, every entry after it, the signed head and the witness lines since are
    checked, so a page view costs what was appended since the last one, not the whole chain. An
    entry altered behind the kept point is found by a full `verify_chain` (`allocator audit
    verify`), not here. Returns the result and, when the chain is intact, the verification to
    keep (None otherwise)."""
    start_seq = kept.resume_seq if kept is not None else 0
    start_hash = kept.resume_hash if kept is not None else GENESIS
    earlier = kept.checkpoints if kept is not None else 0
    seen = (
        read_witness(witness, ring, chain, behind=kept.verified_seq if kept is not None else 0)
        if witness is not None
        else None
    )
    found = _checkpoints_after(connection, ring, chain, start_seq)
    signed_upto = start_seq + len(found.signed) // 32
    problem = found.problem or (seen.problem if seen is not None else None)
    if problem is not None:
        return _result(
            chain, _count(connection, chain), [problem], earlier + found.count, signed_upto, seen
        ), None
    segment = _scan(
        _rows(connection, chain, start_seq + 1),
        start_seq + 1,
        start_hash,
        found.signed,
        seen.pinned if seen else None,
        signed_from=start_seq,
    )
    problems = [segment.problem] if segment.problem else []
    last_seq = segment.last_seq if segment.count else start_seq
    last_hash = segment.last_hash if segment.count else start_hash
    if not problems:
        head, _added, last_seq, last_hash, late = _catch_up(
            connection, chain, last_seq, last_hash, found.signed, seen.pinned if seen else None, start_seq
        )
        problems += (
            [late]
            if late
            else _head_problems(connection, ring, chain, last_seq, last_hash, signed_upto, seen, head)
        )
    checkpoints = earlier + found.count
    result = _result(
        chain,
        last_seq if not problems else _count(connection, chain),
        problems,
        checkpoints,
        signed_upto,
        seen,
    )
    if problems or (last_seq and _witness_saw_nothing(witness, seen.top if seen is not None else 0)):
        return result, None
    resume_seq, resume_hash = (
        (found.last_seq, found.last_hash) if found.last_hash else (start_seq, start_hash)
    )
    return result, KeptVerification(
        chain, last_seq, now, resume_seq, resume_hash, checkpoints, witness_identity(witness)
    )


def verify_chain_parallel(
    url: str, ring: crypto.KeyRing, chain: str, workers: int, witness: Path | None = None
) -> VerifyResult:
    """`verify_chain` split over `workers` processes by ranges of sequence numbers (for the command
    line on long chains: hashing is CPU-bound). Each range is scanned independently; the links
    between ranges are checked here."""
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415 - only the CLI and bench need it

    from allocator.db import connect_once  # noqa: PLC0415 - avoids an import cycle at module load

    seen = read_witness(witness, ring, chain) if witness is not None else None
    engine = connect_once(url)
    try:
        with engine.connect() as connection:
            found = _checkpoints_after(connection, ring, chain, 0)
            signed, checkpoint_count = found.signed, found.count
            problem = found.problem or (seen.problem if seen is not None else None)
            total = _count(connection, chain)
            if problem is not None:
                return _result(chain, total, [problem], checkpoint_count, len(signed) // 32, seen)
            high = (
                connection.execute(
                    select(func.max(AuditEvent.seq)).where(AuditEvent.chain == chain)
                ).scalar_one()
                or 0
            )
            step = max(1, -(-high // max(1, workers)))
            bounds = [
                (low, min(high, low + step - 1) if low + step - 1 < high else _NO_LIMIT)
                for low in range(1, high + 1, step)
            ]
            with ProcessPoolExecutor(max_workers=workers) as pool:
                pinned = seen.pinned if seen is not None else None
                segments = list(
                    pool.map(_scan_range, [(url, chain, lo, hi, signed, pinned) for lo, hi in bounds])
                )
            problems: list[Problem] = []
            last_hash, last_seq = GENESIS, 0
            for (low, _), segment in zip(bounds, segments, strict=True):
                if low > 1 and last_seq != low - 1:
                    problems.append(Problem(last_seq + 1, f"entry {last_seq + 1} is missing (deleted?)"))
                    break
                if low > 1 and segment.first_seq == low and segment.first_prev != last_hash:
                    problems.append(
                        Problem(low, f"entry {low} does not link to entry {low - 1} (inserted or reordered?)")
                    )
                    break
                if segment.problem is not None:
                    problems.append(segment.problem)
                    break
                if segment.count:
                    last_hash, last_seq = segment.last_hash, segment.last_seq
            if not problems:
                head, _added, last_seq, last_hash, late = _catch_up(
                    connection, chain, last_seq, last_hash, signed, pinned
                )
                problems += (
                    [late]
                    if late
                    else _head_problems(
                        connection, ring, chain, last_seq, last_hash, len(signed) // 32, seen, head
                    )
                )
            # Intact: every entry up to the last one verified (entries appended while it ran too).
            verified = last_seq if not problems else total
            return _result(chain, verified, problems, checkpoint_count, len(signed) // 32, seen, found)
    finally:
        engine.dispose()


def _scan_range(args: tuple[str, str, int, int, bytes, dict[int, str] | None]) -> _Segment:
    from allocator.db import connect_once  # noqa: PLC0415 - runs in a worker process

    url, chain, low, high, signed, pinned = args
    engine = connect_once(url)
    try:
        with engine.connect() as connection:
            rows = _rows(connection, chain, low, high)
            return _scan(rows, low, None if low > 1 else GENESIS, signed, pinned)
    finally:
        engine.dispose()


def _count(connection: Connection, chain: str) -> int:
    return int(
        connection.execute(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.chain == chain)
        ).scalar_one()
    )


def _read_head(connection: Connection, chain: str) -> Any:
    return connection.execute(
        select(
            AuditChainHead.seq, AuditChainHead.hash, AuditChainHead.head_key_id, AuditChainHead.head_signature
        ).where(AuditChainHead.chain == chain)
    ).first()


def _catch_up(
    connection: Connection,
    chain: str,
    last_seq: int,
    last_hash: str,
    signed: bytes,
    pinned: Mapping[int, str] | None,
    signed_from: int = 0,
) -> tuple[Any, int, int, str, Problem | None]:
    """The chain's head, read once the entries have been, and the entries committed meanwhile up to
    it, verified in their turn: in a read transaction where each statement has its own snapshot
    (PostgreSQL's READ COMMITTED), the head has moved on with every commit made while the entries
    were read, and compared with the last entry read it said "entries after N are missing" of
    entries that are there (a page viewed while the sites randomize). Returns the head row, the
    entries added, the new last entry and its hash, and the first problem found among them."""
    head = _read_head(connection, chain)
    if head is None or head.seq <= last_seq:
        return head, 0, last_seq, last_hash, None
    more = _scan(
        _rows(connection, chain, last_seq + 1, head.seq), last_seq + 1, last_hash, signed, pinned, signed_from
    )
    if more.problem is not None:
        return head, more.count, last_seq, last_hash, more.problem
    if not more.count:  # the head is ahead of the entries: `_head_problems` names what is missing
        return head, 0, last_seq, last_hash, None
    return head, more.count, more.last_seq, more.last_hash, None


def _head_problems(
    connection: Connection,
    ring: crypto.KeyRing,
    chain: str,
    last_seq: int,
    last_hash: str,
    signed_upto: int,
    seen: Witnessed | None,
    head: Any,
) -> list[Problem]:
    """What the head row (read after the entries: `_catch_up`), its signature and the witness say
    about the end of the chain."""
    if seen is not None and seen.top > last_seq:
        return [
            Problem(
                last_seq + 1,
                f"entries {last_seq + 1} to {seen.top} are missing: the witness saw them "
                "(the chain was truncated and its head rolled back)",
            )
        ]
    if signed_upto > last_seq:
        return [Problem(last_seq + 1, f"entries {last_seq + 1} to {signed_upto} are missing (deleted?)")]
    if head is None:
        return [Problem(1, "the chain has entries but no head")] if last_seq else []
    if head.seq > last_seq:
        return [Problem(last_seq + 1, f"entries after {last_seq} are missing (deleted?)")]
    if head.seq < last_seq:
        return [Problem(head.seq + 1, f"entry {head.seq + 1} is not part of the recorded chain (inserted?)")]
    if head.hash != last_hash:
        return [Problem(last_seq, f"entry {last_seq} is not the recorded head of the chain")]
    if last_seq and not _head_signature_valid(ring, chain, head):
        first = min(signed_upto + 1, last_seq)
        if seen is not None and seen.top >= first:
            first = min(last_seq, seen.top + 1)
        return [
            Problem(
                first,
                f"the head of the chain (entry {last_seq}) is not signed by the audit key: entries after "
                f"{first - 1} were appended or rewritten outside the service",
            )
        ]
    return []


def _head_signature_valid(ring: crypto.KeyRing, chain: str, head: Any) -> bool:
    if head.head_key_id is None or head.head_signature is None:
        return False
    try:
        message = head_message(chain, head.seq, head.hash)
        return crypto.verify_head(ring, head.head_key_id, message, bytes(head.head_signature))
    except crypto.KeyMissingError:
        return False


def _result(
    chain: str,
    count: int,
    problems: list[Problem],
    checkpoints: int,
    signed_upto: int,
    seen: Witnessed | None = None,
    whole: _Checkpoints | None = None,
) -> VerifyResult:
    """With `whole`, the checkpoints of a verification of the whole chain: an intact chain's
    result then says where a later verification may start."""
    resume = None
    if whole is not None and not problems and count:
        resume = (whole.last_seq, whole.last_hash) if whole.last_hash else (0, GENESIS)
    return VerifyResult(
        chain=chain,
        ok=not problems,
        entries=count,
        first_bad=min((p.seq for p in problems), default=None),
        problems=tuple(problems),
        checkpoints=checkpoints,
        unsigned_tail=max(0, count - signed_upto) if not problems else 0,
        witness=seen.path if seen is not None else None,
        witnessed_upto=seen.top if seen is not None else 0,
        unwitnessed=max(0, count - seen.top) if seen is not None and not problems else 0,
        resume=resume,
    )


def _diagnose_changed(row: Any, _previous: Any) -> str:
    seq = row[1]
    for delta, label in ((1, "moved down from"), (-1, "moved up from")):
        if entry_hash(_fields(row, seq + delta)) == row[19]:
            return f"entry {seq} was entry {seq + delta} ({label} its place: reordered or an entry inserted)"
    return f"entry {seq} was altered (its content does not match its hash)"


def chain_length(connection: Connection, chain: str) -> int:
    return _count(connection, chain)


def chains(connection: Connection) -> list[str]:
    return list(connection.execute(select(AuditChainHead.chain).order_by(AuditChainHead.chain)).scalars())
