"""The JavaScript taken from other projects is pinned: the exact file of the stated release, with its
licence beside it. The bedside camera's QR decoder (issue 13) is served from /static and referenced
by no external URL; axe-core, which the accessibility browser test injects into the pages (issue 13),
lives with the tests and is never served."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from allocator import resources

JSQR_SHA256 = "bc40c8a15196236b2314db0856f72ca0b49980cd5413b8c852a7349f5fee0859"  # jsqr 1.4.0 dist/jsQR.js
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"  # axe-core 4.14.1 axe.min.js
AXE = Path(__file__).resolve().parents[1] / "e2e" / "axe"


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


def test_axe_core_is_the_pinned_release_with_its_licences() -> None:
    assert hashlib.sha256((AXE / "axe.min.js").read_bytes()).hexdigest() == AXE_SHA256
    assert (AXE / "axe.min.js").read_text(encoding="utf-8").startswith("/*! axe v4.14.1")
    assert "Mozilla Public License" in (AXE / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in (AXE / "LICENSE-3RD-PARTY.txt").read_text(encoding="utf-8")
    assert "axe-core 4.14.1" in (AXE / "README.txt").read_text(encoding="utf-8")


def test_axe_core_is_not_served() -> None:
    assert not list(resources.static().rglob("axe*.js"))
    assert not any("axe.min" in p.read_text(encoding="utf-8") for p in resources.templates().rglob("*.html"))
