"""Unblinding drills (UNB-11): drill subjects, which are never subjects, and the drills run on them.

Both tables are append-only (guarded), like the unblinding records they mirror.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 18:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from allocator import dbguards

APPEND_ONLY = ("drill_subject", "unblinding_drill")

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drill_subject",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("drill_number", sa.String(length=32), nullable=False),
        sa.Column("sealed_arm", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_by_name", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["app_user.id"], name=op.f("fk_drill_subject_created_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_drill_subject_site_id_site")),
        sa.ForeignKeyConstraint(["trial_id"], ["trial.id"], name=op.f("fk_drill_subject_trial_id_trial")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drill_subject")),
        sa.UniqueConstraint("trial_id", "drill_number", name=op.f("uq_drill_subject_trial_id_drill_number")),
    )
    with op.batch_alter_table("drill_subject", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_drill_subject_trial_id"), ["trial_id"], unique=False)

    op.create_table(
        "unblinding_drill",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("drill_subject_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("reason_category", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("unblinded_at", sa.DateTime(), nullable=False),
        sa.Column("unblinded_by_name", sa.String(length=200), nullable=False),
        sa.Column("unblinded_by_role", sa.String(length=32), nullable=False),
        sa.Column("sheet_number", sa.String(length=48), nullable=True),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("recorded_by_id", sa.Integer(), nullable=True),
        sa.Column("recorded_by_name", sa.String(length=200), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["drill_subject_id"],
            ["drill_subject.id"],
            name=op.f("fk_unblinding_drill_drill_subject_id_drill_subject"),
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"], ["app_user.id"], name=op.f("fk_unblinding_drill_recorded_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"], ["signature.id"], name=op.f("fk_unblinding_drill_signature_id_signature")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_unblinding_drill_site_id_site")),
        sa.ForeignKeyConstraint(["trial_id"], ["trial.id"], name=op.f("fk_unblinding_drill_trial_id_trial")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unblinding_drill")),
    )
    with op.batch_alter_table("unblinding_drill", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_unblinding_drill_drill_subject_id"), ["drill_subject_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_unblinding_drill_trial_id"), ["trial_id"], unique=False)

    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        for statement in dbguards.guard(dialect, table, updates=False):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        for statement in dbguards.unguard(dialect, table, updates=False):
            op.execute(statement)
    with op.batch_alter_table("unblinding_drill", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_unblinding_drill_trial_id"))
        batch_op.drop_index(batch_op.f("ix_unblinding_drill_drill_subject_id"))
    op.drop_table("unblinding_drill")
    with op.batch_alter_table("drill_subject", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_drill_subject_trial_id"))
    op.drop_table("drill_subject")
