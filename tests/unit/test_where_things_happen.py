"""The README's "Where things happen" table stays true: every endpoint, route, service function and
template it names exists (issue 12). A newcomer finds any use case in one hop only if the hop lands."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API_PREFIX = "/api/v1"
ROUTE = re.compile(r"^(GET|POST) (/.*)$")
ENDPOINT = re.compile(r"^([a-z_]+)\.([a-z_]+)$")


def section(readme: str, title: str = "## Where things happen") -> str:
    start = readme.index(title)
    end = readme.find("\n## ", start + len(title))
    return readme[start : end if end >= 0 else None]


def named(text: str) -> list[str]:
    """The names in backquotes in the table's rows (not in the prose around it)."""
    rows = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    return re.findall(r"`([^`]+)`", rows)


def routes(web: Path) -> dict[str, set[str]]:
    """Blueprint module -> {(function name), "METHOD path", ...} from its route decorators."""
    out: dict[str, set[str]] = {}
    for path in sorted(web.glob("*.py")):
        found: set[str] = set()
        prefix = API_PREFIX if path.stem == "api" else ""
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)):
                    continue
                if deco.func.attr != "route" or not deco.args or not isinstance(deco.args[0], ast.Constant):
                    continue
                methods = ["GET"]
                for kw in deco.keywords:
                    if kw.arg == "methods" and isinstance(kw.value, ast.List):
                        methods = [str(e.value) for e in kw.value.elts if isinstance(e, ast.Constant)]
                found.add(node.name)
                found |= {f"{m} {prefix}{deco.args[0].value}" for m in methods}
        out[path.stem] = found
    return out


def problems(table: str, root: Path) -> list[str]:
    """Everything named in `table` that does not exist under `root`."""
    known = routes(root / "allocator" / "web")
    all_routes = set().union(*known.values())
    out = []
    for name in named(table):
        if ROUTE.match(name):
            if name not in all_routes:
                out.append(f"no route {name}")
        elif name.endswith(".html"):
            if not (root / "templates" / name).is_file():
                out.append(f"no template {name}")
        elif name.startswith("allocator."):
            try:
                importlib.import_module(name)
                continue
            except ImportError:
                module, _, attr = name.rpartition(".")
            try:
                if not hasattr(importlib.import_module(module), attr):
                    out.append(f"no {attr} in {module}")
            except ImportError:
                out.append(f"no module {module}")
        elif m := ENDPOINT.match(name):
            if m.group(2) not in known.get(m.group(1), set()):
                out.append(f"no endpoint {name}")
        elif not name.startswith(("allocator/", "tests/")):
            out.append(f"cannot check {name}")
    return out


TABLE = section((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_table_names_the_use_cases_of_the_brief() -> None:
    rows = [
        line for line in TABLE.splitlines() if line.startswith("| ") and not line.startswith("| Use case")
    ]
    cases = " ".join(r.split("|")[1].lower() for r in rows)
    for case in (
        "randomize",
        "dispense",
        "bedside scan",
        "receipt",
        "emergency unblinding",
        "list generation",
        "list approval and activation",
        "code-break sheets",
        "withdrawal",
        "correction",
        "reports",
        "audit trail",
        "user administration",
        "final unblinding",
    ):
        assert case in cases, case
    assert len(named(TABLE)) > 100


def test_everything_the_table_names_exists() -> None:
    assert problems(TABLE, ROOT) == []


@pytest.mark.parametrize(
    ("planted", "expected"),
    [
        ("`POST /trials/<trial>/teleport`", "no route POST /trials/<trial>/teleport"),
        ("`subjects/teleport.html`", "no template subjects/teleport.html"),
        (
            "`allocator.services.subjects.randomize.teleport`",
            "no teleport in allocator.services.subjects.randomize",
        ),
        ("`allocator.services.teleport.go`", "no module allocator.services.teleport"),
        ("`subjects.teleport`", "no endpoint subjects.teleport"),
        ("`teleport now`", "cannot check teleport now"),
    ],
)
def test_the_check_catches_a_name_that_does_not_exist(planted: str, expected: str) -> None:
    """A test that cannot fail is a defect: each kind of name, planted wrong, is reported."""
    good = (
        "| Randomize | `POST /trials/<trial>/randomize` `subjects.randomize` | "
        "`allocator.services.subjects.randomize.randomize` | `subjects/randomize.html` |"
    )
    assert problems(good, ROOT) == []
    assert problems(f"{good}\n| Broken | {planted} | | |", ROOT) == [expected]
