"""Site activation and closure, and the site list of a trial."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select

from allocator.audit import Action, Actor
from allocator.models import Site, SiteStatus
from allocator.permissions import Scope
from allocator.services import codebreak
from allocator.services.accounts.user_admin import required_reason, trial_by_code
from allocator.services.closeout import state
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, NotFound, ValidationFailed
from allocator.services.lookups import current_definition, trial_definition
from allocator.services.supply import resupply

# --- sites (RND-14) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteRow:
    id: int
    code: str
    name: str
    city: str
    principal_investigator: str
    status: str
    approval_date: date | None
    delegation_log_date: date | None
    activated_at: datetime | None
    code_break_evidence: str | None = None  # UNB-07


def sites(ctx: ServiceContext, trial_code: str) -> list[SiteRow]:
    with ctx.db.reading() as session:
        trial = trial_by_code(session, trial_code)
        return [
            SiteRow(
                id=s.id,
                code=s.code,
                name=s.name,
                city=s.city,
                principal_investigator=s.principal_investigator,
                status=s.status,
                approval_date=s.approval_date,
                delegation_log_date=s.delegation_log_date,
                activated_at=s.activated_at,
                code_break_evidence=s.code_break_evidence,
            )
            for s in session.execute(
                select(Site).where(Site.trial_id == trial.id).order_by(Site.code)
            ).scalars()
        ]


def activate_site(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    site_code: str,
    *,
    approval_date: date,
    delegation_log_date: date,
    code_break_evidence: str,
    scope: Scope,
    reason: str,
) -> None:
    """Activate a site for randomization once its approval and delegation records exist (RND-14)
    and its offline code-break material is in place (UNB-07): every kit of the trial has a sealed
    code-break sheet, and `code_break_evidence` says where the site's sheets are and who holds them
    (stored on the site and in the audit entry).

    Raises ValidationFailed for a missing or future date or missing evidence, Conflict if the site is
    not pending or some kit has no code-break sheet yet."""
    reason = required_reason(reason)
    now = ctx.now()
    problems = []
    today = now.date()
    if approval_date > today:
        problems.append(FieldProblem("approval_date", "is in the future"))
    if delegation_log_date > today:
        problems.append(FieldProblem("delegation_log_date", "is in the future"))
    evidence = code_break_evidence.strip()
    # Issue 20: an observational study has no kit to break the code of; the evidence is optional.
    observational = trial_definition(ctx, trial_code).observational
    if not evidence and not observational:
        problems.append(
            FieldProblem(
                "code_break_evidence",
                "say where the site's sealed code-break sheets are and who holds them (UNB-07)",
            )
        )
    elif len(evidence) > 1000:
        problems.append(FieldProblem("code_break_evidence", "at most 1000 characters"))
    if problems:
        raise ValidationFailed("the site cannot be activated", errors=problems)
    with ctx.db.unit_of_work() as session:
        trial = trial_by_code(session, trial_code)
        if observational:
            # An observational study becomes active with its first active site, as a randomized
            # trial does with its randomization list (it has none): without it the study stayed in
            # set-up for good, and its database could never be locked. Before the site's row is
            # locked: trial, then site, the order of every other writer (a refusal below rolls
            # this back with the rest).
            state.open_trial(
                ctx, session, actor, trial, f"first site activated ({site_code}): recruitment open", now
            )
        site = session.execute(
            select(Site).where(Site.trial_id == trial.id, Site.code == site_code).with_for_update()
        ).scalar_one_or_none()
        if site is None or not scope.allows_site(site.id):
            raise NotFound(f"no site {site_code!r} in {trial_code}")
        if site.status != SiteStatus.PENDING.value:
            raise Conflict(f"site {site_code} is {site.status}, not pending")
        without = codebreak.kits_without_sheet(session, trial)
        if without:
            raise Conflict(
                f"{without} kit(s) of {trial.code} have no code-break sheet: generate the code-break "
                "sheets first (UNB-07)"
            )
        site.status = SiteStatus.ACTIVE.value
        site.approval_date = approval_date
        site.delegation_log_date = delegation_log_date
        site.activated_at = now
        site.code_break_evidence = evidence
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SITE_ACTIVATED,
            object_type="site",
            object_id=site.code,
            site_code=site.code,
            old={"status": "pending"},
            new={
                "status": "active",
                "approval_date": approval_date.isoformat(),
                "delegation_log_date": delegation_log_date.isoformat(),
                "code_break_evidence": evidence,
            },
            reason=reason,
            at=now,
        )
        # Issue 19: the initial shipment, when the trial resupplies its sites automatically.
        resupply.at_activation(ctx, session, actor, trial, current_definition(session, trial), site, now)


def close_site(
    ctx: ServiceContext, actor: Actor, trial_code: str, site_code: str, *, scope: Scope, reason: str
) -> None:
    """Close an active site: no new subjects; follow-up of randomized subjects continues."""
    reason = required_reason(reason)
    now = ctx.now()
    with ctx.db.unit_of_work() as session:
        trial = trial_by_code(session, trial_code)
        site = session.execute(
            select(Site).where(Site.trial_id == trial.id, Site.code == site_code).with_for_update()
        ).scalar_one_or_none()
        if site is None or not scope.allows_site(site.id):
            raise NotFound(f"no site {site_code!r} in {trial_code}")
        if site.status != SiteStatus.ACTIVE.value:
            raise Conflict(f"site {site_code} is {site.status}, not active")
        site.status = SiteStatus.CLOSED.value
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.SITE_CLOSED,
            object_type="site",
            object_id=site.code,
            site_code=site.code,
            old={"status": "active"},
            new={"status": "closed"},
            reason=reason,
            at=now,
        )
