"""Sample-kit labels (issue 20): the pre-labelled tube sets of an observational study, on the same
A4 label stock and with the same layout engine as the drug kits' immediate labels (`kits.labels`,
`kits.pdf`).

Per tube set, one label for the set itself (QR unit ``S-00``) and one per tube (``S-01`` ...), each
with the study, the tube set's number, what the label is stuck on (the set, or the tube's type and
volume), the site, a line for the participant's number and one for the time the blood was drawn,
French first and English second (LBL-04). The QR payload is MAC'd by the application (LBL-08), and
its unit tells a sample label from a drug label (`kits.payload`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from kits.errors import KitNumberError, LabelDataError, PayloadError
from kits.labels import (
    IMMEDIATE_LAYOUT,
    MIN_FONT_SIZE,
    LabelLayout,
    LabelPlan,
    define_label_form,
    draw_page_footer,
)
from kits.model import Bilingual, DocumentMeta
from kits.numbers import format_kit_number, normalize_kit_number
from kits.payload import SAMPLE_UNIT_PATTERN, parse_payload, validate_trial_code
from kits.pdf import (
    BOLD,
    OBLIQUE,
    PAGE_HEIGHT,
    REGULAR,
    WATERMARK_EN,
    WATERMARK_FR,
    FieldSpec,
    Flow,
    Plan,
    draw_page_watermark,
    duplicate_text,
    finish,
    fit,
    new_canvas,
    width,
)
from kits.qr import draw_qr, encode_qr
from kits.text import check_optional, check_printable, check_required

CAPTION_SET = "N\u00b0 de lot / Set no."
CAPTION_CONTENT = "Contenu / Content"
CAPTION_SITE = "Centre / Site"
CAPTION_SUBJECT = "Patient / Subject"
CAPTION_DRAWN = "Pr\u00e9lev\u00e9 le / Drawn on"
CAPTION_PROTOCOL = "Protocole / Protocol"
RESEARCH_USE = Bilingual(
    "\u00c9chantillon biologique \u2013 recherche", "Biological sample \u2013 research use only"
)
WHOLE_SET = "Kit de tubes / Tube set"

_KIT_SAMPLE = "0000-0000"


@dataclass(frozen=True)
class SampleLabelInfo:
    """The study-level particulars of every tube-set label."""

    trial_code: str
    short_title: str
    protocol_code: str
    nct_number: str | None
    sponsor_name: str
    test_mode: bool
    software_version: str

    def __post_init__(self) -> None:
        try:
            validate_trial_code(self.trial_code)
        except ValueError as exc:
            raise LabelDataError(str(exc)) from exc
        check_required(self.short_title, "short title", 300)
        check_required(self.protocol_code, "sponsor protocol code", 40)
        check_optional(self.nct_number, "NCT number", 11)
        check_required(self.sponsor_name, "sponsor name", 120)
        check_required(self.software_version, "software version", 40)


@dataclass(frozen=True)
class SampleLabel:
    """One label of a tube set: the set's own (`content` None) or one of its tubes."""

    kit_number: str
    qr_payload: str
    unit: str  # S-00 for the set, S-01 ... for its tubes (also in the payload)
    site_code: str
    content: str | None = None  # the tube's type and volume, e.g. "EDTA 5 mL (1/3)"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kit_number", normalize_kit_number(self.kit_number))
        except KitNumberError as exc:
            raise LabelDataError(f"kit number: {exc}") from exc
        if not SAMPLE_UNIT_PATTERN.fullmatch(self.unit):
            raise LabelDataError(f"unit {self.unit!r} is not a sample kit's (S-00 ... S-99)")
        check_required(self.site_code, "site code", 12)
        check_optional(self.content, "tube content", 40)
        check_printable(self.qr_payload, "QR payload")
        try:
            payload = parse_payload(self.qr_payload)
        except PayloadError as exc:
            raise LabelDataError(f"QR payload of tube set {self.kit_number}: {exc}") from exc
        # LBL-09: the code must encode the very tube set and tube printed beside it.
        if payload.kit_number != self.kit_number or payload.unit != self.unit:
            raise LabelDataError(
                f"the QR payload encodes {payload.kit_number} {payload.unit}, but the label says "
                f"{self.kit_number} {self.unit}"
            )


def sample_plan(
    trial: SampleLabelInfo, label_width: float, label_height: float, reprint_number: int
) -> LabelPlan:
    """Layout of a tube-set label (the immediate label's size: it wraps around a tube)."""
    pad = 5.0
    qr_size = min(50.0, label_height * 0.47)
    qr_x, qr_y = label_width - pad - qr_size, label_height - pad - qr_size

    def build(scale: float) -> Plan:
        plan = Plan()
        flow = Flow(
            plan,
            left=pad,
            right=label_width - pad,
            top=label_height - pad,
            bottom=pad - 1,
            scale=scale,
            reserved_left=qr_x - 2,
            reserved_bottom=qr_y - 1,
        )
        if reprint_number:
            flow.paragraph(duplicate_text(reprint_number), BOLD, 5.2, "duplicate marking", (0.75, 0.0, 0.0))
        flow.paragraph(trial.short_title, BOLD, 6.0, "study title")
        reference = f"{CAPTION_PROTOCOL} {trial.protocol_code}"
        if trial.nct_number:
            reference += f" \u2013 {trial.nct_number}"
        flow.paragraph(reference, REGULAR, 5.4, "study reference")
        flow.fields(
            [
                FieldSpec(
                    "kit", CAPTION_SET, BOLD, 8.6, room=width(_KIT_SAMPLE, BOLD, 8.6) + 1, underline=False
                )
            ],
            REGULAR,
            5.4,
        )
        flow.fields(
            [
                FieldSpec("site", CAPTION_SITE, BOLD, 6.0, room=24),
                FieldSpec("subject", CAPTION_SUBJECT, BOLD, 6.0),
            ],
            REGULAR,
            5.4,
        )
        flow.fields([FieldSpec("content", CAPTION_CONTENT, BOLD, 6.2, underline=False)], REGULAR, 5.4)
        flow.fields([FieldSpec("drawn", CAPTION_DRAWN, BOLD, 6.0)], REGULAR, 5.4)
        flow.bilingual(RESEARCH_USE, REGULAR, 5.2, "research-use statement", en_font=OBLIQUE)
        flow.paragraph(f"{trial.sponsor_name}", REGULAR, 5.0, "sponsor")
        return plan

    plan = fit(build, "tube-set label", min_scale=MIN_FONT_SIZE / 5.0, max_scale=1.2)
    return LabelPlan(plan, label_width, label_height, qr_x, qr_y, qr_size, trial.test_mode)


def render_sample_label_sheet(
    trial: SampleLabelInfo,
    labels: Sequence[SampleLabel],
    *,
    document: DocumentMeta,
    layout: LabelLayout | None = None,
) -> bytes:
    """A PDF of tube-set `labels` laid out on A4 label sheets (page x/y, TEST and DUPLICATA marks)."""
    if not labels:
        raise LabelDataError("there are no labels to print")
    for label in labels:
        if not isinstance(label, SampleLabel):
            raise LabelDataError("labels must be SampleLabel objects")
        if parse_payload(label.qr_payload).trial_code != trial.trial_code:
            raise LabelDataError(f"tube set {label.kit_number}: its QR payload is for another study")
    grid = layout or IMMEDIATE_LAYOUT
    design = sample_plan(trial, grid.label_width, grid.label_height, document.reprint_number)
    title = "\u00c9tiquettes de lots de tubes / Tube-set labels"
    if trial.test_mode:
        title = f"TEST \u2013 {title}"
    buffer = io.BytesIO()
    canvas = new_canvas(buffer, title=title, document=document, software_version=trial.software_version)
    pages = -(-len(labels) // grid.per_page)
    footer = [f"{title} \u2013 Document {document.document_id} \u2013 allocator {trial.software_version}"]
    if document.is_reprint:
        footer.insert(0, duplicate_text(document.reprint_number))
    if trial.test_mode:
        footer.insert(0, f"{WATERMARK_FR} / {WATERMARK_EN}")
    form_name = "label-sample"
    define_label_form(canvas, form_name, design, dashed_outline=False, outline=grid.outline)
    for page in range(pages):
        if trial.test_mode:
            draw_page_watermark(canvas)
        chunk = labels[page * grid.per_page : (page + 1) * grid.per_page]
        for index, label in enumerate(chunk):
            x, y = grid.origin(index)
            canvas.saveState()
            canvas.translate(x, y)
            canvas.doForm(form_name)
            values = {
                "kit": format_kit_number(label.kit_number),
                "content": label.content or WHOLE_SET,
                "site": label.site_code,
            }
            for name, slot in design.plan.slots.items():
                if values.get(name):
                    slot.draw(canvas, values[name], name)
            draw_qr(canvas, encode_qr(label.qr_payload), design.qr_x, design.qr_y, design.qr_size)
            canvas.restoreState()
        bottom_margin = (
            PAGE_HEIGHT - grid.top - grid.rows * grid.label_height - (grid.rows - 1) * grid.row_gap
        )
        draw_page_footer(canvas, footer, page + 1, pages, max(6.0, bottom_margin / 2 - 6))
        canvas.showPage()
    return finish(canvas, buffer)
