"""Static checks on the randomization package: no weak or time/PID-based randomness (RND-04), and a
pure core that imports no web, database or crypto framework and nothing else of the application."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "allocator" / "randomization"

# Modules whose import alone is a finding in the randomization core.
FORBIDDEN_MODULES = {
    "random": "the random module is not a CSPRNG and invites seeding (RND-04)",
    "time": "time values must never feed a seed (RND-04)",
    "uuid": "uuid1 mixes time and host identifiers (RND-04)",
    "numpy.random": "numpy's generators are not a CSPRNG (RND-04)",
    "flask": "the core is pure: no web framework",
    "werkzeug": "the core is pure: no web framework",
    "sqlalchemy": "the core is pure: no database layer",
    "cryptography": "the core uses only stdlib hmac/hashlib/secrets",
}
# Attribute or function names that betray time- or process-based seeding.
FORBIDDEN_NAMES = {
    "getpid": "process ids must never feed a seed (RND-04)",
    "getppid": "process ids must never feed a seed (RND-04)",
    "time_ns": "time values must never feed a seed (RND-04)",
    "perf_counter": "time values must never feed a seed (RND-04)",
    "monotonic": "time values must never feed a seed (RND-04)",
    "utcnow": "time values must never feed a seed (RND-04)",
    "default_rng": "numpy's generators are not a CSPRNG (RND-04)",
}


def _blocked(module: str) -> str | None:
    for name, reason in FORBIDDEN_MODULES.items():
        if module == name or module.startswith(name + "."):
            return reason
    if module == "allocator" or (
        module.startswith("allocator.") and not module.startswith("allocator.randomization")
    ):
        return "the core imports nothing of the application outside allocator.randomization"
    return None


def violations(source: str, filename: str = "<source>") -> list[str]:
    """Every forbidden import or name in ``source``, as ``file:line: reason`` strings."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        line = getattr(node, "lineno", 0)
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                found.append(f"{filename}:{line}: relative import leaves the package")
            base = node.module or ""
            modules = [base] + [f"{base}.{alias.name}" for alias in node.names] if node.level == 0 else []
        for module in modules:
            reason = _blocked(module)
            if reason:
                found.append(f"{filename}:{line}: import of {module}: {reason}")
        name = (
            node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        )
        if name in FORBIDDEN_NAMES:
            found.append(f"{filename}:{line}: {name}: {FORBIDDEN_NAMES[name]}")
        if name == "seed" and isinstance(node, ast.Attribute):
            found.append(f"{filename}:{line}: .seed(...) call: re-seeding a generator (RND-04)")
    return found


@pytest.mark.req("RND-04")
@pytest.mark.parametrize(
    "bad",
    [
        "import random",
        "from random import SystemRandom",
        "import numpy.random as npr",
        "from numpy import random",
        "import time\nseed = int(time.time())",
        "from time import time_ns",
        "import os\nseed = os.getpid().to_bytes(4, 'big')",
        "rng.seed(42)",
        "from datetime import datetime\nx = datetime.utcnow()",
        "from flask import current_app",
        "import sqlalchemy.orm",
        "from cryptography.hazmat.primitives import hashes",
        "from allocator.models import List",
        "from allocator import settings",
        "from ..services import allocation",
    ],
)
def test_the_checker_catches_each_forbidden_pattern(bad: str) -> None:
    assert violations(bad)


@pytest.mark.req("RND-04")
def test_the_checker_accepts_the_allowed_imports() -> None:
    good = "\n".join(
        (
            "import hmac",
            "import hashlib",
            "import secrets",
            "from allocator.randomization.stream import Stream",
            "from . import blocks",
            "from .stream import Domain",
        )
    )
    assert violations(good) == []


@pytest.mark.req("RND-04")
def test_no_weak_time_or_pid_based_randomness_and_no_framework_in_the_package() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert {"stream.py", "blocks.py", "minimization.py", "kitlist.py"} <= {f.name for f in files}
    found = [
        v
        for f in files
        for v in violations(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE.parent)))
    ]
    assert found == []


@pytest.mark.req("RND-04")
def test_the_only_seed_source_is_the_secrets_module() -> None:
    stream = (PACKAGE / "stream.py").read_text(encoding="utf-8")
    assert "secrets.token_bytes(SEED_BYTES)" in stream
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "os.urandom" not in text and "SystemRandom" not in text, path.name


@pytest.mark.req("RND-04")
def test_importing_the_package_loads_no_web_database_or_crypto_framework() -> None:
    # (`random` itself is loaded by the stdlib `secrets` module for SystemRandom, so it is checked
    # statically above rather than here.)
    import subprocess
    import sys

    code = (
        "import sys, allocator.randomization\n"
        "bad = sorted(m for m in ('flask', 'sqlalchemy', 'cryptography', 'werkzeug') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PACKAGE.parents[1], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
