"""Observational studies (issue 20): sample kits (pre-labelled tube sets), their history and the
shipments of collected samples to the central lab.

A tube set has no arm, batch or drug expiry and is never drawn for an allocation, so it gets its own
tables beside `kit`: no drug-stock query has to tell the two apart. `sample_kit` and `lab_shipment`
hold a current status (updates allowed, deletes refused); `sample_kit_event` is append-only.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 00:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from allocator import dbguards

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lab_shipment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("sample_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_by_name", sa.String(length=200), nullable=False),
        sa.Column("shipped_at", sa.DateTime(), nullable=True),
        sa.Column("shipped_by_name", sa.String(length=200), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=True),
        sa.Column("received_by_id", sa.Integer(), nullable=True),
        sa.Column("received_by_name", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["app_user.id"], name=op.f("fk_lab_shipment_created_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["received_by_id"], ["app_user.id"], name=op.f("fk_lab_shipment_received_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_lab_shipment_site_id_site")),
        sa.ForeignKeyConstraint(["trial_id"], ["trial.id"], name=op.f("fk_lab_shipment_trial_id_trial")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lab_shipment")),
        sa.UniqueConstraint("trial_id", "number", name=op.f("uq_lab_shipment_trial_id_number")),
    )
    with op.batch_alter_table("lab_shipment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lab_shipment_site_id"), ["site_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lab_shipment_trial_id"), ["trial_id"], unique=False)

    op.create_table(
        "sample_kit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("kit_number", sa.String(length=8), nullable=False),
        sa.Column("kit_type", sa.String(length=16), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by_name", sa.String(length=200), nullable=False),
        sa.Column("planned_sample_id", sa.Integer(), nullable=True),
        sa.Column("assigned_at", sa.DateTime(), nullable=True),
        sa.Column("collected_at", sa.DateTime(), nullable=True),
        sa.Column("collected_by_id", sa.Integer(), nullable=True),
        sa.Column("collected_by_name", sa.String(length=200), nullable=True),
        sa.Column("collection_recorded_at", sa.DateTime(), nullable=True),
        sa.Column("lab_shipment_id", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=True),
        sa.Column("received_by_name", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["collected_by_id"], ["app_user.id"], name=op.f("fk_sample_kit_collected_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["lab_shipment_id"], ["lab_shipment.id"], name=op.f("fk_sample_kit_lab_shipment_id_lab_shipment")
        ),
        sa.ForeignKeyConstraint(
            ["planned_sample_id"],
            ["planned_sample.id"],
            name=op.f("fk_sample_kit_planned_sample_id_planned_sample"),
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_sample_kit_site_id_site")),
        sa.ForeignKeyConstraint(["trial_id"], ["trial.id"], name=op.f("fk_sample_kit_trial_id_trial")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sample_kit")),
        sa.UniqueConstraint("planned_sample_id", name=op.f("uq_sample_kit_planned_sample_id")),
        sa.UniqueConstraint("trial_id", "kit_number", name=op.f("uq_sample_kit_trial_id_kit_number")),
    )
    with op.batch_alter_table("sample_kit", schema=None) as batch_op:
        batch_op.create_index("ix_sample_kit_site_status_id", ["site_id", "status", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sample_kit_lab_shipment_id"), ["lab_shipment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sample_kit_trial_id"), ["trial_id"], unique=False)

    op.create_table(
        "sample_kit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_kit_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["app_user.id"], name=op.f("fk_sample_kit_event_actor_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["sample_kit_id"], ["sample_kit.id"], name=op.f("fk_sample_kit_event_sample_kit_id_sample_kit")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sample_kit_event")),
    )
    with op.batch_alter_table("sample_kit_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sample_kit_event_sample_kit_id"), ["sample_kit_id"], unique=False
        )

    dialect = op.get_bind().dialect.name
    for table in ("lab_shipment", "sample_kit"):
        for statement in dbguards.guard(dialect, table, updates=True):
            op.execute(statement)
    for statement in dbguards.guard(dialect, "sample_kit_event", updates=False):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in dbguards.unguard(dialect, "sample_kit_event", updates=False):
        op.execute(statement)
    for table in ("sample_kit", "lab_shipment"):
        for statement in dbguards.unguard(dialect, table, updates=True):
            op.execute(statement)
    with op.batch_alter_table("sample_kit_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sample_kit_event_sample_kit_id"))
    op.drop_table("sample_kit_event")
    with op.batch_alter_table("sample_kit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sample_kit_trial_id"))
        batch_op.drop_index(batch_op.f("ix_sample_kit_lab_shipment_id"))
        batch_op.drop_index("ix_sample_kit_site_status_id")
    op.drop_table("sample_kit")
    with op.batch_alter_table("lab_shipment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lab_shipment_trial_id"))
        batch_op.drop_index(batch_op.f("ix_lab_shipment_site_id"))
    op.drop_table("lab_shipment")
