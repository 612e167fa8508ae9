"""Kit accountability report."""

from __future__ import annotations

from dataclasses import dataclass

from allocator.permissions import Scope
from allocator.printing import monitoring_reports
from allocator.services.context import ServiceContext
from allocator.services.reports.filters import ReportFilter, scoped_frame
from allocator.services.supply import kit_rules
from allocator.services.supply import reconciliation as supply_reconciliation
from allocator.wording import Words

# --- kit accountability (REP-09, LBL-11) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accountability:
    reconciliation: supply_reconciliation.Reconciliation

    def facts(self, _: Words) -> tuple[tuple[str, str], ...]:
        rows = self.reconciliation.rows
        return (
            (_("Kits"), _.n(sum(r.total for r in rows))),
            (_("Records balance"), _.yes_no(self.reconciliation.balanced)),
            (_("Note"), _("Kit statuses as of now; the period filter does not apply.")),
        )

    def tables(self, _: Words) -> tuple[monitoring_reports.Table, ...]:
        rows = self.reconciliation.rows
        flow = [s.value for s in supply_reconciliation.FLOW_STATUSES]
        return (
            monitoring_reports.Table(
                _("Kits per site and batch, by current status"),
                (
                    _("Site"),
                    _("Batch"),
                    _("Total"),
                    *(_.word(s) for s in kit_rules.STATUSES),
                    _("Labels printed"),
                    _("Labels reprinted"),
                ),
                tuple(
                    (
                        _.place(r.site),  # a site's code, or the depot in the reader's words
                        r.batch,
                        _.n(r.total),
                        *(_.n(r.current.get(s, 0)) for s in kit_rules.STATUSES),
                        _.n(r.labels_printed),
                        _.n(r.labels_reprinted),
                    )
                    for r in rows
                ),
            ),
            monitoring_reports.Table(
                _("Kits that were ever in each status"),
                (_("Site"), _("Batch"), *(_("ever %(status)s", status=_.word(s)) for s in flow)),
                tuple((_.place(r.site), r.batch, *(_.n(r.ever.get(s, 0)) for s in flow)) for r in rows),
            ),
            monitoring_reports.Table(
                _("Discrepancies"),
                (_("Discrepancy"),),
                tuple((_.message(problem),) for problem in self.reconciliation.discrepancies),
            ),
        )


def accountability(ctx: ServiceContext, trial_code: str, scope: Scope, flt: ReportFilter) -> Accountability:
    """Kit accountability per site and batch: `kits.reconciliation`, blinded; the depot for readers
    of every site."""
    frame = scoped_frame(ctx, trial_code, scope, flt)
    return Accountability(
        supply_reconciliation.reconciliation(
            ctx, frame.code, frame.scope, include_depot=frame.scope.all_sites
        )
    )
