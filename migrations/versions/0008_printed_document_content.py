"""The bytes of each printed dispensation sheet, kept so that viewing a printed document serves
exactly what was printed, without printing again (issue 15, point 5: printing is a POST, viewing a
GET that creates nothing).

Documents printed before this revision have no stored content; they were never viewable again
either (each GET printed a new DUPLICATA), so nothing is lost.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 12:55:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("printed_document") as batch:
        batch.add_column(sa.Column("content", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("printed_document") as batch:
        batch.drop_column("content")
