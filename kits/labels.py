"""Kit labels: outer packaging (CTR Annex VI A.1) and immediate packaging (A.2), on A4 label sheets.

Which particular is where (LBL-01, LBL-02), French first and English second (LBL-04). Letters are those
of Regulation (EU) 536/2014 Annex VI A.1:

    particular                                          outer (A.1)   immediate (A.2)
    (a) main contact: name, address, phone              yes           name and phone
        24/7 emergency-unblinding phone (LBL-07)        yes           yes
    (b) substance and strength, placebo named with it   yes           no (blinded trial)
    (c) pharmaceutical form, route, quantity            yes           route
    (d) batch: the blinded lot code (LBL-14)            yes           yes
    (e) EU CT number, protocol code, site, sponsor      yes           yes
    (f) subject number, kit number, day (visit)         yes           yes
    (g) investigator name                               yes           no
    (h) directions for use                              yes           no
    (i) "for clinical trial use only"                   yes           yes
    (j) storage conditions                              yes           no
    (k) period of use, MM/YYYY                          yes           yes, unless omitted (LBL-02)
    (l) keep out of reach of children                   optional      no

Every label of a trial is drawn from one layout plan: the fixed text goes into one PDF form object drawn
on every label, and the per-kit values go into slots at fixed places, in fonts whose digits all have the
same width. Labels of two kits therefore differ only in the kit number, the QR code and the per-kit
values, never in layout (BLD-02, LBL-03).
"""

from __future__ import annotations

import enum
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reportlab.lib.units import mm

from kits.errors import LabelDataError, LabelLayoutError
from kits.model import Bilingual, DocumentMeta, KitLabel, TrialLabelInfo
from kits.numbers import format_kit_number
from kits.payload import parse_payload
from kits.pdf import (
    BOLD,
    MARK_COLOR,
    OBLIQUE,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    REGULAR,
    WATERMARK_EN,
    WATERMARK_FR,
    FieldSpec,
    Flow,
    Plan,
    draw_box_watermark,
    draw_page_watermark,
    duplicate_text,
    finish,
    fit,
    keep_together,
    new_canvas,
    width,
)
from kits.qr import QrSymbol, draw_qr, encode_qr

# Fixed captions, French first (LBL-04).
CAPTION_KIT = "N\u00b0 de kit / Kit no."
CAPTION_DAY = "Jour / Day"
CAPTION_SITE = "Centre / Site"
CAPTION_INVESTIGATOR = "Investigateur / Investigator"
CAPTION_SUBJECT = "N\u00b0 patient / Subject no."
CAPTION_SUBJECT_SHORT = "Patient / Subject"
CAPTION_BATCH = "Lot / Batch"
CAPTION_EXPIRY = "P\u00e9remption / Expiry (MM/AAAA)"
CAPTION_EXPIRY_SHORT = "EXP"
CAPTION_SPONSOR = "Promoteur / Sponsor"
CAPTION_CONTACT = "Contact"
CAPTION_EMERGENCY = "Urgence 24 h/24, lev\u00e9e d'aveugle / 24/7 emergency unblinding"
CAPTION_EMERGENCY_SHORT = "Urgence 24 h/24 / Emergency 24/7"
CAPTION_PHONE = "T\u00e9l. / Phone"
CAPTION_PROTOCOL = "Protocole / Protocol"
CAPTION_DIRECTIONS = Bilingual("Mode d'emploi", "Directions")
CAPTION_STORAGE = Bilingual("Conservation", "Storage")
KEEP_OUT_OF_REACH = Bilingual(
    "Tenir hors de la vue et de la port\u00e9e des enfants", "Keep out of the sight and reach of children"
)

# A mandatory particular printed smaller than this is not considered legible: the layout shrinks text
# down to this size at most and otherwise refuses the trial's texts as too long (LBL-01).
MIN_FONT_SIZE = 5.0

# Widest possible values of the fixed-format slots (all digits have the same width in Helvetica).
_KIT_SAMPLE = "0000-0000"
_EXPIRY_SAMPLE = "00/0000"
_UNIT_DAY = re.compile(r"D([0-9]{1,3})")


def unit_display(unit: str) -> str:
    """LBL-04/LBL-06: the injection day in French and English, ``D2`` -> ``J2 / D2``."""
    match = _UNIT_DAY.fullmatch(unit)
    return f"J{match.group(1)} / D{match.group(1)}" if match else unit


class LabelKind(enum.Enum):
    """Packaging level of a label."""

    OUTER = "outer"  # CTR Annex VI A.1: full set of particulars
    IMMEDIATE = "immediate"  # CTR Annex VI A.2: reduced set, e.g. the syringe


@dataclass(frozen=True)
class LabelLayout:
    """A grid of equal labels on an A4 sheet (dimensions in points)."""

    description: str
    label_width: float
    label_height: float
    columns: int
    rows: int
    left: float
    top: float
    column_gap: float
    row_gap: float
    outline: bool = True  # thin grey outline, useful when printing on plain paper and cutting

    def __post_init__(self) -> None:
        right = self.left + self.columns * self.label_width + (self.columns - 1) * self.column_gap
        bottom = self.top + self.rows * self.label_height + (self.rows - 1) * self.row_gap
        if self.columns < 1 or self.rows < 1 or right > PAGE_WIDTH + 0.5 or bottom > PAGE_HEIGHT + 0.5:
            raise LabelDataError(f"label layout {self.description!r} does not fit on an A4 page")

    @property
    def per_page(self) -> int:
        """Labels per page."""
        return self.columns * self.rows

    def origin(self, index: int) -> tuple[float, float]:
        """Lower-left corner of the `index`-th label of a page, filled row by row from the top left."""
        column, row = index % self.columns, index // self.columns
        x = self.left + column * (self.label_width + self.column_gap)
        y = PAGE_HEIGHT - self.top - (row + 1) * self.label_height - row * self.row_gap
        return x, y


# 99.1 x 67.7 mm, 2 x 4 per sheet (the common "L7165" label stock).
OUTER_LAYOUT = LabelLayout(
    "99.1 x 67.7 mm, 8 per A4 sheet", 99.1 * mm, 67.7 * mm, 2, 4, 4.65 * mm, 13.1 * mm, 2.5 * mm, 0.0
)
# 63.5 x 38.1 mm, 3 x 7 per sheet (the common "L7160" label stock); wraps around a syringe barrel.
IMMEDIATE_LAYOUT = LabelLayout(
    "63.5 x 38.1 mm, 21 per A4 sheet", 63.5 * mm, 38.1 * mm, 3, 7, 7.2 * mm, 15.15 * mm, 2.5 * mm, 0.0
)


@dataclass
class LabelPlan:
    """Fixed content, slots and QR square of one label design, in label coordinates."""

    plan: Plan
    width: float
    height: float
    qr_x: float
    qr_y: float
    qr_size: float
    test_mode: bool


def _duplicate_line(flow: Flow, reprint_number: int, base: float) -> None:
    if reprint_number:
        flow.paragraph(duplicate_text(reprint_number), BOLD, base, "duplicate marking", MARK_COLOR)


def outer_plan(
    trial: TrialLabelInfo, label_width: float, label_height: float, reprint_number: int
) -> LabelPlan:
    """Layout of the outer label: every Annex VI A.1 particular."""
    pad = 6.0
    qr_size = min(64.0, label_height * 0.36)
    qr_x, qr_y = label_width - pad - qr_size, label_height - pad - qr_size

    def build(scale: float) -> Plan:
        plan = Plan()
        flow = Flow(
            plan,
            left=pad,
            right=label_width - pad,
            top=label_height - pad,
            bottom=pad,
            scale=scale,
            reserved_left=qr_x - 3,
            reserved_bottom=qr_y - 1,
        )
        _duplicate_line(flow, reprint_number, 6.5)
        flow.bilingual(trial.clinical_trial_use, BOLD, 6.6, "clinical-trial-use statement")  # (i)
        flow.paragraph(  # (a)
            f"{CAPTION_SPONSOR} : {trial.sponsor_name}, {trial.sponsor_address}", REGULAR, 5.8, "sponsor"
        )
        contact_phone = keep_together(trial.main_contact_phone)
        flow.paragraph(
            f"{CAPTION_CONTACT} : {trial.main_contact_name} \u2013 {CAPTION_PHONE} {contact_phone}",
            REGULAR,
            5.8,
            "main contact",
        )
        flow.paragraph(
            f"{CAPTION_EMERGENCY} : {keep_together(trial.emergency_phone)}", BOLD, 5.8, "emergency phone"
        )
        flow.skip(1.2)
        flow.bilingual(trial.product_name, BOLD, 7.0, "product name")  # (b)
        form_route = Bilingual(  # (c)
            f"{trial.pharmaceutical_form.fr} \u2013 {trial.route.fr} \u2013 {trial.quantity.fr}",
            f"{trial.pharmaceutical_form.en} \u2013 {trial.route.en} \u2013 {trial.quantity.en}",
        )
        flow.bilingual(form_route, REGULAR, 5.8, "form, route and quantity", en_font=OBLIQUE)
        reference = f"EU CT {trial.eu_ct_number} \u2013 {CAPTION_PROTOCOL} {trial.protocol_code}"  # (e)
        if trial.nct_number:
            reference += f" \u2013 {trial.nct_number}"
        flow.paragraph(reference, BOLD, 5.8, "trial reference")
        flow.skip(1.0)
        flow.fields(  # (e), (g)
            [
                FieldSpec("site", CAPTION_SITE, BOLD, 6.5, room=34),
                FieldSpec("investigator", CAPTION_INVESTIGATOR, BOLD, 6.5),
            ],
            REGULAR,
            5.8,
        )
        flow.fields(  # (f)
            [
                FieldSpec(
                    "kit", CAPTION_KIT, BOLD, 9.5, room=width(_KIT_SAMPLE, BOLD, 9.5) + 1, underline=False
                ),
                FieldSpec("unit", CAPTION_DAY, BOLD, 8.0),  # a line to write the day on
            ],
            REGULAR,
            5.8,
        )
        flow.fields([FieldSpec("subject", CAPTION_SUBJECT, BOLD, 7.0)], REGULAR, 5.8)  # (f)
        flow.fields(  # (d), (k)
            [
                FieldSpec("batch", CAPTION_BATCH, BOLD, 6.5, room=52),
                FieldSpec("expiry", CAPTION_EXPIRY, BOLD, 7.0, underline=False),
            ],
            REGULAR,
            5.8,
        )
        flow.skip(1.0)
        directions = trial.directions
        flow.bilingual(
            directions, REGULAR, 5.4, "directions", caption=CAPTION_DIRECTIONS, en_font=OBLIQUE
        )  # (h)
        flow.bilingual(trial.storage, BOLD, 5.4, "storage conditions", caption=CAPTION_STORAGE)  # (j)
        if trial.print_keep_out_of_reach:  # (l)
            flow.bilingual(KEEP_OUT_OF_REACH, REGULAR, 5.4, "keep out of reach of children")
        return plan

    plan = fit(build, "outer label", min_scale=MIN_FONT_SIZE / 5.4, max_scale=1.3)
    return LabelPlan(plan, label_width, label_height, qr_x, qr_y, qr_size, trial.test_mode)


def immediate_plan(
    trial: TrialLabelInfo, label_width: float, label_height: float, reprint_number: int
) -> LabelPlan:
    """Layout of the immediate (syringe) label: the Annex VI A.2 reduced set."""
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
        _duplicate_line(flow, reprint_number, 5.6)
        flow.paragraph(f"EU CT {trial.eu_ct_number}", BOLD, 6.0, "EU CT number")  # (e)
        flow.paragraph(f"{CAPTION_PROTOCOL} {trial.protocol_code}", REGULAR, 5.6, "protocol code")  # (e)
        flow.fields(  # (f)
            [FieldSpec("kit", "Kit", BOLD, 9.0, room=width(_KIT_SAMPLE, BOLD, 9.0) + 1, underline=False)],
            REGULAR,
            5.6,
        )
        flow.fields([FieldSpec("unit", CAPTION_DAY, BOLD, 7.6, underline=False)], REGULAR, 5.6)  # (f)
        flow.fields([FieldSpec("site", CAPTION_SITE, BOLD, 6.0)], REGULAR, 5.6)  # (e)
        flow.fields([FieldSpec("subject", CAPTION_SUBJECT_SHORT, BOLD, 6.6)], REGULAR, 5.6)  # (f)
        batch_expiry = [FieldSpec("batch", CAPTION_BATCH, BOLD, 6.0, room=40)]  # (d)
        if not trial.immediate_omits_expiry:  # (k), LBL-02
            batch_expiry.append(FieldSpec("expiry", CAPTION_EXPIRY_SHORT, BOLD, 6.6, underline=False))
        flow.fields(batch_expiry, REGULAR, 5.6)
        flow.bilingual(trial.route, REGULAR, 5.6, "route of administration")  # (c)
        contact_phone = keep_together(trial.main_contact_phone)
        flow.paragraph(  # (a)
            f"{CAPTION_CONTACT} : {trial.main_contact_name} ({trial.sponsor_name}) {contact_phone}",
            REGULAR,
            5.4,
            "main contact",
        )
        flow.paragraph(
            f"{CAPTION_EMERGENCY_SHORT} : {keep_together(trial.emergency_phone)}",
            BOLD,
            5.4,
            "emergency phone",
        )
        flow.bilingual(trial.clinical_trial_use, REGULAR, 5.2, "clinical-trial-use statement")  # (i)
        return plan

    plan = fit(build, "immediate label", min_scale=MIN_FONT_SIZE / 5.2, max_scale=1.2)
    return LabelPlan(plan, label_width, label_height, qr_x, qr_y, qr_size, trial.test_mode)


def label_plan(
    kind: LabelKind, trial: TrialLabelInfo, label_width: float, label_height: float, reprint_number: int
) -> LabelPlan:
    """The layout plan of one kind of label."""
    if kind is LabelKind.OUTER:
        return outer_plan(trial, label_width, label_height, reprint_number)
    return immediate_plan(trial, label_width, label_height, reprint_number)


def define_label_form(
    canvas: Any, name: str, label: LabelPlan, *, dashed_outline: bool, outline: bool
) -> None:
    """Put the fixed content of a label design into a PDF form object named `name`."""
    canvas.beginForm(name, 0, 0, label.width, label.height)
    if label.test_mode:
        draw_box_watermark(canvas, label.width, label.height)
    if outline:
        canvas.saveState()
        canvas.setLineWidth(0.4)
        canvas.setStrokeGray(0.6)
        if dashed_outline:
            canvas.setDash(3, 2)
        canvas.rect(0, 0, label.width, label.height, stroke=1, fill=0)
        canvas.restoreState()
    label.plan.draw_fixed(canvas)
    canvas.endForm()


def check_labels_consistent(trial: TrialLabelInfo, labels: Sequence[KitLabel]) -> None:
    """Refuse labels that do not belong to `trial` or whose payloads differ in length (BLD-02, LBL-08)."""
    lengths = {len(label.qr_payload) for label in labels}
    for label in labels:
        trial_code = parse_payload(label.qr_payload).trial_code
        if trial_code != trial.trial_code:
            raise LabelDataError(
                f"kit {label.kit_number}: its QR payload is for trial {trial_code}, not {trial.trial_code}"
            )
    if len(lengths) > 1:
        raise LabelDataError("the QR payloads of one document must all have the same length")


def draw_label(
    canvas: Any,
    form_name: str,
    label: LabelPlan,
    kit: KitLabel,
    symbol: QrSymbol,
    *,
    fixed_length: bool = False,
) -> None:
    """Draw one label whose lower-left corner is the current origin."""
    canvas.doForm(form_name)
    slots = label.plan.slots
    values = {
        "kit": format_kit_number(kit.kit_number),
        # A unit that is not an injection day (the kit's own label, printed before the kit is
        # allocated to a day) leaves the day to be written in: never "Jour / Day : K" (issue 13).
        "unit": unit_display(kit.unit) if _UNIT_DAY.fullmatch(kit.unit) else "",
        "site": kit.site_code,
        "subject": kit.subject_number or "",
        "investigator": kit.investigator_name or "",
        "batch": kit.batch,
        "expiry": kit.expiry.text,
    }
    for name, slot in slots.items():
        if values[name]:
            slot.draw(canvas, values[name], name)
    draw_qr(canvas, symbol, label.qr_x, label.qr_y, label.qr_size, fixed_length=fixed_length)


def draw_page_footer(canvas: Any, lines: Sequence[str], page: int, pages: int, y: float) -> None:
    """VAL-04: document id, software version and page x/y at the foot of every page; TEST and DUPLICATA
    markings (LBL-12, LBL-15) on a line of their own above it."""
    canvas.saveState()
    *marks, identity = lines
    canvas.setFont(REGULAR, 6.5)
    canvas.setFillGray(0.25)
    canvas.drawCentredString(PAGE_WIDTH / 2, y, f"{identity} \u2013 Page {page}/{pages}")
    if marks:
        canvas.setFont(BOLD, 6.5)
        canvas.setFillColorRGB(*MARK_COLOR)
        canvas.drawCentredString(PAGE_WIDTH / 2, y + 9, " \u2013 ".join(marks))
    canvas.restoreState()


def render_label_sheet(
    trial: TrialLabelInfo,
    labels: Sequence[KitLabel],
    *,
    kind: LabelKind,
    document: DocumentMeta,
    layout: LabelLayout | None = None,
) -> bytes:
    """A PDF of `labels` laid out in a grid on A4 pages (page x/y, TEST and DUPLICATA markings)."""
    if not labels:
        raise LabelDataError("there are no labels to print")
    for label in labels:
        if not isinstance(label, KitLabel):
            raise LabelDataError("labels must be KitLabel objects")
    check_labels_consistent(trial, labels)
    grid = layout or (OUTER_LAYOUT if kind is LabelKind.OUTER else IMMEDIATE_LAYOUT)
    design = label_plan(kind, trial, grid.label_width, grid.label_height, document.reprint_number)
    title = "\u00c9tiquettes de kits / Kit labels"
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
    for line in footer:
        if width(line, BOLD, 6.5) > PAGE_WIDTH - 60:
            raise LabelLayoutError("the page footer is too long")
    form_name = f"label-{kind.value}"
    define_label_form(canvas, form_name, design, dashed_outline=False, outline=grid.outline)
    for page in range(pages):
        if trial.test_mode:
            draw_page_watermark(canvas)
        chunk = labels[page * grid.per_page : (page + 1) * grid.per_page]
        for index, kit in enumerate(chunk):
            x, y = grid.origin(index)
            canvas.saveState()
            canvas.translate(x, y)
            draw_label(canvas, form_name, design, kit, encode_qr(kit.qr_payload))
            canvas.restoreState()
        bottom_margin = (
            PAGE_HEIGHT - grid.top - grid.rows * grid.label_height - (grid.rows - 1) * grid.row_gap
        )
        draw_page_footer(canvas, footer, page + 1, pages, max(6.0, bottom_margin / 2 - 6))
        canvas.showPage()
    return finish(canvas, buffer)
