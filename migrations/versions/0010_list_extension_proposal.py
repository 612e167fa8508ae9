"""List extensions under dual sign-off: a signed proposal by one person, approved (and applied) or
declined by another (RND-10). Rows are never deleted, and a decided proposal is never changed
(triggers refuse both, for plain SQL access too).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 13:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from allocator import dbguards

TABLE = "list_extension_proposal"

revision: str = "0010"
down_revision: str | None = "0009"
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
    dialect = op.get_bind().dialect.name
    for statement in dbguards.guard(dialect, TABLE, updates=True) + dbguards.guard_decided(dialect, TABLE):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in dbguards.unguard_decided(dialect, TABLE) + dbguards.unguard(
        dialect, TABLE, updates=True
    ):
        op.execute(statement)
    op.drop_index(op.f("ix_list_extension_proposal_list_id"), table_name=TABLE)
    op.drop_table(TABLE)
