"""Subject withdrawals: one signed, reasoned, append-only record per withdrawn subject, for the
participant flow (REP-04) and to refuse any further dose.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 15:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from allocator import dbguards

APPEND_ONLY = ("subject_withdrawal",)

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "subject_withdrawal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("effective_date", sa.Date(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("recorded_by_id", sa.Integer(), nullable=True),
        sa.Column("recorded_by_name", sa.String(length=200), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"], ["app_user.id"], name=op.f("fk_subject_withdrawal_recorded_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"], ["signature.id"], name=op.f("fk_subject_withdrawal_signature_id_signature")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subject.id"], name=op.f("fk_subject_withdrawal_subject_id_subject")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subject_withdrawal")),
        sa.UniqueConstraint("subject_id", name=op.f("uq_subject_withdrawal_subject_id")),
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
    op.drop_table("subject_withdrawal")
