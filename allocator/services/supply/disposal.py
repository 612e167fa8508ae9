"""Kit returns and destructions (issue 19): kits of a site returned to the depot, or destroyed on
site, recorded by scan in batches, each batch one record with its document.

The scans follow the rules of the receipt and bedside scans: a kit's label QR payload (its MAC
checked, a label of another trial refused) or its typed number (check digit verified). Every kit of
a record must be at the same site, within the recorder's reach, in a status that can leave the
site's stock (`kit_rules.RETURN_SOURCES`, `DESTRUCTION_SOURCES`); otherwise the whole record is
refused and nothing changes. Each kit's condition is recorded: used (dispensed or administered),
damaged, expired (recorded expired, or past its expiry date), else unused.

A return produces a return form (PDF) that travels with the kits; a destruction is signed by
re-authentication (ACC-12) and produces a destruction certificate (PDF) carrying the signature's
manifestation. One transaction each: the record, its kits, every kit's history row, the printed
document (its bytes kept, so downloading it later creates nothing) and the audit entry. Nothing
about a record names an arm, a lot or a kit type (BLD-01).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import func, select

import kits as kitlib
from allocator.audit import Action, Actor
from allocator.db import require
from allocator.models import Kit, KitDisposal, KitDisposalItem, PrintedDocument, Signature, Site
from allocator.permissions import Scope
from allocator.printing import kit_disposal as printing
from allocator.services import documents, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import (
    FREE_TEXT_MAX,
    Conflict,
    FieldProblem,
    NotFound,
    ValidationFailed,
    check_lengths,
)
from allocator.services.lookups import (
    current_definition,
    get_trial,
    lock_site,
    newest_first,
    page_size,
    site_filter,
)
from allocator.services.supply import resupply
from allocator.services.supply.kit_rules import (
    DESTRUCTION_SOURCES,
    RETURN_SOURCES,
    S,
    move_kit,
    number_from_scan,
    unreadable,
)
from allocator.settings import Environment
from allocator.version import __version__

RETURN = "return"
DESTRUCTION = "destruction"
KINDS = (RETURN, DESTRUCTION)
DOCUMENT_KIND = {RETURN: "return_form", DESTRUCTION: "destruction_certificate"}
_PREFIX = {RETURN: "RET", DESTRUCTION: "DES"}
DESTRUCTION_MEANING = "kit destruction"
_DESTRUCTION_MEANING_FR = "destruction de kits"
DISPOSAL_PAGE = 50  # records per page of the returns page (issue 21)
MAX_DISPOSAL_PAGE = 1000


@dataclass(frozen=True, slots=True)
class DisposalRow:
    """A record as the returns page lists it (blinded)."""

    number: str
    kind: str
    site: str
    kit_count: int
    method: str
    witness: str | None
    recorded_at: datetime
    recorded_by: str
    signed: bool


def condition_of(kit: Kit, today: date) -> str:
    """used, damaged, expired or unused: what the form and the certificate say of a kit."""
    if kit.status in (S.DISPENSED.value, S.ADMINISTERED.value):
        return "used"
    if kit.status == S.DAMAGED.value:
        return "damaged"
    if kit.status == S.EXPIRED.value or (kit.expiry_date is not None and kit.expiry_date < today):
        return "expired"
    return "unused"


def _why_not(status: S, shown: str) -> str:
    """Why a kit of this status cannot be returned or destroyed, in plain words."""
    if status in (S.RETURNED, S.DESTROYED, S.LOST):
        return f"kit {shown} has already left the site's stock"
    if status is S.QUARANTINED:
        return f"kit {shown} is in quarantine: it waits for the sponsor's decision"
    if status is S.ALLOCATED:
        return f"kit {shown} is allocated to a subject: replace it through the subject first"
    return f"kit {shown} is not in the site's stock"


def _numbers(trial_code: str, scanned: Sequence[str], ctx: ServiceContext) -> list[str]:
    """The kit numbers of the scans, in order; every unreadable line named (kits[i])."""
    numbers: list[str] = []
    problems: list[FieldProblem] = []
    for index, raw in enumerate(scanned):
        if not raw.strip():
            continue
        try:
            number = number_from_scan(raw, trial_code, ctx)
        except kitlib.KitsError as exc:
            problems.append(FieldProblem(f"kits[{index}]", unreadable(exc)))
            continue
        if number in numbers:
            problems.append(FieldProblem(f"kits[{index}]", "this kit is scanned twice"))
            continue
        numbers.append(number)
    if problems:
        raise ValidationFailed("some kit numbers are not valid", errors=problems)
    if not numbers:
        raise ValidationFailed("scan at least one kit", errors=[FieldProblem("kits", "no kit scanned")])
    return numbers


def record(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    kind: str,
    scanned: Sequence[str],
    *,
    method: str,
    scope: Scope,
    witness: str = "",
    signature: signatures.SignatureRequest | None = None,
) -> str:
    """Record a return (`kind` "return") or a destruction ("destruction", signed) of the scanned
    kits; returns the record's number. Raises ValidationFailed (naming the field), NotFound,
    Conflict, SignatureRefused; on any refusal nothing changes."""
    if kind not in KINDS:
        raise ValidationFailed(
            "unknown record", errors=[FieldProblem("kind", "must be return or destruction")]
        )
    numbers = _numbers(trial_code, scanned, ctx)
    if not method.strip():
        raise ValidationFailed("the method is required", errors=[FieldProblem("method", "is required")])
    check_lengths(method=(method, FREE_TEXT_MAX), witness=(witness, 200))  # witness_name: String(200)
    if kind == DESTRUCTION and (signature is None or not signature.password):
        raise ValidationFailed("this record is signed", errors=[FieldProblem("password", "is required")])
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=DESTRUCTION_MEANING if kind == DESTRUCTION else "kit return",
            object_type="kit_disposal",
            object_id=",".join(numbers[:5]),
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        today = definition.local_date(now)
        # Sites before kits, the order of a randomization (site row, then the kits it draws): a
        # return of an available kit locked the kit, then waited for its site's row while a
        # randomization at that site held the row and waited for the kit (a PostgreSQL deadlock,
        # one of the two refused). The sites are read unlocked first; the kits, once locked, are
        # checked against the sites locked (a kit moved in between is refused below).
        held_sites = sorted(
            {
                site_id
                for site_id in session.execute(
                    select(Kit.site_id).where(Kit.trial_id == trial.id, Kit.kit_number.in_(numbers))
                ).scalars()
                if site_id is not None
            }
        )
        for site_id in held_sites:
            lock_site(session, site_id)
        kits = {
            k.kit_number: k
            for k in session.execute(
                select(Kit)
                .where(Kit.trial_id == trial.id, Kit.kit_number.in_(numbers))
                .order_by(Kit.id)
                .with_for_update()
            ).scalars()
        }
        sources = RETURN_SOURCES if kind == RETURN else DESTRUCTION_SOURCES
        problems = []
        for index, number in enumerate(numbers):
            kit = kits.get(number)
            shown = kitlib.format_kit_number(number)
            if (
                kit is None
                or kit.site_id is None
                or kit.site_id not in held_sites
                or not scope.allows_site(kit.site_id)
            ):
                problems.append(
                    FieldProblem(f"kits[{index}]", f"kit {shown} is at no site within your reach")
                )
            elif S(kit.status) not in sources:
                problems.append(FieldProblem(f"kits[{index}]", _why_not(S(kit.status), shown)))
        if problems:
            raise ValidationFailed("some kits cannot be recorded", errors=problems)
        site_ids = {kits[n].site_id for n in numbers}
        if len(site_ids) != 1:
            raise Conflict("the kits are at different sites: record one site at a time")
        # The site's row, locked above, numbers its records one at a time (two recorders at once).
        site = require(session, Site, site_ids.pop())
        count = session.execute(
            select(func.count())
            .select_from(KitDisposal)
            .where(KitDisposal.site_id == site.id, KitDisposal.kind == kind)
        ).scalar_one()
        record_number = f"{_PREFIX[kind]}-{site.code}-{count + 1:04d}"
        items = [(n, condition_of(kits[n], today)) for n in sorted(numbers)]
        signed = None
        if signature is not None and kind == DESTRUCTION:
            signed = signatures.sign(
                ctx,
                session,
                actor=actor,
                chain=trial.code,
                trial_id=trial.id,
                request=signature,
                meaning=DESTRUCTION_MEANING,
                object_type="kit_disposal",
                object_id=record_number,
                content={
                    "record": record_number,
                    "site": site.code,
                    "kits": [n for n, _ in items],
                    "method": method.strip(),
                    "witness": witness.strip() or None,
                },
                now=now,
            )
        document_id = documents.next_document_id(session, trial, _PREFIX[kind])
        disposal = KitDisposal(
            trial_id=trial.id,
            site_id=site.id,
            number=record_number,
            kind=kind,
            method=method.strip(),
            witness_name=witness.strip() or None,
            kit_count=len(items),
            document_id=document_id,
            signature_id=signed.id if signed is not None else None,
            recorded_at=now,
            recorded_by_id=actor.user_id,
            recorded_by_name=actor.name,
        )
        session.add(disposal)
        session.flush()
        target = S.RETURNED if kind == RETURN else S.DESTROYED
        for number, condition in items:
            kit = kits[number]
            session.add(
                KitDisposalItem(
                    disposal_id=disposal.id,
                    kit_id=kit.id,
                    kit_number=number,
                    condition=condition,
                    from_status=kit.status,
                )
            )
            move_kit(session, kit, target, actor, f"{record_number} ({condition})", now)
        pdf = printing.render(
            printing.DisposalDocument(
                kind=kind,
                trial_code=trial.code,
                site_code=site.code,
                number=record_number,
                recorded_at=_utc(now),
                recorded_by=actor.name,
                method=method.strip(),
                witness=witness.strip() or None,
                kits=tuple(items),
                signature_lines=_manifest(signed) if signed is not None else (),
                test_mode=ctx.settings.env is not Environment.PRODUCTION,
                software_version=__version__,
                document=kitlib.DocumentMeta(document_id=document_id, created_at=_utc(now)),
            )
        )
        # The kit numbers are on the record's items, not on the printed document's: the
        # reconciliation counts a document's items as printed labels.
        documents.record_print(
            ctx,
            session,
            actor,
            trial,
            kind=DOCUMENT_KIND[kind],
            document_id=document_id,
            pdf=pdf,
            items=[],
            now=now,
            keep_content=True,
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.KITS_RETURNED if kind == RETURN else Action.KITS_DESTROYED,
            object_type="kit_disposal",
            object_id=record_number,
            site_code=site.code,
            new={
                "kits": [n for n, _ in items],
                "conditions": {c: sum(1 for _, x in items if x == c) for c in sorted({x for _, x in items})},
                "method": method.strip(),
                "witness": witness.strip() or None,
                "document": document_id,
                "signature": signed.id if signed is not None else None,
            },
            at=now,
        )
        session.flush()
        resupply.after_stock_change(ctx, session, actor, trial, definition, site, now)
        return record_number


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _manifest(signed: Signature) -> tuple[str, ...]:
    shown = signatures.manifestation(signed)
    at = _utc(shown.signed_at).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"Sign\u00e9 \u00e9lectroniquement par {shown.printed_name} ({shown.username}) le {at}, "
        f"signification : {_DESTRUCTION_MEANING_FR} [signature n\u00b0 {shown.signature_id}]",
        shown.line(),
    )


@dataclass(frozen=True, slots=True)
class DisposalPage:
    records: tuple[DisposalRow, ...]
    next_before: str | None  # the record number to pass as `before` for older ones; None: the last page


def disposals(
    ctx: ServiceContext,
    trial_code: str,
    scope: Scope,
    *,
    before: str | None = None,
    limit: int = DISPOSAL_PAGE,
    site: str | None = None,
    kind: str | None = None,
) -> DisposalPage:
    """One page of the returns and destructions of the sites within `scope` (of `site`, of `kind`,
    when given), newest first, older than the record numbered `before`: two statements and `limit`
    records, however many the trial has made (issue 21: at close-out every site returns or destroys
    what it holds, record after record). Raises ValidationFailed naming `before`, `site`, `kind` or
    `limit`."""
    page_size(limit, MAX_DISPOSAL_PAGE)
    if kind is not None and kind not in KINDS:
        raise ValidationFailed("invalid kind", errors=[FieldProblem("kind", "unknown kind")])
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        sites = {
            row.id: row.code
            for row in session.execute(select(Site.id, Site.code).where(Site.trial_id == trial.id))
        }
        query = select(KitDisposal)
        if site:
            query = query.where(KitDisposal.site_id == site_filter(sites, site, scope, trial.code))
        if kind:
            query = query.where(KitDisposal.kind == kind)
        found, more = newest_first(
            session,
            query,
            KitDisposal,
            trial,
            scope,
            limit=limit,
            before=before,
            unknown=f"no record {before!r} within your reach",
        )
        rows = tuple(
            DisposalRow(
                number=d.number,
                kind=d.kind,
                site=sites[d.site_id],
                kit_count=d.kit_count,
                method=d.method,
                witness=d.witness_name,
                recorded_at=d.recorded_at,
                recorded_by=d.recorded_by_name,
                signed=d.signature_id is not None,
            )
            for (d,) in found
        )
        return DisposalPage(records=rows, next_before=rows[-1].number if more else None)


def document(ctx: ServiceContext, trial_code: str, number: str, scope: Scope) -> tuple[str, bytes]:
    """The return form or destruction certificate of a record, exactly as printed: (document id,
    PDF). Creates nothing. NotFound outside `scope`."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        disposal = session.execute(
            select(KitDisposal).where(KitDisposal.trial_id == trial.id, KitDisposal.number == number)
        ).scalar_one_or_none()
        if disposal is None or not scope.allows_site(disposal.site_id):
            raise NotFound(f"no record {number} within your reach")
        content = session.execute(
            select(PrintedDocument.content).where(PrintedDocument.document_id == disposal.document_id)
        ).scalar_one()
        if content is None:
            raise Conflict(f"the document of {number} was not kept")
        return disposal.document_id, content
