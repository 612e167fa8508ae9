"""List extensions under dual sign-off: a signed proposal by one person, approved (and applied) or
declined by another (RND-10). Rows are never deleted; their decision columns are filled once.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from allocator import dbguards

TABLE = "list_extension_proposal"

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("list_id", sa.Integer(), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=False),
        sa.Column("additional", sa.Integer(), nullable=False),
        sa.Column("strata", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("proposed_at", sa.DateTime(), nullable=False),
        sa.Column("proposed_by_id", sa.Integer(), nullable=True),
        sa.Column("proposed_by_name", sa.String(length=200), nullable=False),
        sa.Column("proposal_signature_id", sa.Integer(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_by_name", sa.String(length=200), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("applied_version", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["decided_by_id"], ["app_user.id"], name=op.f("fk_list_extension_proposal_decided_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["randomization_list.id"],
            name=op.f("fk_list_extension_proposal_list_id_randomization_list"),
        ),
        sa.ForeignKeyConstraint(
            ["proposal_signature_id"],
            ["signature.id"],
            name=op.f("fk_list_extension_proposal_proposal_signature_id_signature"),
        ),
        sa.ForeignKeyConstraint(
            ["proposed_by_id"],
            ["app_user.id"],
            name=op.f("fk_list_extension_proposal_proposed_by_id_app_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_list_extension_proposal")),
    )
    op.create_index(op.f("ix_list_extension_proposal_list_id"), TABLE, ["list_id"], unique=False)
    for statement in dbguards.guard(op.get_bind().dialect.name, TABLE, updates=True):
        op.execute(statement)


def downgrade() -> None:
    for statement in dbguards.unguard(op.get_bind().dialect.name, TABLE, updates=True):
        op.execute(statement)
    op.drop_index(op.f("ix_list_extension_proposal_list_id"), table_name=TABLE)
    op.drop_table(TABLE)
