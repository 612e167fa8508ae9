"""The signed head of each audit chain: every transaction that appends to a chain signs its new
head, so that no committed entry waits for a checkpoint to be protected (issue 15, AUD-04).

Existing heads stay unsigned until their chain's next append or `allocator audit checkpoint`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 12:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_chain_head") as batch:
        batch.add_column(sa.Column("head_key_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("head_signature", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_chain_head") as batch:
        batch.drop_column("head_signature")
        batch.drop_column("head_key_id")
