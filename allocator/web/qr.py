"""QR codes shown in pages (TOTP enrolment), rendered server-side as SVG data URIs (no script)."""

from __future__ import annotations

import base64
import io

import qrcode
import qrcode.image.svg


def svg_data_uri(payload: str) -> str:
    image = qrcode.make(payload, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=4)
    buffer = io.BytesIO()
    image.save(buffer)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
