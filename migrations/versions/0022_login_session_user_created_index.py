"""A user's latest sign-in read in one index look-up (issue 21): `login_session` keeps one row per
sign-in ever made, and the user pages grouped the whole table on every view. The index on
(user_id, created_at) answers "the latest sign-in of this user" without reading the others.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 04:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # An index alone: no table rebuild on SQLite, nothing of the table's guards touched.
    op.create_index("ix_login_session_user_id_created_at", "login_session", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_login_session_user_id_created_at", table_name="login_session")
