"""Slot MACs (issue 16): each slot carries an HMAC of its position, randomization number and sealed
record, so that an allocation checks the one slot it uses instead of re-hashing its whole stratum.
Nullable: slots stored before this revision have none, and their stratum is checked whole.
And an index on kit (site_id, status, id), so that the kit draw finds the id range of a site's
available kits without reading its stock.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 13:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ALTER TABLE (no batch copy on SQLite): the slot table's guard triggers stay in place.
    op.add_column("slot", sa.Column("mac", sa.LargeBinary(), nullable=True))
    op.create_index("ix_kit_site_status_id", "kit", ["site_id", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_kit_site_status_id", table_name="kit")
    op.drop_column("slot", "mac")
