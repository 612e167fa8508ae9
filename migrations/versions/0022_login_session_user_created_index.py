"""A user's latest sign-in read in one index look-up (issue 21): `login_session` keeps one row per
sign-in ever made, and the user pages grouped the whole table on every view. The index on
(user_id, created_at) answers "the latest sign-in of this user" without reading the others, and
replaces the index on user_id alone (its prefix).

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
    # Indexes alone: no table rebuild on SQLite, nothing of the table's guards touched. The index on
    # user_id alone is a prefix of the new one: it goes, so that a sign-in writes one index, not two.
    op.create_index("ix_login_session_user_id_created_at", "login_session", ["user_id", "created_at"])
    op.drop_index("ix_login_session_user_id", table_name="login_session")


def downgrade() -> None:
    op.create_index("ix_login_session_user_id", "login_session", ["user_id"])
    op.drop_index("ix_login_session_user_id_created_at", table_name="login_session")
