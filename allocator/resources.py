"""Where the files the service reads at run time are: Jinja templates, static files, the Alembic
migrations and the trial definitions shipped with it.

A wheel carries them inside the package, in `allocator/_bundled/` (setup.py maps the top-level
folders of the source tree there), so an installed service finds them wherever it runs from. A source
checkout (the editable install of `make venv`) has no `_bundled/`; there they are the folders next to
the package. Never the working directory: `allocator` behaves the same from any folder.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent  # the installed package (site-packages/allocator)
BUNDLED = PACKAGE / "_bundled"
# The checkout is recognised by its build files, so that an installed copy missing its bundled
# folders fails loudly instead of picking up whatever folder sits beside it in site-packages.
CHECKOUT = PACKAGE.parent
CHECKOUT_MARKERS = ("pyproject.toml", "setup.py")

TRIAL_SUFFIX = ".toml"


class ResourceMissing(RuntimeError):
    """The installation lacks a folder the service needs; the message says where it looked."""


def base() -> Path:
    """The folder holding templates/, static/, migrations/ and trials/."""
    if BUNDLED.is_dir():
        return BUNDLED
    if all((CHECKOUT / marker).is_file() for marker in CHECKOUT_MARKERS):
        return CHECKOUT
    raise ResourceMissing(
        f"neither {BUNDLED} (an installed wheel) nor a source checkout at {CHECKOUT} was found: "
        "reinstall allocator from its wheel"
    )


def folder(name: str) -> Path:
    path = base() / name
    if not path.is_dir():
        raise ResourceMissing(f"{path} is missing: reinstall allocator from its wheel")
    return path


def templates() -> Path:
    return folder("templates")


def static() -> Path:
    return folder("static")


def migrations() -> Path:
    return folder("migrations")


def trials() -> Path:
    return folder("trials")


def shipped_trials() -> dict[str, Path]:
    """The trial definitions shipped with the service, by name (the file name without `.toml`)."""
    return {path.stem: path for path in sorted(trials().glob(f"*{TRIAL_SUFFIX}"))}


def shipped_trial(name: str) -> Path | None:
    """The shipped definition called NAME (`ifn-gamma-pais` or `ifn-gamma-pais.toml`), if any."""
    return shipped_trials().get(name.removesuffix(TRIAL_SUFFIX))


def shipped_source_name(path: Path) -> str:
    """How a shipped definition is named in the audit trail: its place in the source tree
    (`trials/NAME.toml`), the same whichever folder the package is installed in."""
    return f"trials/{path.name}"
