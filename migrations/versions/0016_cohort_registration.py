"""Observational studies (issue 20): registered participants, their planned samples and the
central lab's closures.

A participant of a cohort is registered, not randomized (no list, stratum, slot or randomization
number), so it gets its own table beside `subject`. The three tables are append-only (guarded).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 21:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from allocator import dbguards

APPEND_ONLY = ("registration", "planned_sample", "lab_closure")

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "registration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("screening_entry_id", sa.Integer(), nullable=False),
        sa.Column("screening_number", sa.String(length=32), nullable=False),
        sa.Column("subject_number", sa.String(length=32), nullable=False),
        sa.Column("anchor_date", sa.Date(), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("registered_by_id", sa.Integer(), nullable=True),
        sa.Column("registered_by_name", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["registered_by_id"], ["app_user.id"], name=op.f("fk_registration_registered_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["screening_entry_id"],
            ["screening_entry.id"],
            name=op.f("fk_registration_screening_entry_id_screening_entry"),
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_registration_site_id_site")),
        sa.ForeignKeyConstraint(["trial_id"], ["trial.id"], name=op.f("fk_registration_trial_id_trial")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registration")),
        sa.UniqueConstraint("screening_entry_id", name=op.f("uq_registration_screening_entry_id")),
        sa.UniqueConstraint(
            "trial_id", "screening_number", name=op.f("uq_registration_trial_id_screening_number")
        ),
        sa.UniqueConstraint(
            "trial_id", "subject_number", name=op.f("uq_registration_trial_id_subject_number")
        ),
    )
    with op.batch_alter_table("registration", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_registration_site_id"), ["site_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_registration_trial_id"), ["trial_id"], unique=False)

    op.create_table(
        "planned_sample",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("registration_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=8), nullable=False),
        sa.Column("kit_type", sa.String(length=16), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("window_end", sa.Date(), nullable=False),
        sa.Column("planned_date", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["registration.id"],
            name=op.f("fk_planned_sample_registration_id_registration"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_planned_sample")),
        sa.UniqueConstraint("registration_id", "label", name=op.f("uq_planned_sample_registration_id_label")),
    )
    with op.batch_alter_table("planned_sample", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_planned_sample_registration_id"), ["registration_id"], unique=False
        )

    op.create_table(
        "lab_closure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("entered_at", sa.DateTime(), nullable=False),
        sa.Column("entered_by_id", sa.Integer(), nullable=True),
        sa.Column("entered_by_name", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["entered_by_id"], ["app_user.id"], name=op.f("fk_lab_closure_entered_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(["trial_id"], ["trial.id"], name=op.f("fk_lab_closure_trial_id_trial")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lab_closure")),
        sa.UniqueConstraint("trial_id", "day", name=op.f("uq_lab_closure_trial_id_day")),
    )
    with op.batch_alter_table("lab_closure", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lab_closure_trial_id"), ["trial_id"], unique=False)

    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        for statement in dbguards.guard(dialect, table, updates=False):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        for statement in dbguards.unguard(dialect, table, updates=False):
            op.execute(statement)
    with op.batch_alter_table("lab_closure", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lab_closure_trial_id"))
    op.drop_table("lab_closure")
    with op.batch_alter_table("planned_sample", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_planned_sample_registration_id"))
    op.drop_table("planned_sample")
    with op.batch_alter_table("registration", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_registration_trial_id"))
        batch_op.drop_index(batch_op.f("ix_registration_site_id"))
    op.drop_table("registration")
