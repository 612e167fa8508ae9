"""Blinded notifications: the in-app messages of a role at a site, and the e-mail outbox (BLD-10).

A notification says that something happened, for whom and by whom — never the arm, never a list
position. E-mails are written here in the same transaction as the event and sent afterwards by
`allocator send-mail` (or at once when SMTP is configured), so a crash never loses one and a
rolled-back event never sends one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class Notification(Base):
    __tablename__ = "notification"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))  # None: trial-wide
    audience: Mapped[str] = mapped_column(String(32))  # a role name
    kind: Mapped[str] = mapped_column(String(48))
    subject_number: Mapped[str | None] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    email_to: Mapped[str | None] = mapped_column(Text)  # comma-separated addresses, when mail applies
    emailed_at: Mapped[datetime | None]
    email_error: Mapped[str | None] = mapped_column(Text)
