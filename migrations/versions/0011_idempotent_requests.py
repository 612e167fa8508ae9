"""Idempotent requests: the stored answer of each POST sent with an Idempotency-Key (issue 14),
append-only like the actions they answer.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 12:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from allocator import dbguards

APPEND_ONLY = ("idempotent_request",)

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotent_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("trial_code", sa.String(length=24), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_idempotent_request_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotent_request")),
        sa.UniqueConstraint("user_id", "key", name=op.f("uq_idempotent_request_user_id_key")),
    )
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        for statement in dbguards.guard(dialect, table, updates=False):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        for statement in dbguards.unguard(dialect, table, updates=False):
            op.execute(statement)
    op.drop_table("idempotent_request")
