"""Balance report: subjects per stratum (blinded)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select

from allocator.models import Subject, SubjectCorrection
from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import ReportFilter, scoped_frame, strata_text
from allocator.wording import Words

# --- blinded balance (REP-08) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StratumCount:
    site: str
    stratum: str
    randomized: int  # in this stratum at randomization (the stratum used for the allocation)
    after_correction: int  # in this stratum once corrections are applied
    in_error: int


@dataclass(frozen=True, slots=True)
class Balance:
    strata: tuple[StratumCount, ...]
    sites: tuple[tuple[str, int], ...]

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        return (
            (_("Subjects randomized"), _.n(sum(n for _site, n in self.sites))),
            (
                _("Note"),
                _(
                    "Totals only: the balance between arms is not shown to blinded roles; list capacities "
                    "and block structure stay with the unblinded statistician."
                ),
            ),
        )

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        return (
            monitoring_reports.Table(
                _("Subjects per stratum"),
                (
                    _("Site"),
                    _("Stratum"),
                    _("Randomized (stratum used)"),
                    _("After corrections"),
                    _("Randomized in error"),
                ),
                tuple(
                    (s.site, _.strata(s.stratum), _.n(s.randomized), _.n(s.after_correction), _.n(s.in_error))
                    for s in self.strata
                ),
            ),
            monitoring_reports.Table(
                _("Subjects per site"),
                (_("Site"), _("Randomized")),
                (
                    *((site, _.n(n)) for site, n in self.sites),
                    (_("All sites"), _.n(sum(n for _site, n in self.sites))),
                ),
            ),
        )


def balance(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Balance:
    """Subjects per stratum (as used at randomization and as corrected) and per site: totals only.
    Two queries (the subjects' sites and strata, their corrections), not the subjects' full views
    with their kits (issue 21)."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    with ctx.db.reading() as session:
        query = select(Subject.id, Subject.site_id, Subject.strata).where(Subject.trial_id == frame.trial_id)
        if not frame.scope.all_sites:
            query = query.where(Subject.site_id.in_(sorted(frame.scope.site_ids)))
        if frame.flt.start is not None:
            query = query.where(Subject.randomized_at >= frame.flt.start)
        if frame.flt.end is not None:
            query = query.where(Subject.randomized_at < frame.flt.end)
        subjects = session.execute(query).all()
        changes = session.execute(
            select(
                SubjectCorrection.subject_id,
                SubjectCorrection.kind,
                SubjectCorrection.field,
                SubjectCorrection.new_value,
            )
            .join(Subject, Subject.id == SubjectCorrection.subject_id)
            .where(Subject.trial_id == frame.trial_id)
            .order_by(SubjectCorrection.id)
        ).all()
    corrected_values: dict[int, dict[str, object]] = {}
    in_error: set[int] = set()
    for subject_id, kind, field_name, new_value in changes:
        if kind == "randomized_in_error":
            in_error.add(subject_id)
        elif kind == "stratum" and field_name:
            corrected_values.setdefault(subject_id, {})[field_name] = new_value
    used: Counter[tuple[str, str]] = Counter()
    corrected: Counter[tuple[str, str]] = Counter()
    errors: Counter[tuple[str, str]] = Counter()
    per_site: Counter[str] = Counter()
    for subject_id, site_id, strata in subjects:
        site = frame.sites[site_id]
        key = (site, strata_text(strata))
        used[key] += 1
        errors[key] += subject_id in in_error
        corrected[(site, strata_text({**strata, **corrected_values.get(subject_id, {})}))] += 1
        per_site[site] += 1
    keys = []
    for combo in frame.definition.strata():
        values = dict(combo)
        if "site" not in values or values["site"] in frame.site_codes:
            keys.append((values.get("site", ""), strata_text(values)))
    keys += sorted(k for k in set(used) | set(corrected) if k not in keys)
    strata_counts = tuple(
        StratumCount(site, text, used[(site, text)], corrected[(site, text)], errors[(site, text)])
        for site, text in keys
    )
    return Balance(strata_counts, tuple((code, per_site[code]) for code in frame.site_codes))
