"""Temperature excursions (issue 19): the report, its logger file, its kits and the sponsor's decision;
and the kits awaiting a new expiry label after a batch's expiry changed (`kit.relabel_requested_at`);
an index on kit (shipment_id, status) for the resupply check's kits quarantined on the way.

`temperature_excursion` rows are never deleted and, once decided, never changed; `excursion_kit` is
append-only.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 21:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from allocator import dbguards

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "temperature_excursion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("place", sa.String(length=12), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("shipment_id", sa.Integer(), nullable=True),
        sa.Column("min_tenths", sa.Integer(), nullable=False),
        sa.Column("max_tenths", sa.Integer(), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("kit_count", sa.Integer(), nullable=False),
        sa.Column("logger_name", sa.String(length=200), nullable=False),
        sa.Column("logger_type", sa.String(length=40), nullable=False),
        sa.Column("logger_size", sa.Integer(), nullable=False),
        sa.Column("logger_sha256", sa.String(length=64), nullable=False),
        sa.Column("logger_content", sa.LargeBinary(), nullable=False),
        sa.Column("reported_at", sa.DateTime(), nullable=False),
        sa.Column("reported_by_id", sa.Integer(), nullable=True),
        sa.Column("reported_by_name", sa.String(length=200), nullable=False),
        sa.Column("report_signature_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("decided_by_name", sa.String(length=200), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("decision_signature_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["decision_signature_id"],
            ["signature.id"],
            name=op.f("fk_temperature_excursion_decision_signature_id_signature"),
        ),
        sa.ForeignKeyConstraint(
            ["report_signature_id"],
            ["signature.id"],
            name=op.f("fk_temperature_excursion_report_signature_id_signature"),
        ),
        sa.ForeignKeyConstraint(
            ["reported_by_id"], ["app_user.id"], name=op.f("fk_temperature_excursion_reported_by_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"], ["shipment.id"], name=op.f("fk_temperature_excursion_shipment_id_shipment")
        ),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"], name=op.f("fk_temperature_excursion_site_id_site")),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trial.id"], name=op.f("fk_temperature_excursion_trial_id_trial")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_temperature_excursion")),
        sa.UniqueConstraint("trial_id", "number", name=op.f("uq_temperature_excursion_trial_id_number")),
    )
    with op.batch_alter_table("temperature_excursion", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_temperature_excursion_trial_id"), ["trial_id"], unique=False)

    op.create_table(
        "excursion_kit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("excursion_id", sa.Integer(), nullable=False),
        sa.Column("kit_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["excursion_id"],
            ["temperature_excursion.id"],
            name=op.f("fk_excursion_kit_excursion_id_temperature_excursion"),
        ),
        sa.ForeignKeyConstraint(["kit_id"], ["kit.id"], name=op.f("fk_excursion_kit_kit_id_kit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_excursion_kit")),
        sa.UniqueConstraint("excursion_id", "kit_id", name=op.f("uq_excursion_kit_excursion_id_kit_id")),
    )
    with op.batch_alter_table("excursion_kit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_excursion_kit_excursion_id"), ["excursion_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_excursion_kit_kit_id"), ["kit_id"], unique=False)

    with op.batch_alter_table("kit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("relabel_requested_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_kit_shipment_status", ["shipment_id", "status"], unique=False)

    dialect = op.get_bind().dialect.name
    for statement in dbguards.guard(dialect, "temperature_excursion", updates=True) + dbguards.guard_decided(
        dialect, "temperature_excursion"
    ):
        op.execute(statement)
    for statement in dbguards.guard(dialect, "excursion_kit", updates=False):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in dbguards.unguard(dialect, "excursion_kit", updates=False):
        op.execute(statement)
    for statement in dbguards.unguard_decided(dialect, "temperature_excursion") + dbguards.unguard(
        dialect, "temperature_excursion", updates=True
    ):
        op.execute(statement)
    with op.batch_alter_table("kit", schema=None) as batch_op:
        batch_op.drop_index("ix_kit_shipment_status")
        batch_op.drop_column("relabel_requested_at")
    with op.batch_alter_table("excursion_kit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_excursion_kit_kit_id"))
        batch_op.drop_index(batch_op.f("ix_excursion_kit_excursion_id"))
    op.drop_table("excursion_kit")
    with op.batch_alter_table("temperature_excursion", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_temperature_excursion_trial_id"))
    op.drop_table("temperature_excursion")
