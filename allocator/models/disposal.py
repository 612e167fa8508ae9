"""Kits leaving a site's stock for good (issue 19): returned to the depot, or destroyed on site.
One record per batch of kits scanned together; both tables are append-only (nothing is deleted)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class KitDisposal(Base):
    """A return (kind "return") or a destruction (kind "destruction", signed) of kits of one site,
    with the document printed for it (return form or destruction certificate)."""

    __tablename__ = "kit_disposal"
    __table_args__ = (UniqueConstraint("trial_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    number: Mapped[str] = mapped_column(String(40))  # RET-<site>-0001 / DES-<site>-0001
    kind: Mapped[str] = mapped_column(String(12))  # return | destruction
    method: Mapped[str] = mapped_column(Text)  # how destroyed, or how sent back (carrier, note)
    witness_name: Mapped[str | None] = mapped_column(String(200))
    kit_count: Mapped[int] = mapped_column(Integer)
    document_id: Mapped[str] = mapped_column(String(40))  # its PrintedDocument
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    recorded_at: Mapped[datetime]
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    recorded_by_name: Mapped[str] = mapped_column(String(200))


class KitDisposalItem(Base):
    """One kit of a return or destruction, with its condition (used, unused, damaged, expired) and
    the status it left."""

    __tablename__ = "kit_disposal_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    disposal_id: Mapped[int] = mapped_column(ForeignKey("kit_disposal.id"), index=True)
    kit_id: Mapped[int] = mapped_column(ForeignKey("kit.id"), index=True)
    kit_number: Mapped[str] = mapped_column(String(8))
    condition: Mapped[str] = mapped_column(String(10))
    from_status: Mapped[str] = mapped_column(String(16))
