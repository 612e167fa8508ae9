"""The last verification of each audit chain found intact, so that the audit pages verify only
what was appended since (issue 21).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 15:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Not guarded by triggers: it is rewritten as the chain grows. Its rows are signed with the
    # audit key instead; a row that does not verify is ignored (the chain is verified in full).
    op.create_table(
        "audit_verification",
        sa.Column("chain", sa.String(length=24), nullable=False),
        sa.Column("verified_seq", sa.BigInteger(), nullable=False),
        sa.Column("verified_at", sa.DateTime(), nullable=False),
        sa.Column("resume_seq", sa.BigInteger(), nullable=False),
        sa.Column("resume_hash", sa.String(length=64), nullable=False),
        sa.Column("checkpoints", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_verification")),
    )


def downgrade() -> None:
    op.drop_table("audit_verification")
