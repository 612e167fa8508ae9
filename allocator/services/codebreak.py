"""Offline code-break sheets (UNB-06, UNB-07): generation, reprints and replacements (signed,
audited), checks at monitoring visits, and the reconciliation of opened and unopened sheets.

Emergency unblinding must not depend on the service being up. Before any kit reaches a site, the
unblinded statistician or an unblinded pharmacist generates one sealed sheet per kit (kits/codebreak:
the arm label under a fold-and-seal flap). A sheet opened while the service was unreachable is
registered afterwards by `unblinding.register_offline`, which creates the same unblinding record as
the online path with channel "offline" and the sheet's id; the reconciliation then tells, per site,
which sheets were opened with a registered unblinding, which were found opened without one (a
protocol deviation), which are missing, replaced, intact or never checked.

Blinding (BLD-01, BLD-05, BLD-08):
* arms are read only through `arm_access.kit_arms_in` (one audited `arm.read` entry per document),
  and only to print them; nothing else here holds an arm, and no audit entry, error, signature
  content, CSV or page does;
* the PDFs go only to the person who generated them (code_break:generate, unblinded roles);
* sheets are numbered in kit-number order. Kit numbers are random (BLD-03), whereas the creation
  order of kits follows the balanced blocks of the kit list: numbering in creation order would put
  the sheets of one block next to each other;
* the stored digest of a document is keyed (HMAC): the PDF is deterministic, so a plain SHA-256
  would let anyone with database access render both candidate documents and compare.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.expression import Subquery

import kits as kitlib
from allocator import crypto
from allocator.audit import Action, Actor
from allocator.models import (
    CodeBreakCheck,
    CodeBreakCheckStatus,
    CodeBreakSheet,
    Kit,
    PrintedDocument,
    Signature,
    Site,
    Trial,
    Unblinding,
    UnblindingChannel,
)
from allocator.permissions import Scope
from allocator.printing.safe_csv import csv_text
from allocator.services import arm_access, signatures
from allocator.services import documents as services_documents
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import current_definition, get_trial
from allocator.services.reports.filters import Window
from allocator.services.supply import kit_rules
from allocator.services.supply.stock import kit_reach
from allocator.trialdef import TrialDefinition

KIND = "code_break_sheets"  # printed_document.kind; its items are the sheet numbers printed
DOCUMENT_PREFIX = "CBDOC"
SHEET_PREFIX = "CB"
GENERATION_MEANING = "code-break sheet generation"
REPRINT_MEANING = "code-break sheet reprint"
REPLACEMENT_MEANING = "code-break sheet replacement"
_MEANINGS_FR = {
    GENERATION_MEANING: "g\u00e9n\u00e9ration des fiches de lev\u00e9e d'aveugle",
    REPRINT_MEANING: "r\u00e9impression de fiches de lev\u00e9e d'aveugle",
    REPLACEMENT_MEANING: "remplacement d'une fiche de lev\u00e9e d'aveugle",
}
PURPOSE = "code-break sheets"
CHECK_STATUSES = tuple(status.value for status in CodeBreakCheckStatus)
MAX_KITS = 10_000
MAX_TEXT = 1000
DEPOT = "depot"

# Reconciliation states of a sheet, in order of precedence (the first that applies).
OPENED_REGISTERED = "opened_registered"  # an offline unblinding names the sheet
OPENED_UNREGISTERED = "opened_unregistered"  # found opened, no registered unblinding: a deviation
REPLACED = "replaced"  # a new sheet replaces it (it was lost)
MISSING = "missing"  # last check: not found
INTACT = "intact"  # last check: sealed
NEVER_CHECKED = "never_checked"
STATES = (OPENED_REGISTERED, OPENED_UNREGISTERED, REPLACED, MISSING, INTACT, NEVER_CHECKED)


class SheetDocument(NamedTuple):
    """A printed code-break document: (document id, PDF, number of sheets)."""

    document_id: str
    pdf: bytes
    sheets: int


# --- lookups -----------------------------------------------------------------------------------


def normalize_sheet_number(raw: str) -> str:
    """A typed or scanned sheet number (the QR code holds exactly the sheet number)."""
    return raw.strip().upper()


def sheet_for(session: Session, trial: Trial, sheet_number: str) -> CodeBreakSheet:
    """The sheet `sheet_number` of `trial` (typed or scanned). Raises NotFound naming the field."""
    number = normalize_sheet_number(sheet_number)
    if not number:
        raise ValidationFailed("give the sheet number", errors=[FieldProblem("sheet_number", "is required")])
    sheet = session.execute(
        select(CodeBreakSheet).where(
            CodeBreakSheet.trial_id == trial.id, CodeBreakSheet.sheet_number == number
        )
    ).scalar_one_or_none()
    if sheet is None:
        raise NotFound(
            f"no code-break sheet {number}", errors=[FieldProblem("sheet_number", "unknown sheet")]
        )
    return sheet


def check_sheet(ctx: ServiceContext, trial_code: str, raw: str, scope: Scope) -> str:
    """A scanned or typed sheet number, checked as it arrives (issue 13): the sheet number when it
    is a sheet of this trial within reach. Records nothing, reads no arm. Raises ValidationFailed
    (empty, a kit label or a lab manifest, another trial's sheet) or NotFound (unknown or out of reach), naming the
    field `sheet_number` in plain words."""
    number = normalize_sheet_number(raw)
    if not number:
        raise ValidationFailed("give the sheet number", errors=[FieldProblem("sheet_number", "is required")])
    if kitlib.SHIPMENT_PAYLOAD_PATTERN.fullmatch(number):
        raise ValidationFailed(
            "a lab shipment manifest, not a sheet",
            errors=[FieldProblem("sheet_number", "a lab shipment manifest, not a code-break sheet")],
        )
    if kitlib.looks_like_scan(number):
        raise ValidationFailed(
            "a kit label, not a sheet",
            errors=[FieldProblem("sheet_number", "a kit label, not a code-break sheet")],
        )
    if number.startswith(f"{SHEET_PREFIX}-") and not number.startswith(f"{SHEET_PREFIX}-{trial_code}-"):
        raise ValidationFailed(
            "another trial's sheet", errors=[FieldProblem("sheet_number", "a sheet of another trial")]
        )
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        sheet = sheet_for(session, trial, number)
        kit = session.get(Kit, sheet.kit_id)
        if kit is None or not _within(scope, kit.site_id):
            raise NotFound(
                f"no code-break sheet {number} within your reach",
                errors=[FieldProblem("sheet_number", "unknown sheet")],
            )
        return sheet.sheet_number


def kits_without_sheet(session: Session, trial: Trial) -> int:
    """How many kits of `trial` have no code-break sheet yet (UNB-07: no activation, no shipment)."""
    covered = select(CodeBreakSheet.kit_id).where(CodeBreakSheet.trial_id == trial.id)
    return session.execute(
        select(func.count()).select_from(Kit).where(Kit.trial_id == trial.id, Kit.id.not_in(covered))
    ).scalar_one()


def missing_sheets(ctx: ServiceContext, trial_code: str) -> int:
    """`kits_without_sheet` in its own read (for pages)."""
    with ctx.db.reading() as session:
        return kits_without_sheet(session, get_trial(session, trial_code))


# --- generation, reprint, replacement (UNB-06) -------------------------------------------------------


def _locked_trial(session: Session, trial_code: str) -> Trial:
    """The trial row, locked: sheet and document numbers are taken one generation at a time. FOR NO
    KEY UPDATE (as documents.next_document_id): the units of work that record trial data hold the
    row key-share (`lookups.require_open`), and a generation that renders its PDF while holding the
    row must not hold up a bedside scan or a randomization; only the database lock excludes them."""
    trial = session.execute(
        select(Trial).where(Trial.code == trial_code).with_for_update(key_share=True)
    ).scalar_one_or_none()
    if trial is None:
        raise NotFound(f"no trial {trial_code!r}")
    return trial


def _kit_numbers(ctx: ServiceContext, trial_code: str, raw: Sequence[str]) -> list[str]:
    """Typed kit numbers or scanned kit labels (check digit or MAC verified, LBL-09), in order."""
    numbers: list[str] = []
    problems = []
    for index, text in enumerate(raw):
        value = text.strip()
        if not value:
            continue
        try:
            if "/" in value:
                number = kitlib.verify_payload(value, trial_code, kit_rules.mac(ctx)).kit_number
            else:
                number = kitlib.normalize_kit_number(value)
        except (kitlib.KitNumberError, kitlib.PayloadError) as exc:
            problems.append(FieldProblem(f"kits[{index}]", kit_rules.unreadable(exc)))
            continue
        if number not in numbers:
            numbers.append(number)
    if problems:
        raise ValidationFailed("some kit numbers are not valid", errors=problems)
    if not numbers:
        raise ValidationFailed("no kit given", errors=[FieldProblem("kits", "give at least one kit number")])
    if len(numbers) > MAX_KITS:
        raise ValidationFailed("too many kits", errors=[FieldProblem("kits", f"at most {MAX_KITS}")])
    return numbers


def _required(value: str, field: str, what: str) -> str:
    text = value.strip()
    if not text:
        raise ValidationFailed(f"{what} is required", errors=[FieldProblem(field, "is required")])
    if len(text) > MAX_TEXT:
        raise ValidationFailed(
            f"{what} is too long", errors=[FieldProblem(field, f"at most {MAX_TEXT} characters")]
        )
    return text


def _need_signature(signature: signatures.SignatureRequest | None) -> signatures.SignatureRequest:
    if signature is None or not signature.password:
        raise ValidationFailed("this act is signed", errors=[FieldProblem("password", "is required")])
    return signature


def _next_sheet_numbers(session: Session, trial: Trial, count: int) -> list[str]:
    existing = session.execute(
        select(func.count()).select_from(CodeBreakSheet).where(CodeBreakSheet.trial_id == trial.id)
    ).scalar_one()
    return [f"{SHEET_PREFIX}-{trial.code}-{existing + i:06d}" for i in range(1, count + 1)]


def _aware(value: datetime) -> datetime:
    """Times are stored in UTC; a backend may hand them back without their zone."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _digest(ctx: ServiceContext, pdf: bytes) -> str:
    # Keyed, not a plain SHA-256: see the module docstring (BLD-05).
    return crypto.label_mac(ctx.ring, b"code-break-sheets|" + pdf).hex()


@dataclass(frozen=True, slots=True)
class _Printed:
    sheet: CodeBreakSheet
    kit: Kit
    replaces: str | None = None


def _print(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    trial: Trial,
    definition: TrialDefinition,
    items: Sequence[_Printed],
    *,
    document_id: str,
    signed: Signature,
    now: datetime,
    reprint_number: int = 0,
    reprint_of: str | None = None,
) -> bytes:
    """Read the arms (audited), render the sheets and record the printed document."""
    arms = arm_access.kit_arms_in(session, ctx, actor, trial.code, [item.kit for item in items], PURPOSE)
    labels = {arm.code: arm.label for arm in definition.arms}
    try:
        document = kitlib.CodeBreakDocument(
            sheets=tuple(
                kitlib.SealedSheet(
                    sheet_number=item.sheet.sheet_number,
                    kit_number=item.kit.kit_number,
                    sealed_text=labels[arms[item.kit.id]],
                    replaces=item.replaces,
                )
                for item in items
            ),
            signature=kitlib.ElectronicSignature(
                printed_name=signed.printed_name,
                signed_at=_aware(signed.signed_at),
                meaning=kitlib.Bilingual(_MEANINGS_FR[signed.meaning], signed.meaning),
            ),
            document=kitlib.DocumentMeta(
                document_id=document_id, created_at=now, reprint_number=reprint_number
            ),
        )
        pdf = kitlib.render_code_break_sheets(kit_rules.label_info(definition, ctx.settings.env), document)
    except kitlib.KitsError as exc:
        # The kits library never quotes the sealed text in its messages.
        raise Conflict(f"the code-break sheets cannot be printed: {exc}") from None
    services_documents.record_print(
        ctx,
        session,
        actor,
        trial,
        kind=KIND,
        document_id=document_id,
        pdf=pdf,
        items=[item.sheet.sheet_number for item in items],
        now=now,
        reprint_number=reprint_number,
        reprint_of=reprint_of,
        content_sha256=_digest(ctx, pdf),
    )
    return pdf


def generate_sheets(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    signature: signatures.SignatureRequest | None,
    kit_numbers: Sequence[str] | None = None,
) -> SheetDocument:
    """Generate the sealed code-break sheet of every kit of the trial that has none yet (or of the
    given kits), signed (meaning "code-break sheet generation", ACC-12) and audited.

    Creates one CodeBreakSheet per kit (numbered CB-<trial>-000001 on, in kit-number order), one
    printed document (kind "code_break_sheets"), an `arm.read` entry and a `code_break.generated`
    entry (counts, never an arm). Returns (document id, PDF, number of sheets).

    Raises ValidationFailed (no password, bad kit numbers), SignatureRefused (wrong password: audited,
    counts toward the lockout), NotFound (unknown trial or kits), Conflict (nothing to generate, or a
    given kit already has a sheet)."""
    numbers = None if kit_numbers is None else _kit_numbers(ctx, trial_code, kit_numbers)
    request = _need_signature(signature)
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=GENERATION_MEANING,
            object_type="code_break_sheets",
            object_id=trial_code,
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = _locked_trial(session, trial_code)
        definition = current_definition(session, trial)
        existing: dict[int, str] = {
            row.kit_id: row.sheet_number
            for row in session.execute(
                select(CodeBreakSheet.kit_id, CodeBreakSheet.sheet_number).where(
                    CodeBreakSheet.trial_id == trial.id
                )
            )
        }
        query = select(Kit).where(Kit.trial_id == trial.id)
        if numbers is not None:
            query = query.where(Kit.kit_number.in_(numbers))
        candidates = list(session.execute(query).scalars())
        if numbers is not None:
            found = {kit.kit_number for kit in candidates}
            unknown = [n for n in numbers if n not in found]
            if unknown:
                raise NotFound(
                    "unknown kits",
                    errors=[
                        FieldProblem("kits", f"no kit {kitlib.format_kit_number(n)} in {trial.code}")
                        for n in unknown
                    ],
                )
            covered = sorted((kit.kit_number, existing[kit.id]) for kit in candidates if kit.id in existing)
            if covered:
                raise Conflict(
                    "some kits already have a code-break sheet: reprint its document, or replace a lost sheet",
                    errors=[
                        FieldProblem("kits", f"kit {kitlib.format_kit_number(n)} has sheet {sheet}")
                        for n, sheet in covered
                    ],
                )
        kits = sorted((k for k in candidates if k.id not in existing), key=lambda k: k.kit_number)
        if not kits:
            raise Conflict("every kit of the trial already has a code-break sheet: nothing to generate")
        sheet_numbers = _next_sheet_numbers(session, trial, len(kits))
        document_id = services_documents.next_document_id(session, trial, DOCUMENT_PREFIX)
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=request,
            meaning=GENERATION_MEANING,
            object_type="printed_document",
            object_id=document_id,
            content={
                "document": document_id,
                "sheets": dict(zip(sheet_numbers, (k.kit_number for k in kits), strict=True)),
            },
            now=now,
        )
        sheets = [
            CodeBreakSheet(
                trial_id=trial.id,
                kit_id=kit.id,
                sheet_number=number,
                document_id=document_id,
                replaces_id=None,
                generated_at=now,
                generated_by_id=actor.user_id,
                generated_by_name=actor.name,
                signature_id=signed.id,
            )
            for kit, number in zip(kits, sheet_numbers, strict=True)
        ]
        session.add_all(sheets)
        session.flush()
        pdf = _print(
            ctx,
            session,
            actor,
            trial,
            definition,
            [_Printed(sheet, kit) for sheet, kit in zip(sheets, kits, strict=True)],
            document_id=document_id,
            signed=signed,
            now=now,
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.CODE_BREAK_GENERATED,
            object_type="printed_document",
            object_id=document_id,
            new={
                "kind": KIND,
                "sheets": len(sheets),
                "first": sheet_numbers[0],
                "last": sheet_numbers[-1],
                "reprint": 0,
                "signature": signed.id,
            },
            at=now,
        )
        return SheetDocument(document_id, pdf, len(sheets))


def _replaced_ids(session: Session, trial: Trial) -> dict[int, str]:
    """Sheet id -> number of the sheet that replaces it."""
    return {
        replaced: number
        for replaced, number in session.execute(
            select(CodeBreakSheet.replaces_id, CodeBreakSheet.sheet_number).where(
                CodeBreakSheet.trial_id == trial.id, CodeBreakSheet.replaces_id.is_not(None)
            )
        )
        if replaced is not None
    }


def reprint_document(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    document_id: str,
    *,
    reason: str,
    signature: signatures.SignatureRequest | None,
) -> SheetDocument:
    """A second copy of a code-break document: a new copy of unblinding material, so reasoned, signed
    and audited like a label reprint (LBL-12), marked DUPLICATA with its reprint number. Sheets
    replaced since are left out (their replacement is in another document).

    Raises ValidationFailed (reason, password), SignatureRefused, NotFound (document_id), Conflict
    (every sheet of the document was replaced)."""
    reason = _required(reason, "reason", "a reason")
    request = _need_signature(signature)
    wanted = document_id.strip()
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=REPRINT_MEANING,
            object_type="printed_document",
            object_id=wanted,
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = _locked_trial(session, trial_code)
        definition = current_definition(session, trial)
        document = session.execute(
            select(PrintedDocument).where(
                PrintedDocument.trial_id == trial.id,
                PrintedDocument.kind == KIND,
                PrintedDocument.document_id == wanted,
            )
        ).scalar_one_or_none()
        if document is None:
            raise NotFound(
                f"no code-break document {wanted}",
                errors=[FieldProblem("document_id", "unknown document")],
            )
        original = document.reprint_of or document.document_id
        replaced = _replaced_ids(session, trial)
        rows = session.execute(
            select(CodeBreakSheet, Kit)
            .join(Kit, Kit.id == CodeBreakSheet.kit_id)
            .where(CodeBreakSheet.trial_id == trial.id, CodeBreakSheet.document_id == original)
            .order_by(CodeBreakSheet.sheet_number)
        ).all()
        items = []
        for sheet, kit in rows:
            if sheet.id in replaced:
                continue
            previous = session.get(CodeBreakSheet, sheet.replaces_id) if sheet.replaces_id else None
            items.append(_Printed(sheet, kit, previous.sheet_number if previous else None))
        if not items:
            raise Conflict(f"every sheet of {original} was replaced: reprint the replacements instead")
        reprint_number = services_documents.checked_reprint_number(
            session.execute(
                select(func.count())
                .select_from(PrintedDocument)
                .where(PrintedDocument.trial_id == trial.id, PrintedDocument.reprint_of == original)
            ).scalar_one()
            + 1
        )
        new_id = services_documents.next_document_id(session, trial, DOCUMENT_PREFIX)
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=request,
            meaning=REPRINT_MEANING,
            object_type="printed_document",
            object_id=new_id,
            content={
                "document": new_id,
                "reprint_of": original,
                "reprint": reprint_number,
                "sheets": [item.sheet.sheet_number for item in items],
                "reason": reason,
            },
            now=now,
        )
        pdf = _print(
            ctx,
            session,
            actor,
            trial,
            definition,
            items,
            document_id=new_id,
            signed=signed,
            now=now,
            reprint_number=reprint_number,
            reprint_of=original,
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.DOCUMENT_PRINTED,
            object_type="printed_document",
            object_id=new_id,
            new={
                "kind": KIND,
                "sheets": len(items),
                "reprint": reprint_number,
                "reprint_of": original,
                "signature": signed.id,
            },
            reason=reason,
            at=now,
        )
        return SheetDocument(new_id, pdf, len(items))


def replace_sheet(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    sheet_number: str,
    *,
    reason: str,
    signature: signatures.SignatureRequest | None,
) -> SheetDocument:
    """Replace a lost sheet: a new sheet for the same kit, with a new number, that names the one it
    replaces. The old sheet stays and is reconciled as replaced (nothing is deleted). Reasoned, signed
    and audited.

    Raises ValidationFailed (reason, password, sheet_number), SignatureRefused, NotFound
    (sheet_number), Conflict (the sheet was already replaced)."""
    reason = _required(reason, "reason", "a reason")
    request = _need_signature(signature)
    now = ctx.now()
    wanted = normalize_sheet_number(sheet_number)
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=REPLACEMENT_MEANING,
            object_type="code_break_sheet",
            object_id=wanted,
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = _locked_trial(session, trial_code)
        definition = current_definition(session, trial)
        old = sheet_for(session, trial, sheet_number)
        successor = _replaced_ids(session, trial).get(old.id)
        if successor is not None:
            raise Conflict(f"sheet {old.sheet_number} was already replaced by {successor}")
        kit = session.get(Kit, old.kit_id)
        if kit is None:  # pragma: no cover - a foreign key guarantees it
            raise NotFound("the sheet's kit is missing")
        (number,) = _next_sheet_numbers(session, trial, 1)
        document_id = services_documents.next_document_id(session, trial, DOCUMENT_PREFIX)
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=request,
            meaning=REPLACEMENT_MEANING,
            object_type="code_break_sheet",
            object_id=number,
            content={
                "document": document_id,
                "sheet": number,
                "replaces": old.sheet_number,
                "kit": kit.kit_number,
                "reason": reason,
            },
            now=now,
        )
        sheet = CodeBreakSheet(
            trial_id=trial.id,
            kit_id=kit.id,
            sheet_number=number,
            document_id=document_id,
            replaces_id=old.id,
            generated_at=now,
            generated_by_id=actor.user_id,
            generated_by_name=actor.name,
            signature_id=signed.id,
        )
        session.add(sheet)
        session.flush()
        pdf = _print(
            ctx,
            session,
            actor,
            trial,
            definition,
            [_Printed(sheet, kit, old.sheet_number)],
            document_id=document_id,
            signed=signed,
            now=now,
        )
        site = session.get(Site, kit.site_id) if kit.site_id is not None else None
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.CODE_BREAK_GENERATED,
            object_type="printed_document",
            object_id=document_id,
            site_code=site.code if site else None,
            old={"sheet": old.sheet_number},
            new={
                "kind": KIND,
                "sheets": 1,
                "sheet": number,
                "replaces": old.sheet_number,
                "reprint": 0,
                "signature": signed.id,
            },
            reason=reason,
            at=now,
        )
        return SheetDocument(document_id, pdf, 1)


@dataclass(frozen=True, slots=True)
class DocumentRow:
    document_id: str
    printed_at: datetime
    printed_by: str
    sheets: int
    reprint_number: int
    reprint_of: str | None
    first: str
    last: str


def documents(ctx: ServiceContext, trial_code: str) -> list[DocumentRow]:
    """The code-break documents printed so far, newest first (no arm: numbers and counts)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        rows = session.execute(
            select(PrintedDocument)
            .where(PrintedDocument.trial_id == trial.id, PrintedDocument.kind == KIND)
            .order_by(PrintedDocument.id.desc())
        ).scalars()
        return [
            DocumentRow(
                document_id=d.document_id,
                printed_at=d.printed_at,
                printed_by=d.printed_by_name,
                sheets=len(d.items),
                reprint_number=d.reprint_number,
                reprint_of=d.reprint_of,
                first=min(d.items) if d.items else "",
                last=max(d.items) if d.items else "",
            )
            for d in rows
        ]


# --- checks (monitoring visits) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckRecorded:
    sheet_number: str
    status: str
    discrepancy: str | None  # set when the sheet is found opened without a registered unblinding


def record_check(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    sheet_number: str,
    status: str,
    note: str,
    scope: Scope,
) -> CheckRecorded:
    """Record that a sheet was found intact, opened or missing (a monitor at a visit, or the site's
    pharmacist). Site roles reach only the sheets of kits at their sites; trial-wide roles also reach
    the depot's. A note is required for an opened or missing sheet. Audited (code_break.checked).

    Raises ValidationFailed (sheet_number, status, note), NotFound (sheet_number, or out of reach)."""
    problems = []
    try:
        checked = CodeBreakCheckStatus(status.strip())
    except ValueError:
        problems.append(FieldProblem("status", f"one of {', '.join(CHECK_STATUSES)}"))
        checked = None
    text = note.strip()
    if len(text) > MAX_TEXT:
        problems.append(FieldProblem("note", f"at most {MAX_TEXT} characters"))
    elif checked is not None and checked is not CodeBreakCheckStatus.INTACT and not text:
        problems.append(
            FieldProblem("note", f"describe what was found (required for a {checked.value} sheet)")
        )
    if not normalize_sheet_number(sheet_number):
        problems.append(FieldProblem("sheet_number", "is required"))
    if problems or checked is None:
        raise ValidationFailed("the check cannot be recorded", errors=problems)
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        sheet = sheet_for(session, trial, sheet_number)
        kit = session.get(Kit, sheet.kit_id)
        if kit is None or not _within(scope, kit.site_id):
            raise NotFound(
                f"no code-break sheet {sheet.sheet_number} within your reach",
                errors=[FieldProblem("sheet_number", "unknown sheet")],
            )
        session.add(
            CodeBreakCheck(
                sheet_id=sheet.id,
                status=checked.value,
                note=text,
                checked_at=now,
                checked_by_id=actor.user_id,
                checked_by_name=actor.name,
            )
        )
        registered = _registered_sheet_ids(session, trial, [sheet.id])
        discrepancy = None
        if checked is CodeBreakCheckStatus.OPENED and sheet.id not in registered:
            discrepancy = (
                f"sheet {sheet.sheet_number} is opened but no offline unblinding names it: register the "
                "opening, or report an accidental unblinding (protocol deviation)"
            )
        site = session.get(Site, kit.site_id) if kit.site_id is not None else None
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.CODE_BREAK_CHECKED,
            object_type="code_break_sheet",
            object_id=sheet.sheet_number,
            site_code=site.code if site else None,
            new={"status": checked.value, "discrepancy": discrepancy is not None},
            reason=text or None,
            at=now,
        )
        return CheckRecorded(sheet.sheet_number, checked.value, discrepancy)


def _within(scope: Scope, site_id: int | None) -> bool:
    """Site roles reach the sheets of kits at their sites; only trial-wide roles reach the depot."""
    return scope.all_sites if site_id is None else scope.allows_site(site_id)


def _registered_sheet_ids(session: Session, trial: Trial, sheet_ids: Sequence[int] | None = None) -> set[int]:
    """Sheets named by a registered offline unblinding."""
    query = select(Unblinding.code_break_sheet_id).where(
        Unblinding.trial_id == trial.id,
        Unblinding.channel == UnblindingChannel.OFFLINE.value,
        Unblinding.code_break_sheet_id.is_not(None),
    )
    if sheet_ids is not None:
        query = query.where(Unblinding.code_break_sheet_id.in_(sheet_ids))
    return {sheet_id for sheet_id in session.execute(query).scalars() if sheet_id is not None}


# --- reconciliation (UNB-06) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SheetRow:
    """One sheet in the reconciliation. Never an arm."""

    sheet_number: str
    kit_number: str
    site: str  # the kit's current site, or "depot"
    kit_status: str
    document_id: str
    generated_at: datetime
    replaces: str
    replaced_by: str
    copies: int  # the original print plus reprints
    last_check: str  # intact, opened, missing, or "" (never checked)
    last_check_at: datetime | None
    last_check_by: str
    registered_opening: bool
    state: str  # one of STATES
    discrepancy: str  # "" when none


@dataclass(frozen=True, slots=True)
class SiteSummary:
    site: str
    counts: dict[str, int]  # STATES -> number of sheets
    generated: int
    reprints: int
    discrepancies: int

    @property
    def balanced(self) -> bool:
        return sum(self.counts.values()) == self.generated


@dataclass(frozen=True, slots=True)
class CodeBreakReconciliation:
    sites: tuple[SiteSummary, ...]
    sheets: tuple[SheetRow, ...]  # every sheet within reach, or the `window`'s (a page)
    kits_without_sheet: int
    discrepancies: tuple[str, ...] = ()  # of every sheet within reach, whatever the window
    flagged: tuple[tuple[str, str], ...] = ()  # (sheet number, discrepancy) of each, the same
    total_sheets: int = 0  # sheets within reach
    window: Window | None = None

    @property
    def balanced(self) -> bool:
        return all(s.balanced for s in self.sites) and not self.discrepancies

    @property
    def total(self) -> SiteSummary:
        counts: Counter[str] = Counter()
        for summary in self.sites:
            counts.update(summary.counts)
        return SiteSummary(
            site="total",
            counts={state: counts[state] for state in STATES},
            generated=sum(s.generated for s in self.sites),
            reprints=sum(s.reprints for s in self.sites),
            discrepancies=sum(s.discrepancies for s in self.sites),
        )


def _state(*, registered: bool, ever_opened: bool, replaced: bool, last: str | None) -> tuple[str, str]:
    """(state, discrepancy) of one sheet."""
    if registered:
        if last == CodeBreakCheckStatus.INTACT.value:
            return OPENED_REGISTERED, "an offline unblinding names this sheet, but it was last found intact"
        return OPENED_REGISTERED, ""
    if ever_opened:
        return (
            OPENED_UNREGISTERED,
            "found opened without a registered offline unblinding (protocol deviation): register the "
            "opening or report an accidental unblinding",
        )
    if replaced:
        return REPLACED, ""
    if last == CodeBreakCheckStatus.MISSING.value:
        return MISSING, "missing and not replaced: generate a replacement"
    if last == CodeBreakCheckStatus.INTACT.value:
        return INTACT, ""
    return NEVER_CHECKED, ""


def judged(
    registered: ColumnElement[bool],
    ever_opened: ColumnElement[bool],
    replaced: ColumnElement[bool],
    last: ColumnElement[str | None],
) -> tuple[ColumnElement[str], ColumnElement[int]]:
    """`_state` in SQL: the state of a sheet, and 1 when that is a discrepancy (else 0)."""
    intact = last == CodeBreakCheckStatus.INTACT.value
    state = case(
        (registered, OPENED_REGISTERED),
        (ever_opened, OPENED_UNREGISTERED),
        (replaced, REPLACED),
        (last == CodeBreakCheckStatus.MISSING.value, MISSING),
        (intact, INTACT),
        else_=NEVER_CHECKED,
    )
    flag = case(
        (registered, case((intact, 1), else_=0)),
        (ever_opened, 1),
        (replaced, 0),
        (last == CodeBreakCheckStatus.MISSING.value, 1),
        else_=0,
    )
    return state, flag


def _sheet_facts(session: Session, trial: Trial, scope: Scope, *, counting: bool = False) -> Subquery:
    """One row per sheet within reach (the kit's site; the depot for trial-wide roles) with what
    its state is judged on, its state (`state`, as `_state` says) and whether that is a
    discrepancy (`flag`, 1 or 0), and what a listed row shows: counted in the database (issue 21),
    so that a page reads only its own rows, however many sheets the trial has. `counting`: for the
    counts and the discrepancies only, whose `reprints` need the reprints' lists alone (`copies`
    then counts reprints): the first print lists every sheet of the trial, and unnesting it took 12
    of the counts' 30 ms at 5,000 subjects."""
    checks = (
        select(
            CodeBreakCheck.sheet_id,
            CodeBreakCheck.status,
            CodeBreakCheck.checked_at,
            CodeBreakCheck.checked_by_name,
            func.row_number()
            .over(
                partition_by=CodeBreakCheck.sheet_id,
                order_by=(CodeBreakCheck.checked_at.desc(), CodeBreakCheck.id.desc()),
            )
            .label("latest"),
            func.max(case((CodeBreakCheck.status == CodeBreakCheckStatus.OPENED.value, 1), else_=0))
            .over(partition_by=CodeBreakCheck.sheet_id)
            .label("ever_opened"),
        )
        .join(CodeBreakSheet, CodeBreakSheet.id == CodeBreakCheck.sheet_id)
        .where(CodeBreakSheet.trial_id == trial.id)
        .subquery()
    )
    last = select(checks).where(checks.c.latest == 1).subquery()
    registered = (
        select(Unblinding.code_break_sheet_id.label("sheet_id"))
        .where(
            Unblinding.trial_id == trial.id,
            Unblinding.channel == UnblindingChannel.OFFLINE.value,
            Unblinding.code_break_sheet_id.is_not(None),
        )
        .distinct()
        .subquery()
    )
    successor = aliased(CodeBreakSheet)
    successors = (
        select(successor.replaces_id, func.max(successor.sheet_number).label("number"))
        .where(successor.trial_id == trial.id, successor.replaces_id.is_not(None))
        .group_by(successor.replaces_id)
        .subquery()
    )
    predecessor = aliased(CodeBreakSheet)
    prints = services_documents.printed_items(session, trial, KIND, reprints_only=counting)
    is_registered = registered.c.sheet_id.is_not(None)
    opened = func.coalesce(last.c.ever_opened, 0) == 1
    replaced = successors.c.number.is_not(None)
    state, flag = judged(is_registered, opened, replaced, last.c.status)
    return (
        select(
            CodeBreakSheet.id,
            CodeBreakSheet.sheet_number,
            CodeBreakSheet.document_id,
            CodeBreakSheet.generated_at,
            Kit.kit_number,
            Kit.site_id,
            Kit.status.label("kit_status"),
            predecessor.sheet_number.label("replaces"),
            successors.c.number.label("replaced_by"),
            last.c.status.label("last_check"),
            last.c.checked_at.label("last_check_at"),
            last.c.checked_by_name.label("last_check_by"),
            is_registered.label("registered"),
            opened.label("ever_opened"),
            func.coalesce(prints.c.copies, 0).label("copies"),
            func.coalesce(prints.c.reprinted, 0).label("reprints"),
            state.label("state"),
            flag.label("flag"),
        )
        .join(Kit, Kit.id == CodeBreakSheet.kit_id)
        .outerjoin(last, last.c.sheet_id == CodeBreakSheet.id)
        .outerjoin(registered, registered.c.sheet_id == CodeBreakSheet.id)
        .outerjoin(successors, successors.c.replaces_id == CodeBreakSheet.id)
        .outerjoin(predecessor, predecessor.id == CodeBreakSheet.replaces_id)
        .outerjoin(prints, prints.c.item == CodeBreakSheet.sheet_number)
        .where(CodeBreakSheet.trial_id == trial.id, kit_reach(scope, include_depot=scope.all_sites))
        .subquery()
    )


def reconciliation(
    ctx: ServiceContext, trial_code: str, scope: Scope, *, window: Window | None = None
) -> CodeBreakReconciliation:
    """Sheets generated, opened with a registered offline unblinding, found opened without one
    (discrepancy), replaced, missing, intact at the last check and never checked, per site (the kit's
    current site, or the depot for trial-wide roles), with one row per sheet: every sheet's, or with
    a `window` (a page) only the window's, while the counts and the discrepancies cover every sheet.
    Every sheet falls in exactly one state, so each site's states add up to its sheets generated.
    Never an arm.

    Issue 21: the states are judged and counted per site in the database (`_sheet_facts`); only the
    listed rows and the sheets with a discrepancy (normally none) are read, and put in words by
    `_state`, which the database's judgement mirrors."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        sites = {
            row.id: row.code
            for row in session.execute(select(Site.id, Site.code).where(Site.trial_id == trial.id))
        }
        counted = _sheet_facts(session, trial, scope, counting=True)
        summaries: dict[str, dict[str, int]] = {}
        for site_id, state, count, reprints, flagged_count in session.execute(
            select(
                counted.c.site_id,
                counted.c.state,
                func.count(),
                func.sum(counted.c.reprints),
                func.sum(counted.c.flag),
            ).group_by(counted.c.site_id, counted.c.state)
        ):
            site = sites.get(site_id, DEPOT) if site_id is not None else DEPOT
            summary = summaries.setdefault(site, {"generated": 0, "reprints": 0, "discrepancies": 0})
            summary["generated"] += count
            summary[state] = summary.get(state, 0) + count
            summary["reprints"] += int(reprints or 0)
            summary["discrepancies"] += int(flagged_count or 0)
        # The sheets with a discrepancy read only when the counts found one (normally none): each
        # reading judges every sheet again.
        flagged = (
            [
                (row.sheet_number, _facts_state(row)[1])
                for row in session.execute(
                    select(counted).where(counted.c.flag == 1).order_by(counted.c.sheet_number)
                )
            ]
            if any(summary["discrepancies"] for summary in summaries.values())
            else []
        )
        facts = _sheet_facts(session, trial, scope)
        listed = select(facts).order_by(facts.c.sheet_number)
        if window is not None:
            listed = listed.offset(window.start).limit(window.size)
        sheet_rows = [_sheet_row(row, sites) for row in session.execute(listed)]
        missing = kits_without_sheet(session, trial) if scope.all_sites else 0
    return CodeBreakReconciliation(
        sites=tuple(
            SiteSummary(
                site=site,
                counts={state: values.get(state, 0) for state in STATES},
                generated=values["generated"],
                reprints=values["reprints"],
                discrepancies=values["discrepancies"],
            )
            for site, values in sorted(summaries.items(), key=lambda item: (item[0] == DEPOT, item[0]))
        ),
        sheets=tuple(sheet_rows),
        kits_without_sheet=missing,
        discrepancies=tuple(discrepancy for _, discrepancy in flagged),
        flagged=tuple(flagged),
        total_sheets=sum(values["generated"] for values in summaries.values()),
        window=window,
    )


def _sheet_row(row: Any, sites: dict[int, str]) -> SheetRow:
    """A listed row of `_sheet_facts`, in words (read by position: 19,000 rows for a CSV); the
    state as the database judged it, the discrepancy's words only for a flagged sheet."""
    (
        _id,
        sheet_number,
        document_id,
        generated_at,
        kit_number,
        site_id,
        kit_status,
        replaces,
        replaced_by,
        last_check,
        last_check_at,
        last_check_by,
        registered,
        _ever_opened,
        copies,
        _reprints,
        state,
        flag,
    ) = row
    return SheetRow(
        sheet_number=sheet_number,
        kit_number=kitlib.format_kit_number(kit_number),
        site=sites.get(site_id, DEPOT) if site_id is not None else DEPOT,
        kit_status=kit_status,
        document_id=document_id,
        generated_at=generated_at,
        replaces=replaces or "",
        replaced_by=replaced_by or "",
        copies=int(copies),
        last_check=last_check or "",
        last_check_at=last_check_at,
        last_check_by=last_check_by or "",
        registered_opening=bool(registered),
        state=state,
        discrepancy=_facts_state(row)[1] if flag else "",
    )


def _facts_state(row: Any) -> tuple[str, str]:
    """`_state` of a row of `_sheet_facts`."""
    return _state(
        registered=bool(row.registered),
        ever_opened=bool(row.ever_opened),
        replaced=row.replaced_by is not None,
        last=row.last_check,
    )


CSV_COLUMNS = (
    "sheet",
    "kit",
    "site",
    "kit_status",
    "document",
    "generated_at",
    "replaces",
    "replaced_by",
    "copies",
    "last_check",
    "last_check_at",
    "last_check_by",
    "registered_opening",
    "state",
    "discrepancy",
)


def reconciliation_csv(report: CodeBreakReconciliation) -> str:
    """One row per sheet, then one SUMMARY row per site and the total (formula cells neutralised)."""
    rows: list[Sequence[object]] = [CSV_COLUMNS]

    def when(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else ""

    for row in report.sheets:
        cells = [
            row.sheet_number,
            row.kit_number,
            row.site,
            row.kit_status,
            row.document_id,
            when(row.generated_at),
            row.replaces,
            row.replaced_by,
            str(row.copies),
            row.last_check,
            when(row.last_check_at),
            row.last_check_by,
            "yes" if row.registered_opening else "no",
            row.state,
            row.discrepancy,
        ]
        rows.append(cells)
    rows.append([])
    rows.append(["SUMMARY", "site", "generated", *STATES, "reprints", "discrepancies"])
    for summary in (*report.sites, report.total):
        rows.append(
            [
                "SUMMARY",
                summary.site,
                summary.generated,
                *(summary.counts[state] for state in STATES),
                summary.reprints,
                summary.discrepancies,
            ]
        )
    if report.kits_without_sheet:
        rows.append(["KITS WITHOUT SHEET", report.kits_without_sheet])
    return csv_text(rows)
