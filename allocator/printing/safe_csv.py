"""CSV exports that open safely in a spreadsheet: one line ending (CRLF, RFC 4180) and no text
cell that can start a formula (ACC-11). Every CSV the service writes goes through `csv_text`."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence


def neutralise_cell(value: str) -> str:
    """Stop spreadsheet formula injection (ACC-11): a cell starting with = + - @ TAB or CR is
    prefixed with an apostrophe."""
    if value and value[0] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
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
    for row in rows:
        writer.writerow(
            [neutralise_cell(cell) if neutralise and isinstance(cell, str) else cell for cell in row]
        )
        if buffer.tell() >= size:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()
