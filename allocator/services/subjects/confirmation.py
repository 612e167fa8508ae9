"""The randomization confirmation PDF of a subject: printed by an action, then served as printed."""

from __future__ import annotations

from sqlalchemy import func, select

import kits as kitlib
from allocator.audit import Actor
from allocator.models import Kit, PrintedDocument, Site
from allocator.permissions import Scope
from allocator.services import documents
from allocator.services.context import ServiceContext
from allocator.services.errors import NotFound
from allocator.services.lookups import current_definition, current_dispensations, get_trial, subject_in_reach
from allocator.services.supply import kit_rules


def print_confirmation(
    ctx: ServiceContext, actor: Actor, trial_code: str, number: str, scope: Scope
) -> tuple[str, bytes]:
    """Print the randomization confirmation of a subject (no arm): its document id and bytes.
    Printing is an action (a POST): it records a printed document with its bytes and an audit
    entry; a reprint is marked DUPLICATA and counted (LBL-12), at most 999 times
    (ReprintLimitReached). `printed_confirmation` serves a printed one again, creating nothing."""
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        subject = subject_in_reach(session, trial, number, scope)
        site = session.get(Site, subject.site_id)
        if site is None:  # pragma: no cover
            raise NotFound("no site")
        labels = {d.day: d.label for d in definition.dispensing.schedule}
        live = current_dispensations(session, subject.id)
        kit_rows = []
        for day, row in sorted(live.items()):
            kit = session.get(Kit, row.kit_id)
            if kit is not None:
                kit_rows.append(kitlib.ConfirmedKit(labels[day], kit.kit_number))
        previous = documents.checked_reprint_number(
            session.execute(
                select(func.count())
                .select_from(PrintedDocument)
                .where(
                    PrintedDocument.subject_id == subject.id,
                    PrintedDocument.kind == documents.RANDOMIZATION_CONFIRMATION,
                )
            ).scalar_one()
        )
        document_id = documents.next_document_id(session, trial, "RAND")
        pdf = kitlib.render_randomization_confirmation(
            kit_rules.label_info(definition, ctx.settings.env),
            kitlib.RandomizationConfirmation(
                site_code=site.code,
                site_name=site.name,
                subject_number=subject.subject_number,
                screening_number=subject.screening_number,
                randomization_number=subject.randomization_number,
                randomized_at=subject.randomized_at,
                randomized_by=subject.randomized_by_name,
                local_zone=definition.timezone,
                kits=tuple(kit_rows),
                document=kitlib.DocumentMeta(
                    document_id=document_id, created_at=now, reprint_number=previous
                ),
            ),
        )
        documents.record_print(
            ctx,
            session,
            actor,
            trial,
            kind=documents.RANDOMIZATION_CONFIRMATION,
            document_id=document_id,
            pdf=pdf,
            items=[k.kit_number for k in kit_rows],
            now=now,
            subject_id=subject.id,
            reprint_number=previous,
            audit={"kind": documents.RANDOMIZATION_CONFIRMATION, "subject": number, "reprint": previous},
            site_code=site.code,
            keep_content=True,
        )
        return document_id, pdf


def printed_confirmation(
    ctx: ServiceContext, trial_code: str, number: str, document_id: str, scope: Scope
) -> bytes:
    """The bytes of a randomization confirmation printed earlier for this subject, exactly as
    printed (a read: nothing is recorded). NotFound for another subject's document, another
    trial's, a subject out of scope, or a confirmation printed before its bytes were kept."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        subject = subject_in_reach(session, trial, number, scope)
        content = documents.kept_content(
            session, trial, subject.id, documents.RANDOMIZATION_CONFIRMATION, document_id
        )
        if content is None:
            raise NotFound(f"no printed confirmation {document_id} for {number}")
        return content
