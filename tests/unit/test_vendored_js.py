"""The JavaScript shipped with the application from another project (issue 13: the bedside camera's
QR decoder) is pinned: the exact file of the stated release, with its licence beside it, served
from /static and referenced by no external URL."""

from __future__ import annotations

import hashlib
import re

from allocator import resources

JSQR_SHA256 = "bc40c8a15196236b2314db0856f72ca0b49980cd5413b8c852a7349f5fee0859"  # jsqr 1.4.0 dist/jsQR.js


def test_jsqr_is_the_pinned_release_with_its_licence() -> None:
    folder = resources.static() / "jsqr"
    assert hashlib.sha256((folder / "jsQR.js").read_bytes()).hexdigest() == JSQR_SHA256
    licence = (folder / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0" in licence
    assert "jsQR 1.4.0" in (folder / "README.txt").read_text(encoding="utf-8")


def test_the_pages_scripts_load_nothing_from_outside() -> None:
    script = (resources.static() / "scan.js").read_text(encoding="utf-8")
    assert not re.search(r"https?://", script)
    bedside = (resources.templates() / "subjects" / "bedside.html").read_text(encoding="utf-8")
    assert "filename='jsqr/jsQR.js'" in bedside and "http" not in bedside
