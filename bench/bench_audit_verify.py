"""Build an audit chain of N entries (default 1,000,000) and time `audit verify` on it.

Usage: python bench/bench_audit_verify.py [N] [DATABASE_URL]
Target (issue 3): at least 100,000 entries per second on SQLite.

Entries are written in bulk with exactly the hashes and checkpoints AuditLog.record would produce
(checkpoint every 100 entries), so verification does its full work: recompute every hash, check
every link, every checkpoint signature and every checkpointed entry hash.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert

from allocator import audit, crypto, migrate
from allocator.db import Database
from allocator.models import AuditChainHead, AuditCheckpoint, AuditEvent

CHAIN = "BENCH"
BATCH = 20_000


def build(db: Database, ring: crypto.KeyRing, count: int) -> None:
    at = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    prev = audit.GENESIS
    last_checkpoint = 0
    covered: list[bytes] = []
    rows: list[dict[str, object]] = []
    checkpoints: list[dict[str, object]] = []
    sealed = crypto.seal_json(
        ring,
        crypto.Purpose.LISTS,
        {"arm": "A"},
        crypto.Binding(CHAIN, "audit_event", f"{CHAIN}:1", "sealed_values"),
    )
    with db.write_engine.begin() as conn:
        for seq in range(1, count + 1):
            row: dict[str, object] = {
                "chain": CHAIN,
                "seq": seq,
                "at": audit.format_time(at),
                "actor_user_id": None,
                "actor_username": "bench",
                "actor_name": "Benchmark Runner",
                "actor_role": "investigator",
                "actor_site": "P1",
                "action": "user.updated",
                "object_type": "subject",
                "object_id": f"P1-{seq:06d}",
                "site_code": "P1",
                "old_values": audit.canonical_json({"n": seq - 1}),
                "new_values": audit.canonical_json({"n": seq, "note": "routine entry"}),
                "sealed_values": sealed if seq == 1 else None,
                "reason": "benchmark",
                "request_id": f"r{seq}",
                "software_version": "bench",
                "prev_hash": prev,
            }
            fields = [
                audit.CANONICAL_TAG,
                row["chain"],
                seq,
                row["at"],
                None,
                row["actor_username"],
                row["actor_name"],
                row["actor_role"],
                row["actor_site"],
                row["action"],
                row["object_type"],
                row["object_id"],
                row["site_code"],
                row["old_values"],
                row["new_values"],
                base64.b64encode(sealed).decode() if seq == 1 else None,
                row["reason"],
                row["request_id"],
                row["software_version"],
                prev,
            ]
            row["hash"] = prev = audit.entry_hash(fields)
            rows.append(row)
            covered.append(bytes.fromhex(prev))
            if seq - last_checkpoint >= 100 or seq == count:
                blob = b"".join(covered)
                signed = crypto.sign_checkpoint(
                    ring, audit.checkpoint_message(CHAIN, last_checkpoint, seq, prev, blob)
                )
                checkpoints.append(
                    {
                        "chain": CHAIN,
                        "from_seq": last_checkpoint,
                        "seq": seq,
                        "hash": prev,
                        "entry_hashes": blob,
                        "at": at,
                        "key_id": signed.key_id,
                        "signature": signed.signature,
                    }
                )
                last_checkpoint, covered = seq, []
            if len(rows) >= BATCH:
                conn.execute(insert(AuditEvent), rows)
                conn.execute(insert(AuditCheckpoint), checkpoints)
                rows, checkpoints = [], []
        if rows:
            conn.execute(insert(AuditEvent), rows)
        if checkpoints:
            conn.execute(insert(AuditCheckpoint), checkpoints)
        conn.execute(
            insert(AuditChainHead),
            [{"chain": CHAIN, "seq": count, "hash": prev, "checkpoint_seq": count, "checkpoint_at": at}],
        )


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        url = sys.argv[2] if len(sys.argv) > 2 else f"sqlite:///{Path(tmp) / 'bench.db'}"
        crypto.KeyRing.create_missing(Path(tmp) / "keys")
        ring = crypto.KeyRing.load(Path(tmp) / "keys")
        migrate.upgrade(url)
        db = Database.connect(url)
        started = time.perf_counter()
        build(db, ring, count)
        built = time.perf_counter() - started
        print(f"built {count:,} entries in {built:.1f} s ({db.dialect})")
        for attempt in (1, 2):
            started = time.perf_counter()
            with db.read_engine.connect() as conn:
                result = audit.verify_chain(conn, ring, CHAIN)
            elapsed = time.perf_counter() - started
            assert result.ok and result.entries == count, result.summary()
            print(
                f"verify, one process, run {attempt}: {elapsed:.2f} s = {count / elapsed:,.0f} entries/s "
                f"({result.checkpoints:,} checkpoints)"
            )
        workers = os.cpu_count() or 1
        for attempt in (1, 2):
            started = time.perf_counter()
            result = audit.verify_chain_parallel(url, ring, CHAIN, workers)
            elapsed = time.perf_counter() - started
            assert result.ok and result.entries == count, result.summary()
            print(
                f"verify, {workers} processes (allocator audit verify), run {attempt}: {elapsed:.2f} s = "
                f"{count / elapsed:,.0f} entries/s"
            )
        db.dispose()


if __name__ == "__main__":
    main()
