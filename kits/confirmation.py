"""The randomization confirmation an investigator prints or files: trial identifiers, site,
subject and randomization numbers, the kit of each day, the time in UTC and in the site's zone, who
randomized, the 24/7 emergency contact. Never the arm: the input type has no arm field (BLD-01),
and the layout depends only on the number of days, so the document of an active and of a placebo
subject differ only in their identifiers (BLD-02)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from kits.model import DocumentMeta, TrialLabelInfo, check_aware
from kits.numbers import format_kit_number, normalize_kit_number
from kits.pdf import (
    BOLD,
    MARK_COLOR,
    PAGE_HEIGHT,
    PAGE_WIDTH,
    REGULAR,
    draw_page_watermark,
    duplicate_text,
    finish,
    new_canvas,
    utc_text,
)
from kits.text import check_printable, check_required

MARGIN = 56.0


@dataclass(frozen=True)
class ConfirmedKit:
    day: str
    kit_number: str


@dataclass(frozen=True)
class RandomizationConfirmation:
    site_code: str
    site_name: str
    subject_number: str
    screening_number: str
    randomization_number: str
    randomized_at: datetime
    randomized_by: str
    local_zone: str
    kits: tuple[ConfirmedKit, ...]
    document: DocumentMeta

    def __post_init__(self) -> None:
        for value, name in (
            (self.site_code, "site code"),
            (self.site_name, "site name"),
            (self.subject_number, "subject number"),
            (self.screening_number, "screening number"),
            (self.randomization_number, "randomization number"),
            (self.randomized_by, "randomized by"),
        ):
            check_required(value, name, 200)
        check_aware(self.randomized_at, "randomization time")
        ZoneInfo(self.local_zone)
        object.__setattr__(
            self, "kits", tuple(ConfirmedKit(k.day, normalize_kit_number(k.kit_number)) for k in self.kits)
        )


def render_randomization_confirmation(
    trial: TrialLabelInfo, confirmation: RandomizationConfirmation
) -> bytes:
    """One A4 page, French first, deterministic bytes (invariant mode)."""
    buffer = io.BytesIO()
    canvas = new_canvas(
        buffer,
        title="Confirmation de randomisation / Randomization confirmation",
        document=confirmation.document,
        software_version=trial.software_version,
        compress=False,
    )
    if trial.test_mode:
        draw_page_watermark(canvas)
    y = PAGE_HEIGHT - MARGIN

    def line(text: str, font: str = REGULAR, size: float = 10.5, gap: float = 15.0) -> None:
        nonlocal y
        canvas.setFont(font, size)
        canvas.drawString(MARGIN, y, check_printable(text, "confirmation text"))
        y -= gap

    local = confirmation.randomized_at.astimezone(ZoneInfo(confirmation.local_zone))
    line("CONFIRMATION DE RANDOMISATION / RANDOMIZATION CONFIRMATION", BOLD, 14, 22)
    if confirmation.document.is_reprint:  # LBL-12: a reprint is printed as a duplicate
        canvas.setFillColorRGB(*MARK_COLOR)
        line(duplicate_text(confirmation.document.reprint_number), BOLD, 11, 18)
        canvas.setFillColorRGB(0, 0, 0)
    line(trial.short_title, BOLD, 11)
    line(
        f"EU CT {trial.eu_ct_number} \u2013 Protocole / Protocol {trial.protocol_code}"
        + (f" \u2013 {trial.nct_number}" if trial.nct_number else "")
    )
    line(f"Promoteur / Sponsor : {trial.sponsor_name}", gap=24)
    line(f"Centre / Site : {confirmation.site_code} \u2013 {confirmation.site_name}")
    line(f"N\u00b0 de s\u00e9lection / Screening no. : {confirmation.screening_number}")
    line(f"N\u00b0 patient / Subject no. : {confirmation.subject_number}", BOLD, 13, 19)
    line(f"N\u00b0 de randomisation / Randomization no. : {confirmation.randomization_number}", BOLD, 13, 19)
    line(
        f"Randomis\u00e9 le / Randomized on : {utc_text(confirmation.randomized_at)} \u2013 "
        f"{local.strftime('%Y-%m-%d %H:%M:%S')} {confirmation.local_zone}"
    )
    line(f"Par / By : {confirmation.randomized_by}", gap=24)
    line("Kits attribu\u00e9s / Kits allocated", BOLD, 11, 18)
    for kit in confirmation.kits:
        line(f"{kit.day}    {format_kit_number(kit.kit_number)}", BOLD, 12, 17)
    y -= 10
    line(
        f"Urgence 24 h/24, lev\u00e9e d'aveugle / 24/7 emergency unblinding : {trial.emergency_phone}",
        BOLD,
        10.5,
        15,
    )
    line(f"Contact : {trial.main_contact_name} \u2013 {trial.main_contact_phone}")
    canvas.setFont(REGULAR, 7.5)
    canvas.drawString(
        MARGIN,
        36,
        check_printable(
            f"allocator {trial.software_version} \u2013 Document {confirmation.document.document_id} \u2013 "
            "Aucune donn\u00e9e d'identification directe / No direct identifier",
            "footer",
        ),
    )
    canvas.drawRightString(PAGE_WIDTH - MARGIN, 36, "Page 1/1")
    canvas.showPage()
    return finish(canvas, buffer)
