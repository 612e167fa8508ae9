"""One chart helper (issue 12): every report chart goes through `allocator.printing.charts`, whose SVG
writer must stay inert under the Content-Security-Policy (ACC-09) in both of its forms, and whose
PDF drawing prints every label only through the caller's text filter."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from reportlab.graphics.shapes import Circle, Group, PolyLine, String

from allocator.printing import charts

SVG_NS = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script> & "quotes" \' onload=1'


def _chart() -> charts.Chart:
    return charts.Chart(
        200,
        100,
        HOSTILE,
        (
            charts.Line(0, 0, 10, 10, "#333333", 1.0, (2.0, 2.0)),
            charts.Polyline(((0, 0), (5, 5), (10, 0)), "#4e79a7", 2.0, round_join=True),
            charts.Polyline(((0, 9), (9, 9)), "#4e79a7", 2.0),
            charts.Dot(3, 4, 2, "#f28e2b"),
            charts.Text(1, 2, HOSTILE, 9, "middle", bold=True),
            charts.Text(5, 6, "axis", 9, vertical=True),
        ),
    )


@pytest.mark.parametrize("standalone", [True, False])
def test_svg_is_inert_and_escapes_every_text(standalone: bool) -> None:
    text = charts.svg(_chart(), standalone=standalone)
    root = ET.fromstring(text)  # noqa: S314 - our own output; parsing proves it is well-formed XML
    lowered = text.lower()
    for needle in ("<script", "style=", "url(", "href", "javascript:"):
        assert needle not in lowered, needle
    for element in root.iter():
        assert not any(name.lower().startswith("on") for name in element.attrib), element.attrib
    assert root.findtext(f"{SVG_NS}title") == HOSTILE
    assert [t.text for t in root.iter(f"{SVG_NS}text")] == [HOSTILE, "axis"]
    joins = [p.get("stroke-linejoin") for p in root.iter(f"{SVG_NS}polyline")]
    assert joins == ["round", None]
    assert len(list(root.iter(f"{SVG_NS}circle"))) == 1


def test_standalone_is_a_document_and_inline_an_element_for_html() -> None:
    standalone = charts.svg(_chart(), standalone=True)
    inline = charts.svg(_chart(), standalone=False)
    assert standalone.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<svg ') and standalone.endswith(
        "</svg>\n"
    )
    assert 'width="200.00" height="100.00"' in standalone and "aria-label" not in standalone
    assert inline.startswith("<svg ") and inline.endswith("</svg>")
    assert 'width="100%" height="100.00"' in inline
    assert ET.fromstring(inline).get("aria-label") == HOSTILE  # noqa: S314 - our own output


def _strings(node: object) -> list[str]:
    if isinstance(node, String):
        return [node.text]
    if isinstance(node, Group):
        return [text for child in node.contents for text in _strings(child)]
    return []


def test_drawing_scales_the_chart_and_prints_labels_through_the_text_filter() -> None:
    drawing = charts.drawing(_chart(), 0.5, text=str.upper)
    assert (drawing.width, drawing.height) == (100, 50)
    assert _strings(drawing) == [HOSTILE.upper(), "AXIS"]
    group = drawing.contents[0]
    polylines = [item for item in group.contents if isinstance(item, PolyLine)]
    assert [p.strokeLineJoin for p in polylines] == [1, 0]  # round, then reportlab's default mitre
    assert sum(isinstance(item, Circle) for item in group.contents) == 1


def test_drawing_lets_the_text_filter_refuse_a_label() -> None:
    def refuse(text: str) -> str:
        raise ValueError(f"cannot print {text!r}")

    with pytest.raises(ValueError, match="cannot print"):
        charts.drawing(_chart(), 1.0, text=refuse)
