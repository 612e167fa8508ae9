"""A central-lab closure entered by mistake is withdrawn (issue 20): `lab_closure_withdrawal`, one
row per withdrawn closure, append-only (guarded) like the closures. The closure stays; a day may be
closed again after its closure is withdrawn, so the unique (trial, day) of `lab_closure` goes, and
the service allows one closure not withdrawn per day, under the trial row's lock.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 05:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from allocator import dbguards

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _guards(statements: list[str]) -> None:
    for statement in statements:
        op.execute(statement)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    # SQLite rebuilds the table to drop a constraint: its guards go first and come back after.
    _guards(dbguards.unguard(dialect, "lab_closure", updates=False))
    with op.batch_alter_table("lab_closure", schema=None) as batch_op:
        batch_op.drop_constraint("uq_lab_closure_trial_id_day", type_="unique")
    _guards(dbguards.guard(dialect, "lab_closure", updates=False))
    op.create_table(
        "lab_closure_withdrawal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("closure_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(), nullable=False),
        sa.Column("withdrawn_by_id", sa.Integer(), nullable=True),
        sa.Column("withdrawn_by_name", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["closure_id"], ["lab_closure.id"], name=op.f("fk_lab_closure_withdrawal_closure_id_lab_closure")
        ),
        sa.ForeignKeyConstraint(
            ["withdrawn_by_id"],
            ["app_user.id"],
            name=op.f("fk_lab_closure_withdrawal_withdrawn_by_id_app_user"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lab_closure_withdrawal")),
        sa.UniqueConstraint("closure_id", name=op.f("uq_lab_closure_withdrawal_closure_id")),
    )
    _guards(dbguards.guard(dialect, "lab_closure_withdrawal", updates=False))


def downgrade() -> None:
    bind = op.get_bind()
    withdrawn = bind.execute(sa.text("SELECT count(*) FROM lab_closure_withdrawal")).scalar_one()
    if withdrawn:
        # Dropping them would put withdrawn closures back in force, and a day closed again would
        # break the unique (trial, day) restored below: nothing is deleted, so the downgrade stops.
        raise RuntimeError(
            f"{withdrawn} lab closure withdrawal(s) recorded: the downgrade below 0021 would delete them; refused"
        )
    dialect = bind.dialect.name
    _guards(dbguards.unguard(dialect, "lab_closure_withdrawal", updates=False))
    op.drop_table("lab_closure_withdrawal")
    _guards(dbguards.unguard(dialect, "lab_closure", updates=False))
    with op.batch_alter_table("lab_closure", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_lab_closure_trial_id_day", ["trial_id", "day"])
    _guards(dbguards.guard(dialect, "lab_closure", updates=False))
