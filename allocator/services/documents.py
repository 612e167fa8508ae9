"""Printed documents (labels, dispensation sheets, randomization confirmations, code-break
sheets): their document ids, and the record of each print with its audit entry (LBL-11, LBL-12)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from allocator.audit import Action, Actor
from allocator.models import PrintedDocument, Trial
from allocator.services.context import ServiceContext


def next_document_id(session: Session, trial: Trial, prefix: str) -> str:
    count = session.execute(
        select(func.count()).select_from(PrintedDocument).where(PrintedDocument.trial_id == trial.id)
    ).scalar_one()
    return f"{prefix}-{trial.code}-{count + 1:06d}"


def record_print(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: Trial,
    *,
    kind: str,
    document_id: str,
    pdf: bytes,
    items: Sequence[str],
    now: datetime,
    subject_id: int | None = None,
    reprint_number: int = 0,
    reprint_of: str | None = None,
    content_sha256: str | None = None,
    audit: Mapping[str, object] | None = None,
    site_code: str | None = None,
    keep_content: bool = False,
) -> None:
    """Record a printed document in the caller's transaction (LBL-11, LBL-12): its row (kind, the
    kit numbers on it, the reprint count, the digest of its bytes, who printed it and when) and,
    when `audit` is given, its `document.printed` audit entry holding `audit`.

    `content_sha256` defaults to the SHA-256 of `pdf`; code-break sheets pass a keyed digest
    instead (BLD-05) and write their own audit entry. With `keep_content` the bytes themselves are
    kept, so that viewing the document later serves exactly what was printed, creating nothing."""
    session.add(
        PrintedDocument(
            trial_id=trial.id,
            kind=kind,
            document_id=document_id,
            subject_id=subject_id,
            items=list(items),
            reprint_of=reprint_of,
            reprint_number=reprint_number,
            content_sha256=content_sha256 if content_sha256 is not None else hashlib.sha256(pdf).hexdigest(),
            content=pdf if keep_content else None,
            printed_at=now,
            printed_by_id=actor.user_id,
            printed_by_name=actor.name,
        )
    )
    if audit is not None:
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.DOCUMENT_PRINTED,
            object_type="printed_document",
            object_id=document_id,
            site_code=site_code,
            new=audit,
            at=now,
        )
