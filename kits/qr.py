"""QR symbols for kit labels: encoding with the `qrcode` library and drawing as vector rectangles.

The symbol is built by `qrcode` (alphanumeric mode, error-correction level Q) and drawn as filled
rectangles, one per horizontal run of dark modules, inside a white square that includes the 4-module
quiet zone required by ISO/IEC 18004. No raster image is embedded, so the code stays sharp at any
printer resolution and the PDF holds no image objects (BLD-02: same kinds of objects for every kit).

Mask selection. `qrcode` picks the mask by building the symbol eight times and scoring each with the
ISO/IEC 18004 penalty rules; in pure Python that is about 3 ms per symbol, too slow for sheets of a
thousand labels (bench/bench_labels.py). `encode_qr` builds the symbol once with mask 0, derives the
other seven by flipping the data modules where the masks differ, scores them with the same rules on
bit strings, and lets `qrcode` build the final symbol with the chosen mask. The result is identical to
`qrcode`'s own output; tests/unit/kits/test_kit_qr.py checks that on random payloads.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from qrcode.constants import ERROR_CORRECT_Q
from qrcode.main import QRCode
from qrcode.util import MODE_ALPHA_NUM, QRData, mask_func

from kits.payload import QR_ALPHANUMERIC

QUIET_ZONE_MODULES = 4
ERROR_CORRECTION = ERROR_CORRECT_Q  # 25 % recovery: syringe labels are curved, small and handled wet

_SEPARATOR = 2  # byte value after each line in the scoring layouts; bit 0 clear, never a module value
_TO_ASCII = bytes.maketrans(b"\x00\x01", b"01")
_DARK_RUN = re.compile(rb"1+")


@dataclass(frozen=True)
class QrSymbol:
    """A QR symbol without quiet zone: `rows[r]` is row r (top first) as ASCII ``0``/``1`` bytes."""

    version: int
    rows: tuple[bytes, ...]

    @property
    def size(self) -> int:
        """Modules per side, without the quiet zone."""
        return len(self.rows)


@dataclass(frozen=True)
class _VersionTables:
    size: int
    row_flips: tuple[int, ...]  # per mask: data modules that differ from mask 0, in row-major layout
    col_flips: tuple[int, ...]  # the same in column-major layout
    block_origins: int  # top-left corners of all 2 x 2 blocks, row-major layout
    module_bits: int  # bit 0 of every module byte (same in both layouts)
    pair_bits: int  # bit 0 of every module byte that has a next module on the same line
    length: int  # bytes of one layout (size rows of size modules plus a separator each)


def _blank_function_patterns(version: int) -> list[list[bool | None]]:
    # The modules `qrcode` fills before placing data; data modules are those left as None.
    qr: Any = QRCode(version=version, error_correction=ERROR_CORRECTION, border=0)
    size = version * 4 + 17
    qr.modules_count = size
    qr.modules = [[None] * size for _ in range(size)]
    qr.setup_position_probe_pattern(0, 0)
    qr.setup_position_probe_pattern(size - 7, 0)
    qr.setup_position_probe_pattern(0, size - 7)
    qr.setup_position_adjust_pattern()
    qr.setup_timing_pattern()
    qr.setup_type_info(True, 0)
    if version >= 7:
        qr.setup_type_number(True)
    modules: list[list[bool | None]] = qr.modules
    return modules


@functools.cache
def _tables(version: int) -> _VersionTables:
    blank = _blank_function_patterns(version)
    size = len(blank)
    stride = size + 1
    data = [(r, c) for r in range(size) for c in range(size) if blank[r][c] is None]
    base = mask_func(0)
    row_flips = []
    col_flips = []
    for mask in range(8):
        other = mask_func(mask)
        flipped = [(r, c) for r, c in data if bool(base(r, c)) != bool(other(r, c))]
        row_flips.append(sum(1 << (8 * (r * stride + c)) for r, c in flipped))
        col_flips.append(sum(1 << (8 * (c * stride + r)) for r, c in flipped))
    origins = sum(1 << (8 * (r * stride + c)) for r in range(size - 1) for c in range(size - 1))
    modules = int.from_bytes((b"\x01" * size + b"\x00") * size, "little")
    pairs = int.from_bytes((b"\x01" * (size - 1) + b"\x00\x00") * size, "little")
    return _VersionTables(size, tuple(row_flips), tuple(col_flips), origins, modules, pairs, size * stride)


def _layout(lines: list[list[bool]] | list[tuple[bool, ...]]) -> int:
    # One byte per module (0 light, 1 dark) and a separator after each line, as a little-endian integer
    # so that masks can be applied with one XOR.
    sep = bytes([_SEPARATOR])
    return int.from_bytes(sep.join(bytes(line) for line in lines) + sep, "little")


def _match_count(dark: int, light: int, pattern: str) -> int:
    # Positions p where the line reads `pattern` from module p on ("1" dark, "0" light). Separator
    # bytes are neither dark nor light, so no match crosses from one line to the next.
    found = -1
    for offset, colour in enumerate(pattern):
        found &= (dark if colour == "1" else light) >> (8 * offset)
    return found.bit_count()


def _line_penalty(lines: int, tables: _VersionTables) -> int:
    """Penalty rules N1 and N3 over one layout (all rows, or all columns)."""
    dark = lines & tables.module_bits
    light = ~lines & tables.module_bits
    same_next = ~(lines ^ (lines >> 8)) & tables.pair_bits
    # N1: a run of L >= 5 same-colour modules scores L - 2 = (L - 4 windows of five) + 2 for its start.
    fives = same_next & (same_next >> 8) & (same_next >> 16) & (same_next >> 24)
    score = fives.bit_count() + 2 * (fives & ~(same_next << 8)).bit_count()
    # N3: each 1:1:3:1:1 finder-like pattern with 4 light modules on one side scores 40.
    score += 40 * (_match_count(dark, light, "10111010000") + _match_count(dark, light, "00001011101"))
    return score


def _penalty(rows: int, cols: int, tables: _VersionTables) -> int:
    """ISO/IEC 18004 mask penalty, computed exactly as `qrcode.util.lost_point` does."""
    score = _line_penalty(rows, tables) + _line_penalty(cols, tables)
    # N2: each 2 x 2 block of one colour scores 3 (blocks may overlap).
    same_right = ~(rows ^ (rows >> 8))
    same_below = ~(rows ^ (rows >> (8 * (tables.size + 1))))
    score += 3 * (same_right & same_below & (same_below >> 8) & tables.block_origins).bit_count()
    # N4: 10 points per full 5 % that the dark share departs from 50 %.
    dark = (rows & tables.module_bits).bit_count()
    rating = int(abs(float(dark) / (tables.size**2) * 100 - 50) / 5)
    return score + rating * 10


def _new_code(payload: str) -> Any:
    if not payload or not set(payload) <= QR_ALPHANUMERIC:
        raise ValueError("QR payloads must be non-empty and use only QR alphanumeric characters")
    qr: Any = QRCode(error_correction=ERROR_CORRECTION, border=0)
    qr.add_data(QRData(payload.encode("ascii"), mode=MODE_ALPHA_NUM))
    qr.best_fit()
    return qr


def encode_qr(payload: str) -> QrSymbol:
    """Encode `payload` (QR alphanumeric characters only) at error-correction level Q."""
    qr = _new_code(payload)
    tables = _tables(qr.version)
    qr.makeImpl(True, 0)  # "test" symbol: format and version areas light, as qrcode scores them
    rows0 = _layout(qr.modules)
    cols0 = _layout(list(zip(*qr.modules, strict=True)))
    best_mask, best_score = 0, -1
    for mask in range(8):
        score = _penalty(rows0 ^ tables.row_flips[mask], cols0 ^ tables.col_flips[mask], tables)
        if mask == 0 or score < best_score:  # first minimum wins, as in qrcode
            best_mask, best_score = mask, score
    # The chosen symbol is the mask-0 "test" symbol with the flips of the chosen mask; qrcode then writes
    # the real format (and version) information for that mask into it.
    final = (rows0 ^ tables.row_flips[best_mask]).to_bytes(tables.length, "little")
    stride = tables.size + 1
    qr.modules = [list(final[r * stride : r * stride + tables.size]) for r in range(tables.size)]
    qr.setup_type_info(False, best_mask)
    if qr.version >= 7:
        qr.setup_type_number(False)
    return _symbol(qr)


def encode_qr_reference(payload: str) -> QrSymbol:
    """Encode with `qrcode`'s own mask search (slow; used by tests to check `encode_qr`)."""
    qr = _new_code(payload)
    qr.make(fit=False)
    return _symbol(qr)


def _symbol(qr: Any) -> QrSymbol:
    return QrSymbol(
        version=int(qr.version),
        rows=tuple(bytes(row).translate(_TO_ASCII) for row in qr.modules),
    )


def draw_qr(
    canvas: Any, symbol: QrSymbol, x: float, y: float, size: float, *, fixed_length: bool = False
) -> None:
    """Draw `symbol` with its quiet zone in the square of side `size` whose lower-left corner is (x, y).

    With `fixed_length`, the drawing operators take the same number of bytes for every symbol of a
    version (runs padded with empty rectangles, numbers padded to a fixed width), so that an
    uncompressed page has the same byte length whatever the payload (BLD-02).
    """
    total = symbol.size + 2 * QUIET_ZONE_MODULES
    canvas.saveState()
    canvas.translate(x, y)
    canvas.scale(size / total, size / total)
    # White square first: the quiet zone must stay light even over a TEST watermark (LBL-15).
    canvas.setFillGray(1)
    canvas.rect(0, 0, total, total, stroke=0, fill=1)
    canvas.setFillGray(0)
    digits = len(str(total)) if fixed_length else 0
    ops = []
    for index, row in enumerate(symbol.rows):
        y_row = total - QUIET_ZONE_MODULES - 1 - index
        for run in _DARK_RUN.finditer(row):
            x_run, length = run.start() + QUIET_ZONE_MODULES, run.end() - run.start()
            ops.append(f"{x_run:{digits}d} {y_row:{digits}d} {length:{digits}d} 1 re")
    if fixed_length:
        # A row of n modules has at most ceil(n / 2) dark runs. The padding repeats the centre module of
        # the top-left finder pattern, which lies inside a 3 x 3 dark block: filling it again changes
        # no pixel, not even anti-aliased edges, whereas empty rectangles show as specks in some
        # renderers.
        most = symbol.size * ((symbol.size + 1) // 2)
        centre = f"{QUIET_ZONE_MODULES + 3:{digits}d} {total - QUIET_ZONE_MODULES - 4:{digits}d} {1:{digits}d} 1 re"
        ops.extend([centre] * (most - len(ops)))
    # One path, filled once: adjacent runs merge without hairline seams when rasterised. Integer
    # coordinates in module units keep the content stream small.
    ops.append("f")
    canvas.addLiteral("\n".join(ops))
    canvas.restoreState()
