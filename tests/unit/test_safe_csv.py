"""One safe CSV writer (issue 12, ACC-11): CRLF line ends, and no text cell that a spreadsheet
would read as a formula; numbers are written as they are."""

from __future__ import annotations

import csv
import io

from allocator.printing.safe_csv import csv_chunks, csv_text, neutralise_cell


def test_text_cells_that_could_start_a_formula_are_neutralised_numbers_are_not() -> None:
    text = csv_text([["site", "note", "count"], ["75-01", "=HYPERLINK(1)", -3], ["@SUM(A1)", "+1", 0], []])
    assert text == "site,note,count\r\n75-01,'=HYPERLINK(1),-3\r\n'@SUM(A1),'+1,0\r\n\r\n"
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1] == ["75-01", "'=HYPERLINK(1)", "-3"]


def test_neutralise_cell_prefixes_every_formula_start() -> None:
    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert neutralise_cell(f"{start}x") == f"'{start}x"
    assert neutralise_cell("") == "" and neutralise_cell("a=b") == "a=b"


def test_csv_in_pieces_is_the_same_text_row_by_row() -> None:
    """Issue 21: a streamed CSV is cut between rows, never inside one, and is the same text."""
    rows = [["=x", f"row {i}", i] for i in range(500)]
    pieces = list(csv_chunks(rows, size=1000))
    assert len(pieces) > 5 and "".join(pieces) == csv_text(rows)
    assert all(piece.endswith("\r\n") for piece in pieces)
    assert all(1000 <= len(piece) < 1100 for piece in pieces[:-1])
    assert list(csv_chunks([])) == [] and "".join(csv_chunks([[]])) == "\r\n"


def test_text_of_a_str_subclass_is_neutralised_too() -> None:
    """The writer's fast path checks for plain `str` first (issue 21); a cell of a subclass of str
    (Markup, an enum's value) is text all the same."""
    from markupsafe import Markup

    text = csv_text([[Markup("=cmd|' /C calc'!A0"), "-2", 1.5, None]])
    assert text == "'=cmd|' /C calc'!A0,'-2,1.5,\r\n"
    assert csv_text([["=x", "-y"]], neutralise=False) == "=x,-y\r\n"
