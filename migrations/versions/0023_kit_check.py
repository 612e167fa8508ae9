"""The kit reconciliation at a cost that does not grow with every kit's history (issue 21).

- `kit.ever_statuses`: every status the kit ever entered, one bit per status, set with the status
  by every change (filled here from each kit's history), so that "kits ever in X" is counted from
  the kits instead of from every kit event.
- `kit_check`: the last whole check of a trial's kit histories (signed), so that the pages check
  only the kits that moved since.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 15:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The bits as this revision defines them (`kit_rules.status_bit`: the statuses in this order).
_STATUSES = (
    "at_depot",
    "in_transit",
    "available",
    "allocated",
    "dispensed",
    "administered",
    "returned",
    "damaged",
    "lost",
    "quarantined",
    "expired",
    "destroyed",
)


_BITS = " ".join(f"WHEN '{status}' THEN {1 << n}" for n, status in enumerate(_STATUSES))
# Each kit's bits from its history: the sum of the distinct bits of its events is their OR (SQLite
# has no bit_or). Built from this file's constants only.
FILL_EVER_STATUSES = (
    "UPDATE kit SET ever_statuses = COALESCE((SELECT SUM(DISTINCT CASE kit_event.to_status "  # noqa: S608
    f"{_BITS} ELSE 0 END) FROM kit_event WHERE kit_event.kit_id = kit.id), 0)"
)


def upgrade() -> None:
    # A plain ADD COLUMN on both backends: no table rebuild, the kit table's guards untouched.
    op.add_column("kit", sa.Column("ever_statuses", sa.Integer(), server_default="0", nullable=False))
    op.execute(FILL_EVER_STATUSES)
    # Not guarded by triggers: it is rewritten by every whole check. Its rows are signed with the
    # audit key instead; a row that does not verify is ignored (every kit is checked).
    op.create_table(
        "kit_check",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("through_event_id", sa.BigInteger(), nullable=False),
        sa.Column("through_kit_id", sa.BigInteger(), nullable=False),
        sa.Column("suspects", sa.Text(), nullable=False),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["trial_id"], ["trial.id"], name=op.f("fk_kit_check_trial_id_trial")),
        sa.PrimaryKeyConstraint("trial_id", name=op.f("pk_kit_check")),
    )


def downgrade() -> None:
    op.drop_table("kit_check")
    # A plain DROP COLUMN (SQLite 3.35+): a batch rebuild of the table would lose its guards.
    op.execute("ALTER TABLE kit DROP COLUMN ever_statuses")
