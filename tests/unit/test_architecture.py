"""The arrows point one way (architecture.md): pure cores import neither the web, the database
nor the app; only crypto.py imports `cryptography`; no route reads the arm column directly."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_PURE = ("flask", "sqlalchemy", "werkzeug", "alembic", "psycopg", "cryptography")


def python_files(*paths: str) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        path = ROOT / p
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def allowed_internal(path: Path, module: str) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    if rel.startswith("allocator/randomization/"):
        return module.startswith("allocator.randomization")
    if rel == "allocator/eligibility.py":
        return module == "allocator.trialdef"
    if rel == "allocator/trialdef.py":
        return False
    return False  # kits/ imports nothing of allocator


PURE = python_files("allocator/randomization", "allocator/eligibility.py", "allocator/trialdef.py", "kits")


def test_pure_cores_exist() -> None:
    # A gate that checks zero files is no gate.
    rels = {p.relative_to(ROOT).as_posix() for p in PURE}
    assert "allocator/eligibility.py" in rels and "allocator/trialdef.py" in rels
    assert any(r.startswith("allocator/randomization/") for r in rels)
    assert any(r.startswith("kits/") for r in rels)


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_pure_modules_import_no_framework_database_or_app(path: Path) -> None:
    for module in imports(path):
        top = module.split(".")[0]
        assert top not in FORBIDDEN_IN_PURE, f"{path.name} imports {module}"
        if top in ("allocator", "kits") and not module.startswith("kits"):
            assert allowed_internal(path, module), f"{path.relative_to(ROOT)} imports {module}"
        if path.relative_to(ROOT).as_posix().startswith("kits/"):
            assert top != "allocator", f"{path.name} imports {module}"


def test_only_crypto_imports_cryptography_and_argon2() -> None:
    offenders = []
    for path in python_files("allocator", "kits", "wsgi.py"):
        if path.relative_to(ROOT).as_posix() == "allocator/crypto.py":
            continue
        offenders += [
            f"{path.relative_to(ROOT)}: {m}"
            for m in imports(path)
            if m.split(".")[0] in ("cryptography", "argon2")
        ]
    assert offenders == []


def test_services_and_web_never_commit_outside_the_unit_of_work() -> None:
    offenders = []
    for path in python_files("allocator"):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "allocator/db.py":
            continue
        text = path.read_text(encoding="utf-8")
        if ".commit()" in text:
            offenders.append(rel)
    assert offenders == []


def test_the_web_layer_does_not_import_models_for_writing() -> None:
    """Handlers call services; only the guard reads models (to resolve a trial code)."""
    offenders = []
    for path in python_files("allocator/web"):
        for module in imports(path):
            if module.startswith("allocator.models") and path.name != "security.py":
                offenders.append(f"{path.name}: {module}")
    assert offenders == []


def test_only_the_arm_accessor_opens_arms_or_sealed_values() -> None:
    """BLD-08: one audited path to an arm. No other module calls open_arm or opens LISTS-sealed JSON."""
    offenders = []
    for path in python_files("allocator", "kits"):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ("allocator/crypto.py", "allocator/services/arm_access.py"):
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("open_arm(", "open_json(", "open_sealed(", "Purpose.LISTS"):
            if needle in text and not (
                needle in ("open_sealed(", "Purpose.LISTS") and rel in _SEALING_ALLOWED
            ):
                offenders.append(f"{rel}: {needle}")
    assert offenders == []


# Modules that seal (never open) LISTS values — audit entries, list slots and seeds, minimization
# decisions — or open non-arm sealed values (TOTP secrets).
_SEALING_ALLOWED = {
    "allocator/audit.py",
    "allocator/services/auth.py",
    "allocator/services/lists.py",
    "allocator/services/subjects/randomize.py",
}
