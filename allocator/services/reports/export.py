"""Export a report as CSV or PDF, audited (`report.exported`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from allocator import collector
from allocator.audit import Action, Actor
from allocator.permissions import Scope
from allocator.printing import monitoring_reports, safe_csv
from allocator.services import spooling
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
    return "".join(csv_chunks(view))


def _csv_rows(view: ReportView) -> Iterator[Sequence[str]]:
    yield from ((f"# {key.lower()}", value) for key, value in view.metadata())
    yield from (("# summary", key, value) for key, value in view.facts)
    for table in view.tables:
        yield ("# section", table.title)
        yield table.columns
        yield from table.rows


def csv_chunks(view: ReportView) -> Iterator[str]:
    """`to_csv` in pieces, row by row (issue 21)."""
    return safe_csv.csv_chunks(_csv_rows(view))


@dataclass(frozen=True, slots=True)
class Export:
    filename: str
    mimetype: str
    # The file in pieces, each time it is called: a CSV read back from the spooled file it was
    # written to, never held whole (issue 21); a PDF is one piece.
    chunks: Callable[[], Iterator[bytes]]
    rows: int
    # Lets the spooled file go (on disk past SPOOL_BYTES): called once the file is sent or read.
    close: Callable[[], None] = lambda: None

    @property
    def body(self) -> bytes:
        """The whole file (the closing archive, the tests)."""
        return b"".join(self.chunks())


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
    view: ReportView | None = None,
) -> Export:
    """A report as CSV or PDF in the language of `words`, and its `report.exported` audit entry
    (report, version, format, language, filters, row count, SHA-256 of the file). `view` is the
    report already built for this reader and filter, if it was."""
    if fmt not in ("csv", "pdf"):
        raise ValidationFailed("unknown format", errors=[FieldProblem("format", "csv or pdf")])
    chunks: Callable[[], Iterator[bytes]]
    close: Callable[[], None]
    if fmt == "csv":
        # Written once, row by row, into a spooled file while its SHA-256 is taken (the digest is
        # recorded before the first byte leaves); then sent from that file (issue 21). The file is
        # held in memory up to spooling.SPOOL_BYTES and on disk beyond: never held whole.
        # The report built and written with the collector paused throughout, and let go before
        # it runs again: its objects (half a million for a review of 28,000 entries) are then
        # freed by their last reference, never walked by a collection. Resumed between the
        # two, the collector walked the whole report once: 80 ms of a 0.85 s CSV (issue 21).
        with collector.paused():
            if view is None:
                view = build(ctx, actor, trial_code, name, flt, scope, version=version, words=words)
            spooled = spooling.spool(csv_chunks(view))
            facts = _Facts(view.version, view.rows, view.file_stem)
            view = None
        chunks, close, sha256 = spooled.chunks, spooled.close, spooled.sha256
        mimetype = "text/csv"
    else:
        if view is None:
            view = build(ctx, actor, trial_code, name, flt, scope, version=version, words=words)
        facts = _Facts(view.version, view.rows, view.file_stem)
        pdf = monitoring_reports.render_report_pdf(view.document())
        sha256 = hashlib.sha256(pdf).hexdigest()

        def chunks() -> Iterator[bytes]:
            return iter((pdf,))

        def close() -> None:
            return None

        mimetype = "application/pdf"
    try:
        record_export(
            ctx,
            actor,
            trial_code,
            name,
            facts.version,
            fmt,
            words.language,
            flt.query_args(),
            flt.site,
            facts.rows,
            sha256,
        )
    except BaseException:
        close()
        raise
    return Export(f"{facts.file_stem}.{fmt}", mimetype, chunks, facts.rows, close)


@dataclass(frozen=True, slots=True)
class _Facts:
    """What an export records and names of its report, once the report is let go."""

    version: str
    rows: int
    file_stem: str


def record_export(
    ctx: ServiceContext,
    actor: Actor,
    trial_code: str,
    name: str,
    version: str,
    fmt: str,
    language: str,
    filters: dict[str, str],
    site_code: str | None,
    rows: int,
    sha256: str,
) -> None:
    """The `report.exported` audit entry of a download, in its own unit of work (a direct download,
    or the file of a report job given to its asker)."""
    counted = {"rows": rows, "sha256": sha256}
    # The row count of a restricted export would tell blinded readers of the audit trail how many
    # pharmacovigilance unblindings there are (UNB-08): it is sealed, like every unblinded value.
    restricted = version in ("restricted", "safety")
    with ctx.db.unit_of_work() as session:
        ctx.audit.record(
            session,
            actor=actor,
            chain=trial_code,
            action=Action.REPORT_EXPORTED,
            object_type="report",
            object_id=f"{version}:{name}"[:64],
            site_code=site_code,
            new={
                "report": name,
                "version": version,
                "format": fmt,
                "language": language,
                "filters": filters,
                **({} if restricted else counted),
            },
            sealed=counted if restricted else None,
            at=ctx.now(),
        )
