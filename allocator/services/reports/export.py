"""Export a report as CSV or PDF, audited (`report.exported`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from allocator.audit import Action, Actor
from allocator.permissions import Scope
from allocator.printing import monitoring_reports, safe_csv
from allocator.services.context import ServiceContext
from allocator.services.errors import FieldProblem, ValidationFailed
from allocator.services.reports.catalogue import ReportView, build
from allocator.services.reports.filters import ReportFilter
from allocator.wording import ENGLISH, Words


def to_csv(view: ReportView) -> str:
    """Metadata rows ("# key", value), summary rows ("# summary", key, value), then each table as a
    "# section" row, its header and its rows. Every cell is neutralised against formula injection.
    Keys, headers and cells are in the reader's language, as on the page and in the PDF; the
    markers "# summary" and "# section" stay as they are, so that a script can split the file."""
    rows: list[Sequence[str]] = [(f"# {key.lower()}", value) for key, value in view.metadata()]
    rows += [("# summary", key, value) for key, value in view.facts]
    for table in view.tables:
        rows += [("# section", table.title), table.columns, *table.rows]
    return safe_csv.csv_text(rows)


@dataclass(frozen=True, slots=True)
class Export:
    filename: str
    mimetype: str
    body: bytes
    rows: int


def export(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    name: str,
    flt: ReportFilter,
    scope: Scope,
    fmt: str,
    *,
    version: str = "blinded",
    words: Words = ENGLISH,
) -> Export:
    """A report as CSV or PDF in the language of `words`, and its `report.exported` audit entry
    (report, version, format, language, filters, row count, SHA-256 of the file)."""
    if fmt not in ("csv", "pdf"):
        raise ValidationFailed("unknown format", errors=[FieldProblem("format", "csv or pdf")])
    view = build(ctx, actor, trial_code, name, flt, scope, version=version, words=words)
    if fmt == "csv":
        body, mimetype = to_csv(view).encode("utf-8"), "text/csv"
    else:
        body, mimetype = monitoring_reports.render_report_pdf(view.document()), "application/pdf"
    counted = {"rows": view.rows, "sha256": hashlib.sha256(body).hexdigest()}
    # The row count of a restricted export would tell blinded readers of the audit trail how many
    # pharmacovigilance unblindings there are (UNB-08): it is sealed, like every unblinded value.
    restricted = view.version in ("restricted", "safety")
    with ctx.db.unit_of_work() as session:
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial_code,
            action=Action.REPORT_EXPORTED,
            object_type="report",
            object_id=f"{view.version}:{name}"[:64],
            site_code=flt.site,
            new={
                "report": name,
                "version": view.version,
                "format": fmt,
                "language": words.language,
                "filters": flt.query_args(),
                **({} if restricted else counted),
            },
            sealed=counted if restricted else None,
            at=ctx.now(),
        )
    return Export(f"{view.file_stem}.{fmt}", mimetype, body, view.rows)
