"""Kit accountability report."""

from __future__ import annotations

from dataclasses import dataclass

from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import ReportFilter, scoped_frame, yes_no
from allocator.services.supply import kit_rules
from allocator.services.supply import reconciliation as supply_reconciliation

# --- kit accountability (REP-09, LBL-11) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accountability:
    reconciliation: supply_reconciliation.Reconciliation

    def facts(self) -> tuple[tuple[str, str], ...]:
        rows = self.reconciliation.rows
        return (
            ("Kits", str(sum(r.total for r in rows))),
            ("Records balance", yes_no(self.reconciliation.balanced)),
            ("Note", "Kit statuses as of now; the period filter does not apply."),
        )

    def tables(self) -> tuple[monitoring_reports.Table, ...]:
        rows = self.reconciliation.rows
        flow = [s.value for s in supply_reconciliation.FLOW_STATUSES]
        return (
            monitoring_reports.Table(
                "Kits per site and batch, by current status",
                (
                    "Site",
                    "Batch",
                    "Total",
                    *(_words(s) for s in kit_rules.STATUSES),
                    "Labels printed",
                    "Labels reprinted",
                ),
                tuple(
                    (
                        r.site,
                        r.batch,
                        str(r.total),
                        *(str(r.current.get(s, 0)) for s in kit_rules.STATUSES),
                        str(r.labels_printed),
                        str(r.labels_reprinted),
                    )
                    for r in rows
                ),
            ),
            monitoring_reports.Table(
                "Kits that were ever in each status",
                ("Site", "Batch", *(f"ever {_words(s)}" for s in flow)),
                tuple((r.site, r.batch, *(str(r.ever.get(s, 0)) for s in flow)) for r in rows),
            ),
            monitoring_reports.Table(
                "Discrepancies",
                ("Discrepancy",),
                tuple((problem,) for problem in self.reconciliation.discrepancies),
            ),
        )


def _words(status: str) -> str:
    """A status as column words: "in_transit" -> "in transit"."""
    return status.replace("_", " ")


def accountability(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Accountability:
    """Kit accountability per site and batch: `kits.reconciliation`, blinded; the depot for readers
    of every site."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    return Accountability(
        supply_reconciliation.reconciliation(
            ctx, frame.code, frame.scope, include_depot=frame.scope.all_sites
        )
    )
