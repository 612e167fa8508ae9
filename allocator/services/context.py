"""The explicit dependencies every service receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from allocator import crypto
from allocator.audit import AuditLog
from allocator.db import Database
from allocator.settings import Settings


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ServiceContext:
    db: Database
    ring: crypto.KeyRing
    settings: Settings
    audit: AuditLog
    clock: Callable[[], datetime] = utcnow
    passwords: crypto.PasswordHashing = field(default_factory=crypto.PasswordHashing)

    def now(self) -> datetime:
        return self.clock()

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        ring: crypto.KeyRing,
        *,
        clock: Callable[[], datetime] = utcnow,
        passwords: crypto.PasswordHashing | None = None,
    ) -> ServiceContext:
        return cls(
            db=db,
            ring=ring,
            settings=settings,
            audit=AuditLog(
                ring=ring, checkpoint_every=settings.audit_checkpoint_every, witness=settings.audit_witness
            ),
            clock=clock,
            passwords=passwords or crypto.PasswordHashing(),
        )
