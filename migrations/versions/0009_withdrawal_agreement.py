"""The reference of the investigator's agreement to a withdrawal recorded by someone other than the
site's investigator (DIB-03, as for stratum corrections; issue 15, point 4).

Withdrawals recorded before this revision have none.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 13:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subject_withdrawal") as batch:
        batch.add_column(sa.Column("investigator_agreement_ref", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subject_withdrawal") as batch:
        batch.drop_column("investigator_agreement_ref")
