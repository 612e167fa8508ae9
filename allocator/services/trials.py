"""Loading trial definitions, and the blinded trial summaries everyone may read."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from allocator.audit import Action, Actor
from allocator.models import (
    ListMode,
    ListStatus,
    RandomizationList,
    Registration,
    Site,
    SiteStatus,
    Subject,
    Trial,
    TrialDefinitionVersion,
    TrialStatus,
)
from allocator.permissions import Access, Permission
from allocator.services.context import ServiceContext
from allocator.services.errors import DefinitionLocked, FieldProblem, ValidationFailed
from allocator.services.lookups import current_definition, get_trial
from allocator.services.supply import resupply
from allocator.trialdef import DefinitionError, TrialDefinition, parse_definition


@dataclass(frozen=True, slots=True)
class LoadResult:
    trial_code: str
    version: int
    outcome: Literal["created", "new_version", "unchanged"]
    sites_added: tuple[str, ...] = ()
    # `[supply]` trigger levels below the arms' possible drift at a site: a note, not a refusal.
    low_triggers: tuple[resupply.LowTrigger, ...] = ()


def load_trial(ctx: ServiceContext, actor: Actor, text: str, *, source_name: str) -> LoadResult:
    """Validate a definition and load it as a new trial or a new version of an existing one.

    Preconditions: none. Effects: a trial, its sites and a definition version (all audited); for an
    existing trial, a new version only when the text changed. Raises ValidationFailed (naming every
    invalid field, nothing written) and DefinitionLocked when a PRODUCTION list is in use and the
    change would alter allocation, or when a site would disappear."""
    try:
        definition = parse_definition(text, source=source_name)
    except DefinitionError as exc:
        raise ValidationFailed(
            str(exc), errors=[FieldProblem(field=path or "(file)", message=msg) for path, msg in exc.problems]
        ) from None
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    lows = resupply.low_triggers(definition)
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = session.execute(select(Trial).where(Trial.code == definition.code)).scalar_one_or_none()
        if trial is None:
            return replace(
                _create(ctx, session, actor, definition, text, sha, source_name), low_triggers=lows
            )
        latest = _latest_version(session, trial.id)
        if latest.sha256 == sha:
            return LoadResult(
                trial_code=trial.code, version=latest.version, outcome="unchanged", low_triggers=lows
            )
        _check_change_allowed(session, trial, latest, definition)
        version = _add_version(
            session, trial, latest.version + 1, definition, text, sha, source_name, actor, now
        )
        old = {"version": latest.version, "sha256": latest.sha256}
        trial.title = definition.title
        trial.short_title = definition.short_title
        trial.definition_version = version.version
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.DEFINITION_LOADED,
            object_type="trial",
            object_id=trial.code,
            old=old,
            new={"version": version.version, "sha256": sha, "source": source_name},
            at=now,
        )
        added = _sync_sites(ctx, session, actor, trial, definition)
        return LoadResult(
            trial_code=trial.code,
            version=version.version,
            outcome="new_version",
            sites_added=added,
            low_triggers=lows,
        )


def _create(
    ctx: ServiceContext,
    session: Session,
    actor: Actor,
    definition: TrialDefinition,
    text: str,
    sha: str,
    source_name: str,
) -> LoadResult:
    now = ctx.now()
    trial = Trial(
        code=definition.code,
        title=definition.title,
        short_title=definition.short_title,
        status=TrialStatus.SETUP.value,
        definition_version=1,
        created_at=now,
    )
    session.add(trial)
    session.flush()
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.TRIAL_CREATED,
        object_type="trial",
        object_id=trial.code,
        new={"code": trial.code, "title": trial.title, "status": trial.status},
        at=now,
    )
    _add_version(session, trial, 1, definition, text, sha, source_name, actor, now)
    ctx.audit.record(
        session,
        actor=actor,
        chain=trial.code,
        action=Action.DEFINITION_LOADED,
        object_type="trial",
        object_id=trial.code,
        new={"version": 1, "sha256": sha, "source": source_name},
        at=now,
    )
    added = _sync_sites(ctx, session, actor, trial, definition)
    return LoadResult(trial_code=trial.code, version=1, outcome="created", sites_added=added)


def _add_version(
    session: Session,
    trial: Trial,
    number: int,
    definition: TrialDefinition,
    text: str,
    sha: str,
    source_name: str,
    actor: Actor,
    now: object,
) -> TrialDefinitionVersion:
    version = TrialDefinitionVersion(
        trial_id=trial.id,
        version=number,
        sha256=sha,
        allocation_fingerprint=definition.allocation_fingerprint(),
        source_name=source_name,
        source_text=text,
        canonical_json=definition.canonical_json(),
        loaded_at=now,
        loaded_by_id=actor.user_id,
        loaded_by_name=actor.name,
    )
    session.add(version)
    session.flush()
    return version


def _check_change_allowed(
    session: Session, trial: Trial, latest: TrialDefinitionVersion, definition: TrialDefinition
) -> None:
    previous = parse_definition(latest.source_text, source=f"{trial.code} v{latest.version}")
    if previous.kind != definition.kind:
        # A randomized trial's subjects, lists and kits mean nothing to a cohort, and the reverse:
        # the kind of study is fixed when it is first loaded (issue 20).
        raise DefinitionLocked(
            f"{trial.code} is {previous.kind}: a study cannot change its kind",
            errors=[FieldProblem("trial.kind", f"must stay {previous.kind!r}")],
        )
    existing = {s.code for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()}
    removed = sorted(existing - {s.code for s in definition.sites})
    if removed:
        raise DefinitionLocked(
            f"sites cannot be removed from a trial (close them instead): {', '.join(removed)}",
            errors=[
                FieldProblem("sites", f"site {code} is missing from the new definition") for code in removed
            ],
        )
    if latest.allocation_fingerprint == definition.allocation_fingerprint():
        return
    production = session.execute(
        select(func.count())
        .select_from(RandomizationList)
        .where(
            RandomizationList.trial_id == trial.id,
            RandomizationList.mode == ListMode.PRODUCTION.value,
            RandomizationList.status != ListStatus.RETIRED.value,
        )
    ).scalar_one()
    if production:
        raise DefinitionLocked(
            "a PRODUCTION randomization list uses this definition: arms, ratio, stratification and "
            "randomization parameters cannot change (extend the list or retire it under change control)",
            errors=[
                FieldProblem("randomization", "allocation-relevant fields differ from the version in use")
            ],
        )


def _sync_sites(
    ctx: ServiceContext, session: Session, actor: Actor, trial: Trial, definition: TrialDefinition
) -> tuple[str, ...]:
    now = ctx.now()
    existing = {s.code: s for s in session.execute(select(Site).where(Site.trial_id == trial.id)).scalars()}
    added: list[str] = []
    for site_def in definition.sites:
        site = existing.get(site_def.code)
        values = {
            "name": site_def.name,
            "city": site_def.city,
            "principal_investigator": site_def.principal_investigator,
        }
        if site is None:
            site = Site(
                trial_id=trial.id,
                code=site_def.code,
                status=SiteStatus.PENDING.value,
                created_at=now,
                **values,
            )
            session.add(site)
            session.flush()
            ctx.audit.record(
                session,
                actor=actor,
                chain=trial.code,
                action=Action.SITE_CREATED,
                object_type="site",
                object_id=site.code,
                site_code=site.code,
                new={**values, "status": site.status},
                at=now,
            )
            added.append(site.code)
            continue
        old = {k: getattr(site, k) for k in values}
        if old != values:
            for key, value in values.items():
                setattr(site, key, value)
            ctx.audit.record(
                session,
                actor=actor,
                chain=trial.code,
                action=Action.SITE_UPDATED,
                object_type="site",
                object_id=site.code,
                site_code=site.code,
                old=old,
                new=values,
                at=now,
            )
    return tuple(added)


def _latest_version(session: Session, trial_id: int) -> TrialDefinitionVersion:
    return session.execute(
        select(TrialDefinitionVersion)
        .where(TrialDefinitionVersion.trial_id == trial_id)
        .order_by(TrialDefinitionVersion.version.desc())
        .limit(1)
    ).scalar_one()


# --- blinded summaries -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteSummary:
    code: str
    name: str
    city: str
    principal_investigator: str
    status: str
    subjects: int


@dataclass(frozen=True, slots=True)
class TrialSummary:
    """What any role of a trial may see. Never an arm, a ratio split of subjects, a list position
    or a block size (BLD-01, RND-12)."""

    code: str
    title: str
    short_title: str
    status: str
    kind: str  # "randomized" or "observational" (issue 20)
    eu_ct_number: str | None  # None for an observational cohort outside the EU CTR
    nct_number: str
    sponsor_protocol_code: str
    sponsor: str
    phase: str
    target_sample_size: int
    definition_version: int
    mode: str
    subjects: int
    sites: tuple[SiteSummary, ...]
    unconfirmed: tuple[tuple[str, str], ...]

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["unconfirmed"] = [{"field": f, "note": n} for f, n in self.unconfirmed]
        return data


# Who sees the definition's "to be confirmed" notes (they name file fields): those who set the trial
# up, not site staff (issue 13).
SETUP_NOTE_READERS = (Permission.LIST_MANAGE, Permission.SITE_MANAGE)


def trial_summary(ctx: ServiceContext, code: str, site_ids: frozenset[int] | None) -> TrialSummary:
    """The blinded summary of a trial. `site_ids` limits the per-site figures (None: all sites)."""
    with ctx.db.reading() as session:
        trial = get_trial(session, code)
        definition = current_definition(session, trial)
        # An observational study's participants are registered, not randomized (issue 20).
        enrolled = Registration if definition.observational else Subject
        counts = dict(
            session.execute(
                select(enrolled.site_id, func.count())
                .where(enrolled.trial_id == trial.id)
                .group_by(enrolled.site_id)
            ).all()
        )
        sites = [
            SiteSummary(
                code=s.code,
                name=s.name,
                city=s.city,
                principal_investigator=s.principal_investigator,
                status=s.status,
                subjects=counts.get(s.id, 0),
            )
            for s in session.execute(
                select(Site).where(Site.trial_id == trial.id).order_by(Site.code)
            ).scalars()
            if site_ids is None or s.id in site_ids
        ]
        return TrialSummary(
            code=trial.code,
            title=trial.title,
            short_title=trial.short_title,
            status=trial.status,
            kind=definition.kind,
            eu_ct_number=definition.eu_ct_number,
            nct_number=definition.nct_number,
            sponsor_protocol_code=definition.sponsor_protocol_code,
            sponsor=definition.sponsor.name,
            phase=definition.phase,
            target_sample_size=definition.target_sample_size,
            definition_version=trial.definition_version,
            mode=ListMode.PRODUCTION.value if ctx.settings.is_production else ListMode.TEST.value,
            subjects=sum(s.subjects for s in sites),
            sites=tuple(sites),
            unconfirmed=tuple((u.field, u.note) for u in definition.unconfirmed),
        )


@dataclass(frozen=True, slots=True)
class MyTrial:
    code: str
    short_title: str
    status: str
    roles: tuple[str, ...]
    sites: tuple[str, ...]  # site codes the user's site roles cover; empty when trial-wide


def my_trials(ctx: ServiceContext, access: Access) -> list[MyTrial]:
    """The trials where `access` holds a role, with the roles and sites (for the home page)."""
    with ctx.db.reading() as session:
        trials = list(session.execute(select(Trial).order_by(Trial.code)).scalars())
        site_codes: dict[int, str] = {row.id: row.code for row in session.execute(select(Site.id, Site.code))}
        out = []
        for trial in trials:
            grants = [g for g in access.grants if g.trial_id in (None, trial.id)]
            if not grants:
                continue
            out.append(
                MyTrial(
                    code=trial.code,
                    short_title=trial.short_title,
                    status=trial.status,
                    roles=tuple(sorted({g.role.value for g in grants})),
                    sites=tuple(sorted({site_codes[g.site_id] for g in grants if g.site_id is not None})),
                )
            )
        return out
