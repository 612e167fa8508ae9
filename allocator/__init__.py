"""allocator: randomization and blinded drug allocation for double-blind clinical trials.

This package file stays import-light on purpose: the pure cores (`allocator.randomization`,
`allocator.eligibility`, `allocator.trialdef`) must be importable without Flask or SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """Build the Flask application; see `allocator.app.create_app`."""
    from allocator.app import create_app as factory  # noqa: PLC0415 - keeps `import allocator` light

    return factory(*args, **kwargs)
