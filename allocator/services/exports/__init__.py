"""Exports of a trial's data in standard formats (DIB-04, DIB-07): CDISC ODM 1.3.2, HL7 FHIR R4,
REDCap data import and open CSV tables, each with a signed manifest.

Blinded by construction: the dataset of a blinded export is built from the subjects as every role
of the trial sees them, and no arm is ever read for it (BLD-01). `unblinded=True` adds the arm, only
once the trial is UNBLINDED (409 before), only for the unblinded statistician, with an electronic
signature; every arm read is audited (BLD-08) and the export is audited with each file's SHA-256.
One module per format; this module gathers the data and owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from allocator import manifest
from allocator.audit import Action, Actor
from allocator.models import Site, Subject, User
from allocator.permissions import Role, Scope
from allocator.services import arm_access, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, Forbidden, NotFound, ValidationFailed
from allocator.services.exports import dataset, fhir, odm, redcap, tables
from allocator.services.lookups import current_definition, get_trial, require_unblinded
from allocator.services.subjects import views as subjects_views
from allocator.version import __version__

FORMATS = ("odm", "fhir", "redcap", "csv")
UNBLINDED_EXPORT_MEANING = "release of an unblinded export"
MANIFEST_TAG = "allocator-export/1"
_ALL_SITES = Scope(all_sites=True, site_ids=frozenset())
# File name of each single-file format, and its media type (web downloads).
EXTENSIONS = {"odm": ".xml", "fhir": ".json", "redcap": ".csv"}
MEDIA_TYPES = {
    "odm": "application/xml",
    "fhir": "application/fhir+json",
    "redcap": "text/csv",
    "csv": "application/zip",
}


@dataclass(frozen=True, slots=True)
class Export:
    """What an export produced: its files (relative path -> bytes), the signed manifest and the
    number of rows per table."""

    format: str
    trial: str
    blinded: bool
    files: Mapping[str, bytes]
    rows: Mapping[str, int]
    manifest: Mapping[str, Any]


def stamp(moment: datetime) -> str:
    """A UTC time stamp for file names (20260302T093000Z)."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def manifest_text(signed: Mapping[str, Any]) -> str:
    """The manifest as written beside an export (the command line and the web write the same)."""
    return manifest.dumps(signed)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValidationFailed(
            f"unknown export format {fmt!r}",
            errors=[FieldProblem("format", f"must be one of {', '.join(FORMATS)}")],
        )


def _views(ctx: ServiceContext, trial_code: str) -> list[subjects_views.SubjectView]:
    return subjects_views.subjects(ctx, trial_code, _ALL_SITES)


def _dataset(
    ctx: ServiceContext, actor: Actor, trial_code: str, arms: Mapping[str, str] | None
) -> dataset.Dataset:
    views = _views(ctx, trial_code)
    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        definition = current_definition(session, trial)
        sites = tuple(
            dataset.Site(s.code, s.name, s.city)
            for s in session.execute(
                select(Site).where(Site.trial_id == trial.id).order_by(Site.code)
            ).scalars()
        )
        status, version = trial.status, trial.definition_version
    kit_types = {d.day: d.kit_type for d in definition.dispensing.schedule}
    exported = tuple(
        dataset.ExportSubject(
            subject_number=v.subject_number,
            screening_number=v.screening_number,
            randomization_number=v.randomization_number,
            site=v.site,
            randomized_at=v.randomized_at,
            strata=dict(v.strata_at_randomization),
            strata_corrected=dict(v.strata_corrected),
            in_error=v.in_error,
            blind_broken=v.blind_broken,
            withdrawal_kind=v.withdrawal.kind if v.withdrawal else None,
            withdrawal_date=v.withdrawal.effective_date if v.withdrawal else None,
            doses=tuple(
                dataset.Dose(
                    day=d.day,
                    label=d.label,
                    kit_type=kit_types.get(d.day, ""),
                    kit_number=d.kit_number,
                    status=d.status,
                    dispensed_at=d.dispensed_at,
                    administered_at=d.administered_at,
                    replacements=d.replacements,
                )
                for d in v.days
            ),
            arm=arms.get(v.subject_number) if arms is not None else None,
        )
        for v in sorted(views, key=lambda v: (v.randomized_at, v.subject_number))
    )
    return dataset.Dataset(
        trial_code=trial_code,
        trial_status=status,
        definition_version=version,
        definition=definition,
        sites=sites,
        subjects=exported,
        blinded=arms is None,
        generated_at=ctx.now(),
        generated_by=f"{actor.name} ({actor.username})",
        software_version=__version__,
    )


def render(data: dataset.Dataset, fmt: str, name: str) -> dict[str, bytes]:
    """The files of one format, by path relative to the manifest's folder. `name` is the file name
    of a single-file format, or the folder of the CSV tables."""
    _check_format(fmt)
    if fmt == "odm":
        return {name: odm.render(data)}
    if fmt == "fhir":
        return {name: fhir.render(data)}
    if fmt == "redcap":
        return {name: redcap.render(data)}
    return {f"{name}/{file}": content for file, content in tables.render(data).items()}


def _rows(data: dataset.Dataset) -> dict[str, int]:
    return {"subjects": len(data.subjects), "doses": sum(len(s.doses) for s in data.subjects)}


def export_trial(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    fmt: str,
    *,
    name: str,
    unblinded: bool = False,
    signature: signatures.SignatureRequest | None = None,
) -> Export:
    """Build one export of `trial_code` and its signed manifest; audit it (DIB-07).

    Preconditions: for `unblinded`, the trial is UNBLINDED (else NotUnblinded, 409), the actor is
    the unblinded statistician (else Forbidden) and `signature` is theirs (else SignatureRefused).
    Effects: one `trial.exported` audit entry with the format, blinding, row counts and each file's
    SHA-256; an unblinded export also records its signature and one `arm.read` for the subjects.
    Nothing is written to disk: the caller stores `files` and `manifest`."""
    _check_format(fmt)
    if not name or "/" in name or name.startswith("."):
        raise ValidationFailed(
            "a plain file name is needed", errors=[FieldProblem("out", "must be a file name")]
        )
    now = ctx.now()
    if not unblinded:
        data = _dataset(ctx, actor, trial_code, None)
        files = render(data, fmt, name)
        with ctx.db.unit_of_work() as session:
            trial = get_trial(session, trial_code)
            _audit(ctx, session, actor, trial.code, fmt, True, files, _rows(data), None)
        return _finish(ctx, data, fmt, files, None)
    if actor.role != Role.UNBLINDED_STATISTICIAN.value:  # BLD-08: nobody else reads the arms in bulk
        raise Forbidden("only the unblinded statistician may export the arms")
    if signature is None:
        raise ValidationFailed(
            "an unblinded export must be signed", errors=[FieldProblem("password", "is required")]
        )
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=UNBLINDED_EXPORT_MEANING,
            object_type="trial",
            object_id=trial_code,
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        require_unblinded(trial)
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=UNBLINDED_EXPORT_MEANING,
            object_type="trial",
            object_id=trial.code,
            content={"trial": trial.code, "format": fmt, "at": now.isoformat()},
            now=now,
        )
        # Every subject's arm in two statements and one audited read (issue 21).
        numbers = dict(
            session.execute(
                select(Subject.id, Subject.subject_number).where(Subject.trial_id == trial.id)
            ).all()
        )
        by_id = arm_access.subject_arms_in(
            session,
            ctx,
            actor,
            trial.code,
            trial.id,
            f"unblinded {fmt} export",
            subject_ids=numbers,
            selection="every subject of the trial",
        )
        arms = {number: by_id[subject_id] for subject_id, number in numbers.items()}
        data = _dataset(ctx, actor, trial_code, arms)
        files = render(data, fmt, name)
        _audit(ctx, session, actor, trial.code, fmt, False, files, _rows(data), signed.id)
        sig = {
            "id": signed.id,
            "signer": f"{signed.printed_name} ({signed.username})",
            "meaning": signed.meaning,
        }
    return _finish(ctx, data, fmt, files, sig)


def _audit(
    ctx: ServiceContext,
    session: Any,
    actor: Actor,
    chain: str,
    fmt: str,
    blinded: bool,
    files: Mapping[str, bytes],
    rows: Mapping[str, int],
    signature_id: int | None,
) -> None:
    new: dict[str, object] = {
        "format": fmt,
        "blinded": blinded,
        "rows": dict(rows),
        "sha256": {path: manifest.file_entry(path, content)["sha256"] for path, content in files.items()},
    }
    if signature_id is not None:
        new["signature"] = signature_id
    ctx.audit.record(
        session,
        actor=actor,
        chain=chain,
        action=Action.TRIAL_EXPORTED,
        object_type="trial",
        object_id=chain,
        new=new,
        at=ctx.now(),
    )


def _finish(
    ctx: ServiceContext,
    data: dataset.Dataset,
    fmt: str,
    files: Mapping[str, bytes],
    signature: Mapping[str, object] | None,
) -> Export:
    rows = _rows(data)
    body: dict[str, Any] = {
        "manifest": MANIFEST_TAG,
        "format": fmt,
        "trial": data.trial_code,
        "trial_status": data.trial_status,
        "definition_version": data.definition_version,
        "blinded": data.blinded,
        "rows": rows,
        "files": [manifest.file_entry(path, content) for path, content in sorted(files.items())],
        "generated_by": data.generated_by,
        "generated_at": dataset.utc_text(data.generated_at),
        "software_version": data.software_version,
    }
    if signature is not None:
        body["unblinding_signature"] = dict(signature)
    signed = manifest.sign(ctx.ring, body)
    return Export(fmt, data.trial_code, data.blinded, dict(files), rows, signed)


def unblinded_signer(ctx: ServiceContext, username: str, trial_code: str, request_id: str) -> Actor:
    """The actor of an unblinded export run from the command line: `username` must hold the
    unblinded statistician role for the trial now (BLD-11: roles are read at the time of the act).
    Raises NotFound (unknown user or trial) or Forbidden."""
    from allocator.services.accounts.users import active_grants  # noqa: PLC0415 - only the CLI path needs it

    with ctx.db.reading() as session:
        trial = get_trial(session, trial_code)
        user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
        if user is None or not user.is_active:
            raise NotFound(f"no active user {username!r}")
        grants = active_grants(session, user.id, ctx.now())
        if not any(g.role == Role.UNBLINDED_STATISTICIAN and g.trial_id == trial.id for g in grants):
            raise Forbidden(f"{username} is not the unblinded statistician of {trial.code}")
        return Actor(
            user_id=user.id,
            username=user.username,
            name=user.full_name,
            role=Role.UNBLINDED_STATISTICIAN.value,
            request_id=request_id,
        )
