"""Temperature excursions (issue 19): a shipment in transit or a site's refrigerator left 2-8 °C.

The report quarantines every affected kit at once, whatever its arm (placebo is stored the same
way); the sponsor's signed decision (release or destroy) then moves them. Reports are never deleted:
the decision is recorded once on the report, and the kits' own history says the rest."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class TemperatureExcursion(Base):
    __tablename__ = "temperature_excursion"
    __table_args__ = (UniqueConstraint("trial_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    number: Mapped[str] = mapped_column(String(20))  # EXC-0001
    place: Mapped[str] = mapped_column(String(12))  # shipment | site
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    shipment_id: Mapped[int | None] = mapped_column(ForeignKey("shipment.id"))
    # Tenths of a degree Celsius: exact on every backend (no float, no Decimal on SQLite).
    min_tenths: Mapped[int] = mapped_column(Integer)
    max_tenths: Mapped[int] = mapped_column(Integer)
    duration_minutes: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text)
    kit_count: Mapped[int] = mapped_column(Integer)
    logger_name: Mapped[str] = mapped_column(String(200))  # as uploaded, shown only, never a path
    logger_type: Mapped[str] = mapped_column(String(40))  # csv | pdf | txt
    logger_size: Mapped[int] = mapped_column(Integer)
    logger_sha256: Mapped[str] = mapped_column(String(64))
    logger_content: Mapped[bytes] = mapped_column(LargeBinary)
    reported_at: Mapped[datetime]
    reported_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    reported_by_name: Mapped[str] = mapped_column(String(200))
    report_signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))
    status: Mapped[str] = mapped_column(String(12))  # pending | released | destroyed (final)
    decided_at: Mapped[datetime | None]
    decided_by_name: Mapped[str | None] = mapped_column(String(200))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    decision_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))


class ExcursionKit(Base):
    """A kit quarantined by an excursion report. Append-only."""

    __tablename__ = "excursion_kit"
    __table_args__ = (UniqueConstraint("excursion_id", "kit_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    excursion_id: Mapped[int] = mapped_column(ForeignKey("temperature_excursion.id"), index=True)
    kit_id: Mapped[int] = mapped_column(ForeignKey("kit.id"), index=True)
