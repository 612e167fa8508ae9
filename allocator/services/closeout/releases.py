"""Unblinded releases: the unblinded listing, the interim
package and an investigator's own subject's arm after the final unblinding (UNB-10, BLD-09)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from allocator.audit import Action, Actor
from allocator.models import InterimPackage, Site, Subject, Trial, TrialStatus
from allocator.permissions import Scope
from allocator.printing.safe_csv import csv_text
from allocator.services import arm_access, signatures
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict, FieldProblem, ValidationFailed
from allocator.services.lookups import current_definition, get_trial, require_unblinded

LISTING_MEANING = "release of the unblinded listing"
INTERIM_MEANING = "release of an unblinded interim package"


# --- unblinded data -------------------------------------------------------------------------------

LISTING_COLUMNS = (
    "subject_number",
    "site",
    "randomization_number",
    "randomized_at",
    "strata_at_randomization",
    "strata_corrected",
    "randomized_in_error",
    "kits",
    "arm",
    "arm_label",
)


@dataclass(frozen=True, slots=True)
class ListingRow:
    subject_number: str
    site: str
    randomization_number: str
    randomized_at: datetime
    strata_at_randomization: str
    strata_corrected: str
    randomized_in_error: bool
    kits: str
    arm: str
    arm_label: str

    def cells(self) -> list[str]:
        return [
            self.subject_number,
            self.site,
            self.randomization_number,
            self.randomized_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            self.strata_at_randomization,
            self.strata_corrected,
            "yes" if self.randomized_in_error else "no",
            self.kits,
            self.arm,
            self.arm_label,
        ]


@dataclass(frozen=True, slots=True)
class Release:
    """A released unblinded dataset: its rows, its CSV and the digest recorded in the audit trail."""

    trial: str
    title: str
    rows: tuple[ListingRow, ...]
    csv: str
    sha256: str
    released_at: datetime
    signature: signatures.Manifestation


def _rows(
    ctx: ServiceContext, session: Session, actor: Actor, trial: Trial, purpose: str
) -> list[ListingRow]:
    from allocator.services.subjects.views import subject_views  # noqa: PLC0415 - subjects imports this module's callers

    definition = current_definition(session, trial)
    labels = {a.code: a.label for a in definition.arms}
    sites = {s.id: s.code for s in trial_sites(session, trial)}
    # Every subject's view and arm with a few statements and one audited read (issue 21: one view,
    # three statements and an audit entry per subject before).
    subjects = list(
        session.execute(select(Subject).where(Subject.trial_id == trial.id).order_by(Subject.id)).scalars()
    )
    # The arms of exactly the subjects listed (a package on an active trial: one randomized
    # meanwhile is neither listed nor read).
    arms = arm_access.subject_arms_in(
        session,
        ctx,
        actor,
        trial.code,
        trial.id,
        purpose,
        subject_ids=[s.id for s in subjects],
        selection="every subject of the trial",
    )
    out = []
    for subject, view in zip(subjects, subject_views(session, definition, subjects, sites), strict=True):
        arm = arms[subject.id]
        out.append(
            ListingRow(
                subject_number=view.subject_number,
                site=view.site,
                randomization_number=view.randomization_number,
                randomized_at=view.randomized_at,
                strata_at_randomization=_strata(view.strata_at_randomization),
                strata_corrected=_strata(view.strata_corrected)
                if view.strata_corrected != view.strata_at_randomization
                else "",
                randomized_in_error=view.in_error,
                kits=" ".join(f"{d.label}:{d.kit_number}" for d in view.days),
                arm=arm,
                arm_label=labels.get(arm, arm),
            )
        )
    return out


def trial_sites(session: Session, trial: Trial) -> list[Site]:
    return list(session.execute(select(Site).where(Site.trial_id == trial.id)).scalars())


def _strata(values: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(values.items()))


def _csv(title: str, trial: Trial, rows: list[ListingRow], now: datetime, by: str) -> str:
    return csv_text(
        [
            [f"# {title}", trial.code, f"released {now:%Y-%m-%dT%H:%M:%SZ}", f"by {by}"],
            LISTING_COLUMNS,
            *(row.cells() for row in rows),
        ]
    )


def unblinded_listing(
    ctx: ServiceContext, actor: Actor, trial_code: str, *, signature: signatures.SignatureRequest
) -> Release:
    """REP-06: the randomization scheme and codes, released (signed) only once UNBLINDED."""
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=LISTING_MEANING,
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
            meaning=LISTING_MEANING,
            object_type="trial",
            object_id=trial.code,
            content={"trial": trial.code, "released_at": now.isoformat()},
            now=now,
        )
        rows = _rows(ctx, session, actor, trial, "final unblinded listing")
        title = "Unblinded randomization listing"
        text = _csv(title, trial, rows, now, actor.name)
        digest = hashlib.sha256(text.encode()).hexdigest()
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.UNBLINDED_LISTING_RELEASED,
            object_type="trial",
            object_id=trial.code,
            new={"subjects": len(rows), "sha256": digest, "signature": signed.id},
            at=now,
        )
        return Release(trial.code, title, tuple(rows), text, digest, now, signatures.manifestation(signed))


def interim_package(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    *,
    purpose: str,
    signature: signatures.SignatureRequest,
) -> Release:
    """REP-08/BLD-09: an unblinded interim package for a DSMB look, for the unblinded statistician
    only: signed, audited, numbered; its digest is kept, its content is not."""
    if len(purpose.strip()) < 5:
        raise ValidationFailed("say what the package is for", errors=[FieldProblem("purpose", "is required")])
    now = ctx.now()
    with (
        signatures.failures_recorded(
            ctx,
            actor=actor,
            chain=trial_code,
            meaning=INTERIM_MEANING,
            object_type="trial",
            object_id=trial_code,
        ),
        ctx.db.unit_of_work() as session,
    ):
        trial = get_trial(session, trial_code)
        if trial.status not in (TrialStatus.ACTIVE.value, TrialStatus.LOCKED.value):
            raise Conflict(f"{trial.code} is {trial.status}: interim packages are for an ongoing trial")
        number = (
            session.execute(
                select(func.count()).select_from(InterimPackage).where(InterimPackage.trial_id == trial.id)
            ).scalar_one()
            + 1
        )
        signed = signatures.sign(
            ctx,
            session,
            actor=actor,
            chain=trial.code,
            trial_id=trial.id,
            request=signature,
            meaning=INTERIM_MEANING,
            object_type="interim_package",
            object_id=number,
            content={"trial": trial.code, "package": number, "purpose": purpose.strip()},
            now=now,
        )
        rows = _rows(ctx, session, actor, trial, f"interim package {number}")
        title = f"Unblinded interim package {number}: {purpose.strip()}"
        text = _csv(title, trial, rows, now, actor.name)
        digest = hashlib.sha256(text.encode()).hexdigest()
        session.add(
            InterimPackage(
                trial_id=trial.id,
                number=number,
                purpose=purpose.strip(),
                subjects=len(rows),
                content_sha256=digest,
                created_at=now,
                created_by_id=actor.user_id,
                created_by_name=actor.name,
                signature_id=signed.id,
            )
        )
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial.code,
            action=Action.INTERIM_PACKAGE_RELEASED,
            object_type="interim_package",
            object_id=number,
            new={"subjects": len(rows), "sha256": digest, "signature": signed.id},
            reason=purpose.strip(),
            at=now,
        )
        return Release(trial.code, title, tuple(rows), text, digest, now, signatures.manifestation(signed))


def own_subject_arm(
    ctx: ServiceContext, actor: Actor, trial_code: str, subject_number: str, scope: Scope
) -> tuple[str, str]:
    """After the final unblinding an investigator may learn the treatment of a subject of their
    site (UNB-10): (arm code, arm label); audited like every read. 409 before UNBLINDED."""
    from allocator.services.lookups import subject_in_reach  # noqa: PLC0415

    with ctx.db.unit_of_work() as session:
        trial = get_trial(session, trial_code)
        require_unblinded(trial)
        subject = subject_in_reach(session, trial, subject_number, scope)
        definition = current_definition(session, trial)
        arm = arm_access.subject_arm_in(
            session, ctx, actor, trial.code, subject, "after the final unblinding"
        )
        return arm, {a.code: a.label for a in definition.arms}.get(arm, arm)
