"""Printed documents (labels, dispensation sheets, randomization confirmations, code-break
sheets): their document ids, and the record of each print with its audit entry (LBL-11, LBL-12)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Subquery

from allocator.audit import Action, Actor
from allocator.models import PrintedDocument, Trial
from allocator.services.context import ServiceContext
from allocator.services.errors import ReprintLimitReached
from kits import MAX_REPRINT_NUMBER, LabelKind

DISPENSATION_SHEET = "dispensation_sheet"
KIT_RELABELS = "kit_relabels"


def kit_labels_kind(level: LabelKind) -> str:
    """The kind of a sheet of kit labels of one packaging level."""
    return f"kit_labels_{level.value}"


RANDOMIZATION_CONFIRMATION = "randomization_confirmation"

# The kinds of printed document whose items are kit numbers, which the kit reconciliation counts as
# labels printed (LBL-11), as it counted every document that lists a kit's number before: a label
# sheet of each packaging level, a relabelling sheet, a dispensation sheet, a randomization
# confirmation. The other kinds list other numbers (code-break sheets, tube sets) or none (return
# forms, destruction certificates): issue 21, the reconciliation no longer unnests their items.
KIT_NUMBER_KINDS = (
    *(kit_labels_kind(level) for level in LabelKind),
    KIT_RELABELS,
    DISPENSATION_SHEET,
    RANDOMIZATION_CONFIRMATION,
)

# Shown to site staff (allocator/web/messages.py translates it); the number is MAX_REPRINT_NUMBER.
REPRINT_LIMIT_MESSAGE = "this document has been reprinted 999 times, the most allowed: use a printed copy"


def checked_reprint_number(number: int) -> int:
    """`number` (0 for an original, n for the n-th reprint) when it can be printed; else
    ReprintLimitReached (409), raised before anything is rendered or written. Every document
    carries its reprint number in its duplicate marking (LBL-12), laid out for at most
    MAX_REPRINT_NUMBER (999) reprints: the 1000th is refused in plain words, never a 500."""
    if number > MAX_REPRINT_NUMBER:
        raise ReprintLimitReached(REPRINT_LIMIT_MESSAGE)
    return number


def kept_content(
    session: Session, trial: Trial, subject_id: int, kind: str, document_id: str
) -> bytes | None:
    """The bytes of a document of `kind` printed earlier for this subject, exactly as printed; None
    for another subject's or trial's document, or one printed before its bytes were kept."""
    return session.execute(
        select(PrintedDocument.content).where(
            PrintedDocument.trial_id == trial.id,
            PrintedDocument.subject_id == subject_id,
            PrintedDocument.kind == kind,
            PrintedDocument.document_id == document_id,
        )
    ).scalar_one_or_none()


def printed_items(
    session: Session, trial: Trial, kind: str | Sequence[str] | None = None, *, reprints_only: bool = False
) -> Subquery:
    """Per item (a kit or sheet number) of the trial's printed documents (of `kind`, of one of the
    kinds, or any): how
    many documents list it (`copies`), first prints (`printed`) and reprints (`reprinted`) apart.
    The documents' item lists are unnested in the database (issue 21), not read and counted here.
    `reprints_only`: only the reprints' lists (then `copies` counts reprints), for a count of
    reprints that need not unnest the first prints, which list every kit or sheet of the trial."""
    if session.get_bind().dialect.name == "postgresql":
        items: Any = func.json_array_elements_text(PrintedDocument.items).table_valued("value")
    else:
        items = func.json_each(PrintedDocument.items).table_valued("value")
    reprint = func.coalesce(PrintedDocument.reprint_number, 0) != 0
    conditions = [PrintedDocument.trial_id == trial.id]
    if isinstance(kind, str):
        conditions.append(PrintedDocument.kind == kind)
    elif kind is not None:
        conditions.append(PrintedDocument.kind.in_(kind))
    if reprints_only:
        conditions.append(reprint)
    return (
        select(
            items.c.value.label("item"),
            func.count().label("copies"),
            func.sum(case((reprint, 0), else_=1)).label("printed"),
            func.sum(case((reprint, 1), else_=0)).label("reprinted"),
        )
        .select_from(PrintedDocument)
        .join(items, true())
        .where(*conditions)
        .group_by(items.c.value)
        .subquery()
    )


def next_document_id(session: Session, trial: Trial, prefix: str) -> str:
    """The next document id of the trial, counted under the trial row's lock until the caller's
    commit: two prints at once (at two sites, or a label sheet beside a dispensation sheet) used to
    count the same documents and clash on the unique document id (a 500). `FOR NO KEY UPDATE` does
    not block the inserts that merely refer to the trial (randomizations), only other numberings.
    SQLite serializes writing transactions anyway."""
    session.execute(select(Trial.id).where(Trial.id == trial.id).with_for_update(key_share=True))
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
