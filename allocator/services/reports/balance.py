"""Balance report: subjects per stratum (blinded)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import ReportFilter, scoped_frame, strata_text, subject_views

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

    def facts(self) -> tuple[tuple[str, str], ...]:
        return (
            ("Subjects randomized", str(sum(n for _, n in self.sites))),
            (
                "Note",
                "Totals only: the balance between arms is not shown to blinded roles (BLD-01); "
                "list capacities and block structure stay with the unblinded statistician (RND-12).",
            ),
        )

    def tables(self) -> tuple[monitoring_reports.Table, ...]:
        return (
            monitoring_reports.Table(
                "Subjects per stratum",
                ("Site", "Stratum", "Randomized (stratum used)", "After corrections", "Randomized in error"),
                tuple(
                    (s.site, s.stratum, str(s.randomized), str(s.after_correction), str(s.in_error))
                    for s in self.strata
                ),
            ),
            monitoring_reports.Table(
                "Subjects per site",
                ("Site", "Randomized"),
                (
                    *((site, str(n)) for site, n in self.sites),
                    ("All sites", str(sum(n for _, n in self.sites))),
                ),
            ),
        )


def balance(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Balance:
    """Subjects per stratum (as used at randomization and as corrected) and per site: totals only."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    views = subject_views(ctx, frame)
    used: Counter[tuple[str, str]] = Counter()
    corrected: Counter[tuple[str, str]] = Counter()
    errors: Counter[tuple[str, str]] = Counter()
    for view in views:
        key = (view.site, strata_text(view.strata_at_randomization))
        used[key] += 1
        errors[key] += view.in_error
        corrected[(view.site, strata_text(view.strata_corrected))] += 1
    keys = []
    for combo in frame.definition.strata():
        values = dict(combo)
        if "site" not in values or values["site"] in frame.site_codes:
            keys.append((values.get("site", ""), strata_text(values)))
    keys += sorted(k for k in set(used) | set(corrected) if k not in keys)
    strata = tuple(
        StratumCount(site, text, used[(site, text)], corrected[(site, text)], errors[(site, text)])
        for site, text in keys
    )
    per_site = Counter(v.site for v in views)
    return Balance(strata, tuple((code, per_site[code]) for code in frame.site_codes))
