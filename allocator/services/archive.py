"""The closing archive of a trial (DIB-05, AUD-08): the complete trial in open formats, with a
signed manifest, checkable in 25 years without this software's database or any secret key.

`build` (the trial manager's, after the database lock) writes a folder:

* `README.txt` — what each file is and how to check the archive by hand;
* `definitions/` — every version of the trial definition as loaded (TOML) and `versions.csv`;
* `tables/` — one CSV per table of the trial (lists' parameters and digests, strata, kits and
  their histories, screening log, subjects, corrections, withdrawals, dispensing, administrations,
  unblindings, unblinding drills apart from them, signatures, notifications, printed documents,
  reviews...). Binary columns (sealed
  arms and seeds: ciphertexts no one could open without the instance's key) are left out;
* `lists/` — after the final unblinding only: every slot with its arm, and each list's seed
  (audited reads, BLD-08), so that the lists can be regenerated and checked;
* `reports/` — every blinded report as CSV and PDF;
* `exports/` — the CDISC ODM, FHIR, REDCap and CSV exports with their manifests;
* `audit/` — the trial's whole audit chain (`events.jsonl`), its signed checkpoints
  (`checkpoints.jsonl`), its signed head (`head.json`) and the public keys that verify them
  (`public_keys.json`);
* `archive.manifest.json` — every other file's size and SHA-256, signed with the audit key.

Before the final unblinding the archive is blinded like every other output: no arm, and nothing
about pharmacovigilance unblindings (UNB-08). `verify` needs the folder alone: every file's hash,
the manifest's signature, and the audit chain recomputed from end to end with the public keys.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import LargeBinary, Select, select
from sqlalchemy.orm import Session

from allocator import audit, crypto, manifest
from allocator.audit import Action, Actor
from allocator.models import (
    AccidentalUnblinding,
    Administration,
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    AuditReview,
    Batch,
    CodeBreakCheck,
    CodeBreakSheet,
    Dispensation,
    DrillSubject,
    IntegrityCheck,
    InterimPackage,
    Kit,
    KitEvent,
    KitList,
    ListVersion,
    MinimizationDecision,
    Notification,
    PrintedDocument,
    RandomizationList,
    ScreeningEntry,
    Shipment,
    Signature,
    Site,
    Stratum,
    Subject,
    SubjectCorrection,
    SubjectWithdrawal,
    Trial,
    TrialDefinitionVersion,
    TrialStateChange,
    TrialStatus,
    Unblinding,
    UnblindingDrill,
)
from allocator.models.unblinding import UnblindingKind
from allocator.permissions import Scope
from allocator.printing import safe_csv
from allocator.services import arm_access, exports
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, DomainError
from allocator.services.lookups import get_trial, trial_definition
from allocator.services.reports import catalogue, export, filters
from allocator.version import __version__

MANIFEST = "archive.manifest.json"
MANIFEST_TAG = "allocator-archive/1"
_ALL_SITES = Scope(all_sites=True, site_ids=frozenset())


class TrialNotLocked(Conflict):
    slug = "trial-not-locked"
    title = "The trial database is not locked"


@dataclass(frozen=True, slots=True)
class Archived:
    folder: Path
    files: int
    rows: Mapping[str, int]
    unblinded: bool
    manifest: Path


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def _csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    # The archive keeps the data as stored: no formula guard, which would change the values.
    table = [list(header), *([_cell(v) for v in row] for row in rows)]
    return safe_csv.csv_text(table, neutralise=False).encode("utf-8")


def _table(
    session: Session, model: Any, query: Select[Any], skip: frozenset[str] = frozenset()
) -> tuple[bytes, int]:
    """Every row `query` selects, every column but binary ones and `skip`, as CSV."""
    columns = [
        c for c in model.__table__.columns if not isinstance(c.type, LargeBinary) and c.key not in skip
    ]
    rows = [[getattr(obj, c.key) for c in columns] for obj in session.execute(query).scalars()]
    return _csv([c.key for c in columns], rows), len(rows)


def _tables(session: Session, trial: Trial, unblinded: bool) -> dict[str, tuple[bytes, int]]:
    tid = trial.id
    lists = select(RandomizationList.id).where(RandomizationList.trial_id == tid)
    subjects = select(Subject.id).where(Subject.trial_id == tid)
    kits = select(Kit.id).where(Kit.trial_id == tid)
    sheets = select(CodeBreakSheet.id).where(CodeBreakSheet.trial_id == tid)
    unblindings = select(Unblinding).where(Unblinding.trial_id == tid).order_by(Unblinding.id)
    notifications = select(Notification).where(Notification.trial_id == tid).order_by(Notification.id)
    if not unblinded:
        # UNB-08: a pharmacovigilance unblinding is seen by pharmacovigilance only until the end.
        unblindings = unblindings.where(Unblinding.kind != UnblindingKind.PHARMACOVIGILANCE.value)
        notifications = notifications.where(Notification.audience != "pharmacovigilance")
    plan: list[tuple[str, Any, Select[Any], frozenset[str]]] = [
        ("trial", Trial, select(Trial).where(Trial.id == tid), frozenset()),
        ("sites", Site, select(Site).where(Site.trial_id == tid).order_by(Site.id), frozenset()),
        (
            "randomization_lists",
            RandomizationList,
            select(RandomizationList).where(RandomizationList.trial_id == tid).order_by(RandomizationList.id),
            frozenset(),
        ),
        (
            "list_versions",
            ListVersion,
            select(ListVersion).where(ListVersion.list_id.in_(lists)).order_by(ListVersion.id),
            frozenset(),
        ),
        (
            "strata",
            Stratum,
            select(Stratum).where(Stratum.list_id.in_(lists)).order_by(Stratum.id),
            frozenset(),
        ),
        (
            "integrity_checks",
            IntegrityCheck,
            select(IntegrityCheck).where(IntegrityCheck.list_id.in_(lists)).order_by(IntegrityCheck.id),
            frozenset(),
        ),
        (
            "minimization_decisions",
            MinimizationDecision,
            select(MinimizationDecision)
            .where(MinimizationDecision.list_id.in_(lists))
            .order_by(MinimizationDecision.id),
            frozenset(),
        ),
        (
            "kit_lists",
            KitList,
            select(KitList).where(KitList.trial_id == tid).order_by(KitList.id),
            frozenset(),
        ),
        ("batches", Batch, select(Batch).where(Batch.trial_id == tid).order_by(Batch.id), frozenset()),
        (
            "shipments",
            Shipment,
            select(Shipment).where(Shipment.trial_id == tid).order_by(Shipment.id),
            frozenset(),
        ),
        ("kits", Kit, select(Kit).where(Kit.trial_id == tid).order_by(Kit.id), frozenset()),
        (
            "kit_events",
            KitEvent,
            select(KitEvent).where(KitEvent.kit_id.in_(kits)).order_by(KitEvent.id),
            frozenset(),
        ),
        (
            "screening_log",
            ScreeningEntry,
            select(ScreeningEntry).where(ScreeningEntry.trial_id == tid).order_by(ScreeningEntry.id),
            frozenset(),
        ),
        (
            "subjects",
            Subject,
            select(Subject).where(Subject.trial_id == tid).order_by(Subject.id),
            frozenset(),
        ),
        (
            "subject_corrections",
            SubjectCorrection,
            select(SubjectCorrection)
            .where(SubjectCorrection.subject_id.in_(subjects))
            .order_by(SubjectCorrection.id),
            frozenset(),
        ),
        (
            "subject_withdrawals",
            SubjectWithdrawal,
            select(SubjectWithdrawal)
            .where(SubjectWithdrawal.subject_id.in_(subjects))
            .order_by(SubjectWithdrawal.id),
            frozenset(),
        ),
        (
            "dispensations",
            Dispensation,
            select(Dispensation).where(Dispensation.subject_id.in_(subjects)).order_by(Dispensation.id),
            frozenset(),
        ),
        (
            "administrations",
            Administration,
            select(Administration).where(Administration.subject_id.in_(subjects)).order_by(Administration.id),
            frozenset(),
        ),
        (
            "printed_documents",
            PrintedDocument,
            select(PrintedDocument).where(PrintedDocument.trial_id == tid).order_by(PrintedDocument.id),
            frozenset(),
        ),
        ("unblindings", Unblinding, unblindings, frozenset()),
        (
            "accidental_unblindings",
            AccidentalUnblinding,
            select(AccidentalUnblinding)
            .where(AccidentalUnblinding.trial_id == tid)
            .order_by(AccidentalUnblinding.id),
            frozenset(),
        ),
        (
            "trial_state_changes",
            TrialStateChange,
            select(TrialStateChange).where(TrialStateChange.trial_id == tid).order_by(TrialStateChange.id),
            frozenset(),
        ),
        (
            "code_break_sheets",
            CodeBreakSheet,
            select(CodeBreakSheet).where(CodeBreakSheet.trial_id == tid).order_by(CodeBreakSheet.id),
            frozenset(),
        ),
        (
            "code_break_checks",
            CodeBreakCheck,
            select(CodeBreakCheck).where(CodeBreakCheck.sheet_id.in_(sheets)).order_by(CodeBreakCheck.id),
            frozenset(),
        ),
        # UNB-11: drills, apart from the subjects and unblindings (the drill value is sealed: left out).
        (
            "drill_subjects",
            DrillSubject,
            select(DrillSubject).where(DrillSubject.trial_id == tid).order_by(DrillSubject.id),
            frozenset(),
        ),
        (
            "unblinding_drills",
            UnblindingDrill,
            select(UnblindingDrill).where(UnblindingDrill.trial_id == tid).order_by(UnblindingDrill.id),
            frozenset(),
        ),
        (
            "interim_packages",
            InterimPackage,
            select(InterimPackage).where(InterimPackage.trial_id == tid).order_by(InterimPackage.id),
            frozenset(),
        ),
        (
            "signatures",
            Signature,
            select(Signature).where(Signature.trial_id == tid).order_by(Signature.id),
            frozenset(),
        ),
        ("notifications", Notification, notifications, frozenset({"email_to"})),
        (
            "audit_reviews",
            AuditReview,
            select(AuditReview).where(AuditReview.trial_id == tid).order_by(AuditReview.id),
            frozenset(),
        ),
    ]
    return {f"tables/{name}.csv": _table(session, model, query, skip) for name, model, query, skip in plan}


def _definitions(session: Session, trial: Trial) -> dict[str, bytes]:
    versions = list(
        session.execute(
            select(TrialDefinitionVersion)
            .where(TrialDefinitionVersion.trial_id == trial.id)
            .order_by(TrialDefinitionVersion.version)
        ).scalars()
    )
    out = {f"definitions/v{v.version}.toml": v.source_text.encode("utf-8") for v in versions}
    out["definitions/versions.csv"] = _csv(
        # "design_fingerprint": the SHA-256 over arms, ratio, strata and list parameters (the stored
        # allocation_fingerprint), named so that no column header of a blinded file names an arm
        ["version", "sha256", "design_fingerprint", "source_name", "loaded_at", "loaded_by"],
        [
            [v.version, v.sha256, v.allocation_fingerprint, v.source_name, v.loaded_at, v.loaded_by_name]
            for v in versions
        ],
    )
    return out


def _b64(value: bytes | None) -> str | None:
    return base64.b64encode(bytes(value)).decode("ascii") if value is not None else None


def _audit_files(session: Session, ring: crypto.KeyRing, chain: str) -> tuple[dict[str, bytes], int]:
    lines = []
    for e in session.execute(
        select(AuditEvent).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
    ).scalars():
        record = dict(zip(AUDIT_FIELDS, audit.canonical_fields(e)[1:], strict=True))
        record["hash"] = e.hash
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    checkpoints = [
        json.dumps(
            {
                "from_seq": c.from_seq,
                "seq": c.seq,
                "hash": c.hash,
                "entry_hashes": _b64(c.entry_hashes),
                "at": audit.format_time(c.at),
                "key_id": c.key_id,
                "signature": _b64(c.signature),
            },
            separators=(",", ":"),
        )
        for c in session.execute(
            select(AuditCheckpoint).where(AuditCheckpoint.chain == chain).order_by(AuditCheckpoint.seq)
        ).scalars()
    ]
    head = session.get(AuditChainHead, chain)
    head_json = {
        "chain": chain,
        "seq": head.seq if head else 0,
        "hash": head.hash if head else audit.GENESIS,
        "key_id": head.head_key_id if head else None,
        "signature": _b64(head.head_signature) if head else None,
    }
    files = {
        "audit/events.jsonl": ("\n".join(lines) + "\n").encode("utf-8"),
        "audit/checkpoints.jsonl": ("\n".join(checkpoints) + "\n" if checkpoints else "").encode("utf-8"),
        "audit/head.json": json.dumps(head_json, indent=2).encode("utf-8"),
        "audit/public_keys.json": json.dumps(crypto.audit_public_keys_pem(ring), indent=2).encode("utf-8"),
    }
    return files, len(lines)


# The canonical fields of an audit entry after the version tag (audit.canonical_fields), by name.
AUDIT_FIELDS = (
    "chain",
    "seq",
    "at",
    "actor_user_id",
    "actor_username",
    "actor_name",
    "actor_role",
    "actor_site",
    "action",
    "object_type",
    "object_id",
    "site_code",
    "old_values",
    "new_values",
    "sealed_values_base64",
    "reason",
    "request_id",
    "software_version",
    "prev_hash",
)


def _lists(ctx: ServiceContext, actor: Actor, trial_code: str) -> dict[str, bytes]:
    """After the final unblinding: every list opened, and its seed (audited reads)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        rows = [
            (r.id, r.label, r.seed_sealed)
            for r in session.execute(
                select(RandomizationList)
                .where(RandomizationList.trial_id == trial.id)
                .order_by(RandomizationList.id)
            ).scalars()
        ]
    out: dict[str, bytes] = {}
    for list_id, label, sealed_seed in rows:
        safe = label.replace("/", "_")
        opened = arm_access.open_list_slots(ctx, actor, trial_code, list_id, label, "closing archive")
        out[f"lists/{safe}-slots.csv"] = _csv(
            ["stratum", "position", "randomization_number", "arm", "block", "block_size", "list_version"],
            [
                [s.stratum, s.position, s.randomization_number, s.arm, s.block, s.block_size, s.list_version]
                for s in opened.slots
            ],
        )
        seed = arm_access.open_list_seed(ctx, actor, trial_code, label, sealed_seed, "closing archive")
        out[f"lists/{safe}-seed.txt"] = (seed.hex() + "\n").encode("ascii")
    return out


def _reports(ctx: ServiceContext, actor: Actor, trial_code: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    everything = filters.ReportFilter.parse({})
    # The study's own catalogue: an observational study's reports are not the randomized trial's.
    for name in catalogue.reports_for(trial_definition(ctx, trial_code)):
        for fmt in ("csv", "pdf"):
            try:
                made = export.export(ctx, actor, trial_code, name, everything, _ALL_SITES, fmt)
            except DomainError:  # a report that does not apply to this trial (e.g. no minimization)
                continue
            try:
                out[f"reports/{name}.{fmt}"] = made.body
            finally:
                made.close()
    return out


def _exports(ctx: ServiceContext, actor: Actor, trial_code: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for fmt in exports.FORMATS:
        name = f"{trial_code}-{fmt}{exports.EXTENSIONS.get(fmt, '')}"
        made = exports.export_trial(ctx, actor, trial_code, fmt, name=name)
        for path, content in made.files.items():
            out[f"exports/{path}"] = content
        out[f"exports/{name}{manifest.SUFFIX}"] = manifest.dumps(made.manifest).encode("utf-8")
    return out


def build(ctx: ServiceContext, actor: Actor, trial_code: str, folder: Path) -> Archived:
    """Write the closing archive of `trial_code` into the new, empty `folder`.

    Preconditions: the trial is LOCKED or UNBLINDED (TrialNotLocked, 409, otherwise); `folder` does
    not exist or is empty (Conflict). Effects: the archive's own reads are audited (reports,
    exports, and after the final unblinding the lists and seeds), then one `trial.archived` entry,
    then the audit chain is written, so the archive holds the record of its own making."""
    if folder.exists() and any(folder.iterdir()):
        raise Conflict(f"{folder} is not empty: an archive is written into a new folder")
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        status = trial.status
    if status not in (TrialStatus.LOCKED.value, TrialStatus.UNBLINDED.value):
        raise TrialNotLocked(f"{trial_code} is {status}: the closing archive is made after the database lock")
    unblinded = status == TrialStatus.UNBLINDED.value
    files: dict[str, bytes] = {}
    files.update(_reports(ctx, actor, trial_code))
    files.update(_exports(ctx, actor, trial_code))
    if unblinded:
        files.update(_lists(ctx, actor, trial_code))
    with ctx.db.unit_of_work() as session:
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial_code,
            action=Action.TRIAL_ARCHIVED,
            object_type="trial",
            object_id=trial_code,
            new={"folder": folder.name, "unblinded": unblinded},
            at=ctx.now(),
        )
    rows: dict[str, int] = {}
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        files.update(_definitions(session, trial))
        for path, (content, count) in _tables(session, trial, unblinded).items():
            files[path] = content
            rows[path] = count
        audit_files, entries = _audit_files(session, ctx.ring, trial_code)
        files.update(audit_files)
        rows["audit/events.jsonl"] = entries
    files["README.txt"] = readme(trial_code, unblinded).encode("utf-8")
    body = {
        "manifest": MANIFEST_TAG,
        "trial": trial_code,
        "trial_status": status,
        "unblinded": unblinded,
        "rows": rows,
        "files": [manifest.file_entry(path, content) for path, content in sorted(files.items())],
        "generated_by": f"{actor.name} ({actor.username})",
        "generated_at": audit.format_time(ctx.now()),
        "software_version": __version__,
    }
    signed = manifest.sign(ctx.ring, body)
    folder.mkdir(parents=True, exist_ok=True)
    for path, content in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    written = folder / MANIFEST
    written.write_text(manifest.dumps(signed), "utf-8")
    return Archived(folder, len(files), rows, unblinded, written)


def readme(trial_code: str, unblinded: bool) -> str:
    state = (
        "After the final unblinding: lists/ holds every slot with its arm and each list's seed."
        if unblinded
        else "Blinded: no arm anywhere (the trial was locked, not unblinded)."
    )
    return f"""Closing archive of trial {trial_code}, written by allocator {__version__}.
{state}

Every file is UTF-8 text (CSV with a header row, JSON, JSON lines, TOML) except reports/*.pdf.

archive.manifest.json  every other file's path, size and SHA-256, signed with Ed25519
  (the "signature" member: key id, public key in PEM, base64 signature). The signed bytes are the
  text "allocator/manifest/v1|" followed by the manifest without its "signature" member, as JSON
  with sorted keys, no spaces, UTF-8 (non-ASCII characters written as they are).
audit/events.jsonl     the trial's audit chain, one entry per line, in sequence order. An entry's
  hash is the SHA-256 (hex) of the JSON array ["{audit.CANONICAL_TAG}", chain, seq, at, actor_user_id,
  actor_username, actor_name, actor_role, actor_site, action, object_type, object_id, site_code,
  old_values, new_values, sealed_values_base64, reason, request_id, software_version, prev_hash],
  UTF-8, no spaces, non-ASCII as is; prev_hash is the previous entry's hash (64 zeros for entry 1).
audit/checkpoints.jsonl  signed checkpoints: the signature (Ed25519, base64, by key_id) is over
  "allocator/checkpoint/v1|" + "chain|from_seq|seq|hash|sha256hex(entry_hashes)", where
  entry_hashes (base64) is the concatenated 32-byte hashes of entries from_seq+1..seq.
audit/head.json        the last entry's sequence number and hash, signed over
  "allocator/head/v1|" + "chain|seq|hash".
audit/public_keys.json the public audit keys (PEM) by key id. Compare the key ids with the ones
  recorded in the trial master file when the instance was in service.
definitions/           every version of the trial definition, as loaded.
tables/                one CSV per table; times are ISO 8601 (UTC unless a time zone is shown).
reports/               the blinded reports, CSV and PDF, as the service produced them.
exports/               CDISC ODM 1.3.2, HL7 FHIR R4, REDCap and CSV exports, each with its manifest.

To check it with the software: allocator archive verify FOLDER (no database, no secret key).
"""


# --- offline verification ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchiveCheck:
    folder: Path
    ok: bool
    files: int
    entries: int
    key_ids: tuple[str, ...]
    problems: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        if self.ok:
            return (
                f"{self.folder}: {self.files} files intact, manifest signed, audit chain of {self.entries} "
                f"entries intact from end to end (keys {', '.join(self.key_ids)})"
            )
        return (
            f"{self.folder}: NOT VALID ({len(self.problems)} problem{'s' if len(self.problems) > 1 else ''}):"
        )


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def verify_chain_files(folder: Path) -> tuple[int, list[str]]:
    """The audit chain of an archive, recomputed from its files with the archived public keys."""
    base = folder / "audit"
    problems: list[str] = []
    try:
        keys: dict[str, str] = json.loads((base / "public_keys.json").read_text("utf-8"))
        entries = _read_json_lines(base / "events.jsonl")
        checkpoints = _read_json_lines(base / "checkpoints.jsonl")
        head = json.loads((base / "head.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        return 0, [f"audit/: not readable ({exc})"]
    hashes: list[bytes] = []
    previous = audit.GENESIS
    for index, entry in enumerate(entries, start=1):
        where = f"audit/events.jsonl entry {entry.get('seq', index)}"
        fields = [audit.CANONICAL_TAG, *(entry.get(name) for name in AUDIT_FIELDS)]
        digest = audit.entry_hash(fields)
        if entry.get("seq") != index:
            problems.append(f"{where}: expected entry {index} (an entry is missing or out of order)")
            break
        if digest != entry.get("hash"):
            problems.append(f"{where}: its content does not match its hash (altered)")
            break
        if entry.get("prev_hash") != previous:
            problems.append(f"{where}: does not link to entry {index - 1}")
            break
        hashes.append(bytes.fromhex(digest))
        previous = digest
    if problems:
        return len(entries), problems
    end = 0
    for checkpoint in checkpoints:
        covered = base64.b64decode(checkpoint["entry_hashes"])
        message = audit.checkpoint_message(
            head["chain"], checkpoint["from_seq"], checkpoint["seq"], checkpoint["hash"], covered
        )
        public = keys.get(checkpoint["key_id"])
        signed = public is not None and crypto.verify_checkpoint_public(
            public, message, base64.b64decode(checkpoint["signature"])
        )
        if not signed or checkpoint["from_seq"] != end:
            problems.append(
                f"audit/checkpoints.jsonl checkpoint at entry {checkpoint['seq']}: invalid signature or range"
            )
            break
        if covered != b"".join(hashes[checkpoint["from_seq"] : checkpoint["seq"]]):
            problems.append(
                f"audit/checkpoints.jsonl checkpoint at entry {checkpoint['seq']}: the entries differ from the signed ones"
            )
            break
        end = checkpoint["seq"]
    last_seq, last_hash = len(entries), previous
    if not problems:
        if head.get("seq") != last_seq or head.get("hash") != last_hash:
            problems.append(
                f"audit/head.json: the head is entry {head.get('seq')}, the chain ends at entry {last_seq}"
            )
        elif last_seq:
            public = keys.get(str(head.get("key_id")))
            signature = base64.b64decode(head.get("signature") or "")
            message = audit.head_message(head["chain"], last_seq, last_hash)
            if public is None or not crypto.verify_head_public(public, message, signature):
                problems.append("audit/head.json: the head signature is not valid")
    return len(entries), problems


def verify(folder: Path) -> ArchiveCheck:
    """Check an archive folder with nothing but its files (DIB-05): every file's hash against the
    signed manifest, the manifest's key among the archived audit keys, no file left unlisted, and
    the audit chain from end to end. Each problem names the file."""
    checked = manifest.verify(folder / MANIFEST)
    problems = list(checked.problems)
    try:
        keys: dict[str, str] = json.loads((folder / "audit" / "public_keys.json").read_text("utf-8"))
    except (OSError, ValueError):
        keys = {}
    if checked.key_id is not None and checked.key_id not in keys:
        problems.append(
            f"{MANIFEST}: signed by key {checked.key_id!r}, which is not among audit/public_keys.json"
        )
    listed = {str(f.get("path")) for f in checked.body.get("files", []) if isinstance(f, dict)}
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    problems += [f"{path}: not listed in the manifest (added)" for path in sorted(present - listed)]
    entries, chain_problems = verify_chain_files(folder)
    problems += chain_problems
    return ArchiveCheck(folder, not problems, checked.files, entries, tuple(sorted(keys)), tuple(problems))
