"""DDL for the database-level guards: append-only tables and tables whose rows are never deleted.

The application never updates or deletes these rows; the triggers make that true for anyone with
plain SQL access too (AUD-03, RND-07, "nothing is deleted"). Used by the migrations; the
functions are stable so that old migrations keep producing the same DDL.
"""

from __future__ import annotations

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION allocator_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'allocator: % on % is not allowed (rows are never %)',
        TG_OP, TG_TABLE_NAME, CASE WHEN TG_OP = 'UPDATE' THEN 'changed' ELSE 'deleted' END
        USING ERRCODE = 'integrity_constraint_violation';
END
$$
"""


def setup(dialect: str) -> list[str]:
    return [_PG_FUNCTION] if dialect == "postgresql" else []


def teardown(dialect: str) -> list[str]:
    return ["DROP FUNCTION IF EXISTS allocator_refuse_change()"] if dialect == "postgresql" else []


def guard(dialect: str, table: str, *, updates: bool) -> list[str]:
    """Triggers refusing DELETE (and TRUNCATE on PostgreSQL) on `table`, and UPDATE too unless
    `updates` is allowed (mutable status columns, e.g. kit status)."""
    operations = ["DELETE"] if updates else ["UPDATE", "DELETE"]
    if dialect == "postgresql":
        ops = " OR ".join(operations)
        return [
            f"CREATE TRIGGER {table}_guard BEFORE {ops} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION allocator_refuse_change()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION allocator_refuse_change()",
        ]
    statements = []
    for op in operations:
        verb = "changed" if op == "UPDATE" else "deleted"
        statements.append(
            f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'allocator: {op} on {table} is not allowed (rows are never {verb})'); END"
        )
    return statements


def unguard(dialect: str, table: str, *, updates: bool) -> list[str]:
    if dialect == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {table}_guard ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        ]
    operations = ["DELETE"] if updates else ["UPDATE", "DELETE"]
    return [f"DROP TRIGGER IF EXISTS {table}_no_{op.lower()}" for op in operations]


def guard_decided(dialect: str, table: str) -> list[str]:
    """A trigger refusing any UPDATE of a row whose `status` is no longer 'pending': a decision
    (approved, declined) is final, for plain SQL access too (RND-10's dual sign-off)."""
    if dialect == "postgresql":
        return [
            f"CREATE TRIGGER {table}_decided BEFORE UPDATE ON {table} "
            "FOR EACH ROW WHEN (OLD.status <> 'pending') EXECUTE FUNCTION allocator_refuse_change()"
        ]
    return [
        f"CREATE TRIGGER {table}_decided BEFORE UPDATE ON {table} WHEN OLD.status <> 'pending' "
        f"BEGIN SELECT RAISE(ABORT, 'allocator: UPDATE on {table} is not allowed (rows are never changed)'); END"
    ]


def unguard_decided(dialect: str, table: str) -> list[str]:
    if dialect == "postgresql":
        return [f"DROP TRIGGER IF EXISTS {table}_decided ON {table}"]
    return [f"DROP TRIGGER IF EXISTS {table}_decided"]
