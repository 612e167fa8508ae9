"""The kits library stays pure and arm-blind: no web, database, application or key-handling imports,
no non-cryptographic randomness, and no identifier that could carry an arm (BLD-01, BLD-03)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

KITS_DIR = Path(__file__).resolve().parents[3] / "kits"
FORBIDDEN_MODULES = {
    "flask",
    "sqlalchemy",
    "allocator",
    "cryptography",
    "random",
    "numpy",
    "werkzeug",
    "requests",
}
ARM_TOKENS = {"arm", "arms", "treatment", "placebo", "active", "verum", "allocation", "unblind", "unblinded"}


def _sources() -> list[Path]:
    files = sorted(KITS_DIR.glob("*.py"))
    assert len(files) >= 8
    return files


@pytest.mark.req("BLD-01", "BLD-03")
@pytest.mark.parametrize("path", _sources(), ids=lambda path: path.name)
def test_module_imports_nothing_outside_the_pure_library(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN_MODULES, imported & FORBIDDEN_MODULES


@pytest.mark.req("BLD-01", "BLD-03")
@pytest.mark.parametrize("path", _sources(), ids=lambda path: path.name)
def test_no_identifier_names_an_arm(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
    offending = {name for name in names if set(name.lower().split("_")) & ARM_TOKENS}
    assert not offending, offending
