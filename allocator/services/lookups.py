"""Look-ups every use case needs: the trial, its definition in force, its state, the list mode of
this instance, a subject within the caller's reach and its live dispensations.

Feature modules depend on this module; it depends on none of them (architecture.md)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVarTuple

from sqlalchemy import Row, Select, bindparam, select
from sqlalchemy.orm import Session

from allocator.db import Direct
from allocator.models import (
    Dispensation,
    ListMode,
    Site,
    Subject,
    Trial,
    TrialDefinitionVersion,
    TrialStatus,
)
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from allocator.settings import Environment
from allocator.trialdef import TrialDefinition, parse_definition


def get_trial(session: Session, code: str) -> Trial:
    trial = session.execute(select(Trial).where(Trial.code == code)).scalar_one_or_none()
    if trial is None:
        raise NotFound(f"no trial {code!r}")
    return trial


def current_definition(session: Session, trial: Trial) -> TrialDefinition:
    """The definition in force for `trial` (its latest version), validated from its stored text."""
    version, sha256 = session.execute(
        select(TrialDefinitionVersion.version, TrialDefinitionVersion.sha256)
        .where(TrialDefinitionVersion.trial_id == trial.id)
        .order_by(TrialDefinitionVersion.version.desc())
        .limit(1)
    ).one()
    return _definition(session, trial, version, sha256)


_TRIAL_AND_LATEST_VERSION = (
    select(Trial, TrialDefinitionVersion.version, TrialDefinitionVersion.sha256)
    .join(TrialDefinitionVersion, TrialDefinitionVersion.trial_id == Trial.id)
    .where(Trial.code == bindparam("code"))
    .order_by(TrialDefinitionVersion.version.desc())
    .limit(1)
)


class TrialRef(Protocol):
    """What the randomization path needs of a trial: an ORM `Trial` is one, and so is `TrialRow`."""

    @property
    def id(self) -> int: ...

    @property
    def code(self) -> str: ...

    @property
    def status(self) -> str: ...


@dataclass(frozen=True, slots=True)
class TrialRow:
    """A trial's id, code and status read with Core (no ORM object to build: issue 16)."""

    id: int
    code: str
    status: str


_TRIAL_ROW_AND_LATEST_VERSION = Direct(
    select(Trial.id, Trial.code, Trial.status, TrialDefinitionVersion.version, TrialDefinitionVersion.sha256)
    .join(TrialDefinitionVersion, TrialDefinitionVersion.trial_id == Trial.id)
    .where(Trial.code == bindparam("code"))
    .order_by(TrialDefinitionVersion.version.desc())
    .limit(1)
)


def trial_row_and_definition(session: Session, code: str) -> tuple[TrialRow, TrialDefinition]:
    """`trial_and_definition` for the randomization path: the trial as a `TrialRow`, in one Core
    statement. Raises NotFound."""
    row = _TRIAL_ROW_AND_LATEST_VERSION.one_or_none(session.connection(), {"code": code})
    if row is None:
        raise NotFound(f"no trial {code!r}")
    trial = TrialRow(row.id, row.code, row.status)
    return trial, _definition(session, trial, row.version, row.sha256)


def definition_of(session: Session, trial: TrialRef, version: int, sha256: str) -> TrialDefinition:
    """The trial's definition at `version`, whose text has that SHA-256: parsed once per process
    (`_PARSED`), read and parsed again otherwise."""
    return _definition(session, trial, version, sha256)


def trial_and_definition(session: Session, code: str) -> tuple[Trial, TrialDefinition]:
    """`get_trial` and `current_definition` in one statement (the randomization path). Raises
    NotFound."""
    row = session.execute(_TRIAL_AND_LATEST_VERSION, {"code": code}).one_or_none()
    if row is None:
        raise NotFound(f"no trial {code!r}")
    trial, version, sha256 = row
    return trial, _definition(session, trial, version, sha256)


# Parsed definitions by (trial code, version, SHA-256 of the text). A stored version never changes
# (a change is a new version), so this is a memo of a pure function, not application state: every
# request still reads which version is in force, and a text that does not match its recorded digest
# is parsed on every use and never remembered. Parsing and validating the TOML costs ~4 ms.
_PARSED: dict[tuple[str, int, str], TrialDefinition] = {}
_PARSED_MAX = 64


def parsed_definition(code: str, version: int, sha256: str) -> TrialDefinition | None:
    """The definition of `code` at `version` with that digest, if already parsed (no read)."""
    return _PARSED.get((code, version, sha256))


def _definition(session: Session, trial: TrialRef, version: int, sha256: str) -> TrialDefinition:
    key = (trial.code, version, sha256)
    parsed = _PARSED.get(key)
    if parsed is not None:
        return parsed
    text = session.execute(
        select(TrialDefinitionVersion.source_text).where(
            TrialDefinitionVersion.trial_id == trial.id, TrialDefinitionVersion.version == version
        )
    ).scalar_one()
    parsed = parse_definition(text, source=f"{trial.code} v{version}")
    if hashlib.sha256(text.encode("utf-8")).hexdigest() == sha256:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


def trial_definition(ctx: ServiceContext, code: str) -> TrialDefinition:
    """The definition in force (for building forms from it)."""
    with ctx.db.reading() as session:
        return current_definition(session, get_trial(session, code))


def instance_mode(environment: Environment) -> ListMode:
    """RND-13: a production instance holds PRODUCTION lists only; test and development instances
    hold TEST lists only."""
    return ListMode.PRODUCTION if environment is Environment.PRODUCTION else ListMode.TEST


class TrialLocked(Conflict):
    slug = "trial-locked"
    title = "The trial database is locked"


class NotUnblinded(Conflict):
    slug = "trial-not-unblinded"
    title = "The trial is not unblinded yet"


# The trial's status, its row locked FOR KEY SHARE until the unit of work ends (`require_open`).
_STATUS_HELD = (
    select(Trial.status).where(Trial.id == bindparam("trial_id")).with_for_update(read=True, key_share=True)
)


def lock_site(session: Session, site_id: int) -> None:
    """Lock a site's row until the caller's commit (PostgreSQL; SQLite's write transaction already
    excludes other writers). The order every use case follows: a site's row before any of its
    kits (a randomization: its site, then the kits it draws), and the sites in id order."""
    session.execute(select(Site.id).where(Site.id == site_id).with_for_update()).one()


def require_open(trial: TrialRef, session: Session | None = None) -> None:
    """Refuse new trial data once the database is locked (UNB-10). Within a unit of work
    (`session`), the status is read again with the trial's row held FOR KEY SHARE until it ends:
    the database lock takes that row FOR UPDATE (`closeout.state`), so either it waits for this
    unit of work to commit, or this one waits for the lock and reads "locked" (on PostgreSQL a
    status read before the lock's commit would otherwise let the record in just after it). The
    key-share lock is the one a unit's inserts that refer to the trial take anyway; it waits only
    for the database lock and the final unblinding, the one units of work that take the row FOR
    UPDATE (code-break sheets, list generation and document numbers take it FOR NO KEY UPDATE)."""
    status = trial.status
    if session is not None:
        status = session.execute(_STATUS_HELD, {"trial_id": trial.id}).scalar_one()
    if status in (TrialStatus.LOCKED.value, TrialStatus.UNBLINDED.value):
        raise TrialLocked(f"{trial.code} is {status}: no new data can be recorded")


def require_unblinded(trial: Trial) -> None:
    if trial.status != TrialStatus.UNBLINDED.value:
        raise NotUnblinded(
            f"{trial.code} is {trial.status}: the unblinded data exist only after the final unblinding"
        )


def current_dispensations(session: Session, subject_id: int) -> dict[int, Dispensation]:
    """The live dispensation of each day (the latest replacement)."""
    out: dict[int, Dispensation] = {}
    for row in session.execute(
        select(Dispensation)
        .where(Dispensation.subject_id == subject_id)
        .order_by(Dispensation.day, Dispensation.replacement_number)
    ).scalars():
        out[row.day] = row
    return out


def subject_in_reach(
    session: Session, trial: Trial, number: str, scope: Scope, *, lock: bool = False
) -> Subject:
    """The subject within the caller's reach. `lock` takes its row lock (PostgreSQL; SQLite's write
    transaction already excludes other writers) so that two corrections of the same subject at the
    same moment queue, and the second sees the first (one withdrawal, one in-error flag)."""
    query = select(Subject).where(Subject.trial_id == trial.id, Subject.subject_number == number)
    subject = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if subject is None or not scope.allows_site(subject.site_id):
        raise NotFound(f"no subject {number} within your reach")
    return subject


def site_filter(codes: Mapping[int, str], site: str, scope: Scope, trial_code: str) -> int:
    """The id of the site coded `site` among `codes` (a trial's sites, id -> code), for a list
    narrowed to one site: ValidationFailed naming `site` when it is not a site of the trial within
    `scope` (another site's code reads as unknown, so that the refusal tells nothing of it)."""
    for site_id, code in codes.items():
        if code == site and scope.allows_site(site_id):
            return site_id
    raise ValidationFailed(
        "unknown site",
        errors=[FieldProblem("site", f"{site!r} is not a site of {trial_code} within your reach")],
    )


def treatment_words(definition: TrialDefinition) -> set[str]:
    """Words that name a treatment of the trial: a free text read by blinded staff (an accidental
    unblinding report, a withdrawal reason) must not carry them (BLD-01)."""
    words = {"placebo", "interferon", "imukin", "saline", "nacl", "chloride", "verum"}
    for arm in definition.arms:
        words.update(w for w in re.findall(r"[a-zà-ÿ0-9]+", arm.label.lower()) if len(w) >= 4)
        # A product's brand or short name is given in brackets: "(Imukin)", "(saline)".
        words.update(w.lower() for w in re.findall(r"\(([A-Za-zÀ-ÿ]{4,})\)", arm.product))
    return words


def names_a_treatment(definition: TrialDefinition, text: str) -> bool:
    """Whether `text` contains a word of `treatment_words` (whole words, case-insensitive)."""
    return bool(treatment_words(definition) & set(re.findall(r"[a-zà-ÿ0-9]+", text.lower())))


class _Numbered(Protocol):
    """A mapped class listed newest first by `newest_first`: its id orders it, its number names it,
    its site scopes it (a drug or lab shipment, a return or destruction, an excursion)."""

    id: Any
    number: Any
    site_id: Any
    trial_id: Any


def page_size(limit: int, maximum: int) -> int:
    """`limit` when it is a page size from 1 to `maximum`; else ValidationFailed naming `limit`."""
    if not 1 <= limit <= maximum:
        raise ValidationFailed("invalid limit", errors=[FieldProblem("limit", f"from 1 to {maximum}")])
    return limit


_Ts = TypeVarTuple("_Ts")


def newest_first(
    session: Session,
    query: Select[*_Ts],
    model: type[_Numbered],
    trial: Trial,
    scope: Scope,
    *,
    limit: int,
    before: str | None,
    unknown: str,
) -> tuple[list[Row[*_Ts]], bool]:
    """One page of `query`'s rows of `model` (issue 21): the trial's, of the sites within `scope`,
    newest first, older than the one numbered `before`, at most `limit`, and whether there are
    more. The cursor is looked for within the reader's sites only, so that it tells nothing of
    another site's records: ValidationFailed naming `before` with the words `unknown` when it is
    not found there. A few statements, however many records the trial has."""
    within = [model.trial_id == trial.id]
    if not scope.all_sites:
        within.append(model.site_id.in_(sorted(scope.site_ids)))
    query = query.where(*within)
    if before:
        start = session.execute(select(model.id).where(*within, model.number == before)).scalar_one_or_none()
        if start is None:
            raise ValidationFailed("unknown cursor", errors=[FieldProblem("before", unknown)])
        query = query.where(model.id < start)
    found = list(session.execute(query.order_by(model.id.desc()).limit(limit + 1)).all())
    return found[:limit], len(found) > limit
