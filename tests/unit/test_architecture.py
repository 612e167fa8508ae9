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
    if rel.startswith("allocator/printing/"):  # renders what the randomization core computes
        return module.startswith(("allocator.randomization", "allocator.printing"))
    return False  # kits/ imports nothing of allocator


PURE = python_files(
    "allocator/randomization",
    "allocator/eligibility.py",
    "allocator/trialdef.py",
    "kits",
    "allocator/printing",
)


def test_pure_cores_exist() -> None:
    # A gate that checks zero files is no gate.
    rels = {p.relative_to(ROOT).as_posix() for p in PURE}
    assert "allocator/eligibility.py" in rels and "allocator/trialdef.py" in rels
    assert any(r.startswith("allocator/randomization/") for r in rels)
    assert any(r.startswith("kits/") for r in rels)
    assert any(r.startswith("allocator/printing/") for r in rels)


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
    "allocator/services/lists/generation.py",
    "allocator/services/lists/extension.py",
    "allocator/services/subjects/randomize.py",
}


# --- services that read like a table of contents (issue 12) ----------------------------------------
# A module imports another's public names only; a name that two modules need moves down (to
# services/lookups.py, or a small shared module) and loses its underscore. And no import circle, not
# even one hidden in a function-level import: a circle means two modules that are really one, or a
# look-up that belongs lower down.


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: Path, tops: tuple[str, ...]) -> tuple[dict[str, set[str]], list[str]]:
    """Edges module -> the modules of `tops` it imports (anywhere in the file, function-level
    imports included), and every private name imported from another module (`file: module._name`)."""
    modules = {module_name(root, p): p for top in tops for p in sorted((root / top).rglob("*.py"))}
    edges: dict[str, set[str]] = {}
    private: list[str] = []
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in modules:
                        targets.add(f"{node.module}.{alias.name}")
                    elif node.module in modules:
                        targets.add(node.module)
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            private.append(f"{path.relative_to(root).as_posix()}: {node.module}.{alias.name}")
        edges[name] = targets - {name}
    return edges, private


def import_circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return circles


CHECKED = ("allocator", "kits")


def test_the_import_graph_covers_the_services() -> None:
    edges, _ = import_graph(ROOT, CHECKED)
    assert "allocator.services.lookups" in edges and len(edges) > 50
    assert "allocator.services.lookups" in edges["allocator.services.subjects.randomize"]


def test_no_private_name_is_imported_across_modules() -> None:
    _, private = import_graph(ROOT, CHECKED)
    assert private == []


def test_no_import_circle_among_allocator_modules() -> None:
    edges, _ = import_graph(ROOT, CHECKED)
    assert import_circles(edges) == []


def _plant(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_checks_catch_a_planted_private_import_and_circle(tmp_path: Path) -> None:
    """A test that cannot fail is a defect: each check finds the violation planted for it, and
    passes the same tree without it."""
    clean = {
        "app/__init__.py": "",
        "app/low.py": "def shared() -> None: ...\ndef _own() -> None: ...\n",
        "app/high.py": "from app.low import shared\n",
        "app/pkg/__init__.py": "",
        "app/pkg/mod.py": "from app import low\n",
    }
    _plant(tmp_path, clean)
    edges, private = import_graph(tmp_path, ("app",))
    assert private == [] and import_circles(edges) == []
    assert edges["app.pkg.mod"] == {"app.low"}

    _plant(tmp_path, {"app/pkg/mod.py": "from app import low\nfrom app.low import _own\n"})
    _, private = import_graph(tmp_path, ("app",))
    assert private == ["app/pkg/mod.py: app.low._own"]

    # a circle through a function-level import (the usual way one hides) is still a circle
    _plant(
        tmp_path,
        {
            "app/pkg/mod.py": "from app import low\n",
            "app/low.py": "def shared() -> None:\n    from app.high import x\n",
            "app/high.py": "from app.low import shared\nx = 1\n",
        },
    )
    edges, _ = import_graph(tmp_path, ("app",))
    assert import_circles(edges) == [["app.high", "app.low"]]


# --- one safe CSV writer (issue 12, ACC-11) ---------------------------------------------------------


def bypassing(root: Path, top: str, owner: str, needles: tuple[str, ...]) -> list[str]:
    """Modules under `top`, other than `owner`, whose text holds one of `needles`: code that does by
    hand what the one helper `owner` is there for."""
    return [
        rel
        for path in sorted((root / top).rglob("*.py"))
        if (rel := path.relative_to(root).as_posix()) != f"{top}/{owner}"
        and any(needle in path.read_text(encoding="utf-8") for needle in needles)
    ]


def csv_writers(root: Path, top: str = "allocator") -> list[str]:
    """Modules that write CSV themselves instead of through allocator/printing/safe_csv.py."""
    return bypassing(root, top, "printing/safe_csv.py", ("csv.writer(", "csv.DictWriter("))


def test_every_csv_is_written_by_the_safe_writer() -> None:
    assert (ROOT / "allocator/printing/safe_csv.py").is_file()
    assert csv_writers(ROOT) == []


def test_the_csv_check_catches_a_planted_writer(tmp_path: Path) -> None:
    _plant(tmp_path, {"allocator/printing/safe_csv.py": "w = csv.writer(b)\n", "allocator/a.py": "x = 1\n"})
    assert csv_writers(tmp_path) == []
    _plant(tmp_path, {"allocator/services/b.py": "w = csv.writer(buffer, lineterminator='\\n')\n"})
    assert csv_writers(tmp_path) == ["allocator/services/b.py"]


# --- one chart drawer (issue 12) -----------------------------------------------------------------------


def chart_writers(root: Path, top: str = "allocator") -> list[str]:
    """Modules that write SVG or reportlab drawings themselves instead of through printing/charts.py."""
    needles = ("<svg", "<polyline", "<line ", "<text ", "reportlab.graphics")
    return bypassing(root, top, "printing/charts.py", needles)


def test_every_chart_is_drawn_by_the_one_chart_module() -> None:
    assert (ROOT / "allocator/printing/charts.py").is_file()
    assert chart_writers(ROOT) == []


def test_the_chart_check_catches_a_planted_writer(tmp_path: Path) -> None:
    _plant(tmp_path, {"allocator/printing/charts.py": "s = '<svg'\n", "allocator/a.py": "x = 1\n"})
    assert chart_writers(tmp_path) == []
    _plant(tmp_path, {"allocator/printing/b.py": "from reportlab.graphics.shapes import Drawing\n"})
    _plant(tmp_path, {"allocator/services/c.py": "parts = ['<polyline points=\"0,0\"/>']\n"})
    assert chart_writers(tmp_path) == ["allocator/printing/b.py", "allocator/services/c.py"]
