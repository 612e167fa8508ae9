"""Chart drawing shared by every report: primitives, a chart, and its two renderers (SVG and PDF).

A report builds a `Chart` — its size in points, its title and a tuple of primitives (`Line`,
`Polyline`, `Dot`, `Text`) in a y-down coordinate system — and hands it to `svg` for the web and
for downloads or to `drawing` for a reportlab PDF. The two renderers are pure: the same chart
always gives the same text or drawing.

We write the SVG ourselves rather than through reportlab's ``renderSVG`` (which could render the
same Drawing that `drawing` builds): ``renderSVG`` emits ``style=`` attributes and a
``clip-path: url(#clip)`` reference, which the Content-Security-Policy (``style-src 'self'``,
ACC-09) and the SVG-safety tests forbid. The writer here produces no script, no event attribute,
no style attribute, no link and no external resource; every text is XML-escaped.

reportlab is imported only inside `drawing`, so that the plain-text renderers that import this
module do not pay for it.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = ["Chart", "Dot", "Line", "Polyline", "Primitive", "Text", "drawing", "svg"]

_TEXT_COLOR: Final = "#222222"


@dataclass(frozen=True, slots=True)
class Line:
    """A straight segment; ``dash`` is an on/off pattern in points (empty: solid)."""

    x1: float
    y1: float
    x2: float
    y2: float
    color: str
    width: float
    dash: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Polyline:
    """An open line through ``points``; ``round_join`` rounds its corners."""

    points: tuple[tuple[float, float], ...]
    color: str
    width: float
    dash: tuple[float, ...] = ()
    round_join: bool = False


@dataclass(frozen=True, slots=True)
class Dot:
    """A filled disc."""

    x: float
    y: float
    radius: float
    color: str


@dataclass(frozen=True, slots=True)
class Text:
    """A label whose baseline starts, is centred or ends at (x, y)."""

    x: float
    y: float
    text: str
    size: float
    anchor: Literal["start", "middle", "end"] = "start"
    bold: bool = False
    vertical: bool = False  # rotated 90 degrees counter-clockwise about (x, y)


Primitive = Line | Polyline | Dot | Text


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart of ``width`` x ``height`` points, drawn in order from its primitives (y points down)."""

    width: float
    height: float
    title: str
    primitives: tuple[Primitive, ...]


# --- SVG -------------------------------------------------------------------------------------------


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _f(value: float) -> str:
    return f"{value:.2f}"


def _dash(dash: tuple[float, ...]) -> str:
    return f' stroke-dasharray="{",".join(_f(d) for d in dash)}"' if dash else ""


def _svg_element(item: Primitive) -> str:
    if isinstance(item, Line):
        return (
            f'<line x1="{_f(item.x1)}" y1="{_f(item.y1)}" x2="{_f(item.x2)}" y2="{_f(item.y2)}" '
            f'stroke="{item.color}" stroke-width="{_f(item.width)}"{_dash(item.dash)}/>'
        )
    if isinstance(item, Polyline):
        points = " ".join(f"{_f(x)},{_f(y)}" for x, y in item.points)
        join = ' stroke-linejoin="round"' if item.round_join else ""
        return (
            f'<polyline points="{points}" fill="none" stroke="{item.color}" '
            f'stroke-width="{_f(item.width)}"{join}{_dash(item.dash)}/>'
        )
    if isinstance(item, Dot):
        return f'<circle cx="{_f(item.x)}" cy="{_f(item.y)}" r="{_f(item.radius)}" fill="{item.color}"/>'
    anchor = f' text-anchor="{item.anchor}"' if item.anchor != "start" else ""
    weight = ' font-weight="bold"' if item.bold else ""
    rotate = f' transform="rotate(-90 {_f(item.x)} {_f(item.y)})"' if item.vertical else ""
    return (
        f'<text x="{_f(item.x)}" y="{_f(item.y)}" font-size="{_f(item.size)}"{anchor}{weight}{rotate}>'
        f"{_esc(item.text)}</text>"
    )


def svg(chart: Chart, *, standalone: bool) -> str:
    """The chart as SVG text.

    ``standalone=True``: a document of its own (XML prolog, fixed width and height, final newline),
    for a file download or an ``<img>``. ``standalone=False``: an ``<svg>`` element to inline in an
    HTML page (no prolog, full width, an ``aria-label`` naming the chart).
    """
    size = f'height="{_f(chart.height)}" viewBox="0 0 {_f(chart.width)} {_f(chart.height)}" role="img"'
    if standalone:
        opening = ['<?xml version="1.0" encoding="UTF-8"?>']
        opening.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{_f(chart.width)}" {size}>')
    else:
        opening = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" {size} aria-label="{_esc(chart.title)}">'
        ]
    parts = [
        *opening,
        f"<title>{_esc(chart.title)}</title>",
        f'<rect x="0" y="0" width="{_f(chart.width)}" height="{_f(chart.height)}" fill="#ffffff"/>',
        f'<g font-family="Helvetica, Arial, sans-serif" fill="{_TEXT_COLOR}">',
        *(_svg_element(item) for item in chart.primitives),
        "</g>",
        "</svg>",
    ]
    if standalone:
        parts.append("")
    return "\n".join(parts)


# --- PDF (reportlab) -------------------------------------------------------------------------------


def drawing(chart: Chart, scale: float, *, text: Callable[[str], str]) -> Any:
    """The chart as a reportlab ``Drawing`` of (width x height) * ``scale`` points.

    Labels use the standard Helvetica fonts, which show Windows-1252 text only: ``text`` maps each
    label to what is printed (a caller may transliterate it, or raise ValueError to refuse it).
    """
    from reportlab.graphics.shapes import Circle, Drawing, Group, PolyLine, String  # noqa: PLC0415
    from reportlab.graphics.shapes import Line as PdfLine  # noqa: PLC0415
    from reportlab.lib.colors import HexColor  # noqa: PLC0415

    result = Drawing(chart.width * scale, chart.height * scale)
    group = Group()
    # reportlab's y axis points up: flip the chart's y-down coordinates, then scale.
    group.transform = (scale, 0, 0, -scale, 0, chart.height * scale)
    for item in chart.primitives:
        if isinstance(item, Line):
            group.add(
                PdfLine(
                    item.x1,
                    item.y1,
                    item.x2,
                    item.y2,
                    strokeColor=HexColor(item.color),
                    strokeWidth=item.width,
                    strokeDashArray=list(item.dash) or None,
                )
            )
        elif isinstance(item, Polyline):
            extra = {"strokeLineJoin": 1} if item.round_join else {}
            group.add(
                PolyLine(
                    [coord for point in item.points for coord in point],
                    strokeColor=HexColor(item.color),
                    strokeWidth=item.width,
                    strokeDashArray=list(item.dash) or None,
                    **extra,
                )
            )
        elif isinstance(item, Dot):
            group.add(Circle(item.x, item.y, item.radius, fillColor=HexColor(item.color), strokeColor=None))
        else:
            label = Group(
                String(
                    0,
                    0,
                    text(item.text),
                    fontName="Helvetica-Bold" if item.bold else "Helvetica",
                    fontSize=item.size,
                    textAnchor=item.anchor,
                    fillColor=HexColor(_TEXT_COLOR),
                )
            )
            # Undo the flip for text so that it reads upright; rotate a vertical label.
            label.transform = (
                (0, -1, -1, 0, item.x, item.y) if item.vertical else (1, 0, 0, -1, item.x, item.y)
            )
            group.add(label)
    result.add(group)
    return result
