"""Keep the interface's French catalogue in step with the code (English is the source language).

    python tools/translations.py update   extract every message of the code and the templates
                                          (babel.cfg) into messages.pot, merge it into the French
                                          catalogue (new messages untranslated, gone ones dropped)
                                          and compile the .mo that the service reads
    python tools/translations.py check    exit 1, listing them, when a message has no French
                                          translation (or a fuzzy one), or the .mo is not the
                                          compiled .po; changes nothing

The compiled .mo is committed so that the wheel carries it without a build step (setup.py).
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "babel.cfg"
CATALOGUES = ROOT / "allocator" / "translations"
TEMPLATE = CATALOGUES / "messages.pot"
LANGUAGES = ("fr",)
KEYWORDS = ("lazy_gettext", "N_")


def po_path(language: str) -> Path:
    return CATALOGUES / language / "LC_MESSAGES" / "messages.po"


def mo_path(language: str) -> Path:
    return CATALOGUES / language / "LC_MESSAGES" / "messages.mo"


def extract(output: Path) -> Catalog:
    """Every message of the code and the templates, written to `output` and returned."""
    keywords = [arg for keyword in KEYWORDS for arg in ("-k", keyword)]
    CommandLineInterface().run(  # type: ignore[no-untyped-call]
        [
            "pybabel",
            "--quiet",
            "extract",
            "-F",
            str(CONFIG),
            *keywords,
            "--no-location",
            "--sort-output",
            "--project",
            "allocator",
            "-o",
            str(output),
            str(ROOT),
        ]
    )
    with output.open("rb") as handle:
        return read_po(handle)


def read(language: str) -> Catalog:
    with po_path(language).open("rb") as handle:
        return read_po(handle, locale=language)


def compiled(catalog: Catalog) -> bytes:
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    return buffer.getvalue()


def untranslated(template: Catalog, catalog: Catalog) -> list[str]:
    """The messages of `template` that `catalog` does not translate (missing, empty or fuzzy)."""
    missing = []
    for message in template:
        if not message.id:
            continue
        found = catalog.get(message.id, message.context)
        strings = found.string if found is not None else None
        values = strings if isinstance(strings, tuple | list) else (strings,)
        if found is None or found.fuzzy or not all(values):
            key = message.id if isinstance(message.id, str) else message.id[0]
            missing.append(key)
    return missing


def update() -> None:
    template = extract(TEMPLATE)
    for language in LANGUAGES:
        path = po_path(language)
        if path.exists():
            catalog = read(language)
            catalog.update(template, no_fuzzy_matching=True)
            catalog.obsolete.clear()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            catalog = Catalog(locale=language, project="allocator")
            catalog.update(template, no_fuzzy_matching=True)
        with path.open("wb") as handle:
            write_po(handle, catalog, omit_header=False, sort_output=True, width=100, no_location=True)
        mo_path(language).write_bytes(compiled(read(language)))
        missing = untranslated(template, read(language))
        print(f"{language}: {len(template) - len(missing)} of {len(template)} messages translated")


def problems() -> list[str]:
    """What `check` reports: untranslated messages and stale compiled catalogues."""
    found: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        template = extract(Path(scratch) / "messages.pot")
    for language in LANGUAGES:
        if not po_path(language).exists():
            found.append(f"{language}: no catalogue at {po_path(language)}")
            continue
        catalog = read(language)
        found += [
            f"{language}: no translation for {message!r}" for message in untranslated(template, catalog)
        ]
        if not mo_path(language).exists() or mo_path(language).read_bytes() != compiled(catalog):
            found.append(f"{language}: {mo_path(language)} is not the compiled catalogue: run update")
    return found


def main(argv: list[str]) -> int:
    if argv[1:] == ["update"]:
        update()
        return 0
    if argv[1:] == ["check"]:
        found = problems()
        for line in found:
            print(line)
        return 1 if found else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
