"""Kit returns and destructions (issue 19): one record per batch of kits returned to the depot or
destroyed on site, and its kits. Both tables are append-only (guarded).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 21:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from allocator import dbguards

APPEND_ONLY = ("kit_disposal", "kit_disposal_item")

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "kit_disposal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("witness_name", sa.String(length=200), nullable=True),
        sa.Column("kit_count", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.String(length=40), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("recorded_by_id", sa.Integer(), nullable=True),
        sa.Column("recorded_by_name", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"], ["app_user.id"], name=op.f("fk_kit_disposal_recorded_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"], ["signature.id"], name=op.f("fk_kit_disposal_signature_id_signature")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_kit_disposal_site_id_site")),
        sa.ForeignKeyConstraint(["trial_id"], ["trial.id"], name=op.f("fk_kit_disposal_trial_id_trial")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kit_disposal")),
        sa.UniqueConstraint("trial_id", "number", name=op.f("uq_kit_disposal_trial_id_number")),
    )
    with op.batch_alter_table("kit_disposal", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kit_disposal_trial_id"), ["trial_id"], unique=False)

    op.create_table(
        "kit_disposal_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("disposal_id", sa.Integer(), nullable=False),
        sa.Column("kit_id", sa.Integer(), nullable=False),
        sa.Column("kit_number", sa.String(length=8), nullable=False),
        sa.Column("condition", sa.String(length=10), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["disposal_id"], ["kit_disposal.id"], name=op.f("fk_kit_disposal_item_disposal_id_kit_disposal")
        ),
        sa.ForeignKeyConstraint(["kit_id"], ["kit.id"], name=op.f("fk_kit_disposal_item_kit_id_kit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kit_disposal_item")),
    )
    with op.batch_alter_table("kit_disposal_item", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kit_disposal_item_disposal_id"), ["disposal_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_kit_disposal_item_kit_id"), ["kit_id"], unique=False)

    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        for statement in dbguards.guard(dialect, table, updates=False):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        for statement in dbguards.unguard(dialect, table, updates=False):
            op.execute(statement)
    with op.batch_alter_table("kit_disposal_item", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kit_disposal_item_kit_id"))
        batch_op.drop_index(batch_op.f("ix_kit_disposal_item_disposal_id"))
    op.drop_table("kit_disposal_item")
    with op.batch_alter_table("kit_disposal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_kit_disposal_trial_id"))
    op.drop_table("kit_disposal")
