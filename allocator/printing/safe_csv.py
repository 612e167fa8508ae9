"""CSV exports that open safely in a spreadsheet: one line ending (CRLF, RFC 4180) and no text
cell that can start a formula (ACC-11). Every CSV the service writes goes through `csv_text`."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence

_FORMULA_STARTS = frozenset(("=", "+", "-", "@", "\t", "\r"))


def neutralise_cell(value: str) -> str:
    """Stop spreadsheet formula injection (ACC-11): a cell starting with = + - @ TAB or CR is
    prefixed with an apostrophe. A subclass of str is written as plain text (Markup would escape
    the apostrophe)."""
    if value[:1] in _FORMULA_STARTS:
        return "'" + str(value)
    return value


def csv_text(rows: Iterable[Sequence[object]], *, neutralise: bool = True) -> str:
    """The rows as CSV text, CRLF line ends; each text cell neutralised (`neutralise_cell`), numbers
    written as they are. An empty row is an empty line.

    `neutralise=False` is for files read by programs, not people (the closing archive's tables, a
    REDCap data import): there the apostrophe would change the data itself."""
    return "".join(csv_chunks(rows, neutralise=neutralise))


def csv_chunks(
    rows: Iterable[Sequence[object]], *, neutralise: bool = True, size: int = 64 * 1024
) -> Iterator[str]:
    """`csv_text` of the rows in pieces of about `size` characters, row by row: a file streamed to
    its reader is never held whole (issue 21)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    starts = _FORMULA_STARTS if neutralise else frozenset()
    for row in rows:
        # `neutralise_cell` inlined: a report of 20,000 rows has 200,000 cells (issue 21).
        writer.writerow(
            [
                ("'" + cell if cell[:1] in starts else cell)
                if cell.__class__ is str
                else (neutralise_cell(cell) if neutralise and isinstance(cell, str) else cell)
                for cell in row
            ]
        )
        if buffer.tell() >= size:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()
