"""allocator.resources finds templates, static files, migrations and shipped trial definitions through
the package: inside an installed wheel (allocator/_bundled/), else in the source checkout next to the
package; never through the working directory. The wheel itself is checked by .ci/wheel-check."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from allocator import resources

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("templates", "static", "migrations", "trials")


def make_tree(base: Path, *, marker: str = "") -> None:
    for name in FOLDERS:
        (base / name).mkdir(parents=True)
    if marker:
        for file in resources.CHECKOUT_MARKERS:
            (base / file).write_text(marker, encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for site-packages/allocator, whose resources module we point at."""
    package = tmp_path / "site-packages" / "allocator"
    package.mkdir(parents=True)
    monkeypatch.setattr(resources, "PACKAGE", package)
    monkeypatch.setattr(resources, "BUNDLED", package / "_bundled")
    monkeypatch.setattr(resources, "CHECKOUT", package.parent)
    return package


def test_in_this_checkout_the_top_level_folders_are_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # the working directory plays no part
    assert resources.base() == ROOT
    assert (resources.templates() / "base.html").is_file()
    assert (resources.static() / "style.css").is_file()
    assert (resources.migrations() / "env.py").is_file()
    assert resources.shipped_trials() == {
        "ifn-gamma-pais": ROOT / "trials" / "ifn-gamma-pais.toml",
        "immunosepsis-4": ROOT / "trials" / "immunosepsis-4.toml",
    }


def test_an_installed_package_uses_its_bundled_folders(site: Path) -> None:
    make_tree(site / "_bundled")
    (site / "_bundled" / "trials" / "other-trial.toml").write_text("", encoding="utf-8")
    make_tree(site.parent, marker="not this one")  # a checkout beside it must not win
    assert resources.base() == site / "_bundled"
    assert resources.migrations() == site / "_bundled" / "migrations"
    assert resources.shipped_trial("other-trial") == site / "_bundled" / "trials" / "other-trial.toml"
    assert resources.shipped_trial("other-trial.toml") == site / "_bundled" / "trials" / "other-trial.toml"
    assert resources.shipped_trial("ifn-gamma-pais") is None


def test_folders_beside_an_installed_package_are_not_taken_for_a_checkout(site: Path) -> None:
    # site-packages may well hold a `templates` folder of another distribution.
    make_tree(site.parent)
    with pytest.raises(resources.ResourceMissing, match="reinstall allocator"):
        resources.templates()


def test_a_bundle_missing_one_folder_says_which(site: Path) -> None:
    make_tree(site / "_bundled")
    (site / "_bundled" / "static").rmdir()
    assert resources.templates() == site / "_bundled" / "templates"
    with pytest.raises(resources.ResourceMissing, match=r"_bundled/static is missing"):
        resources.static()


def test_a_shipped_definition_keeps_its_source_tree_name_in_the_audit_trail(site: Path) -> None:
    make_tree(site / "_bundled")
    shipped = site / "_bundled" / "trials" / "ifn-gamma-pais.toml"
    assert resources.shipped_source_name(shipped) == "trials/ifn-gamma-pais.toml"


def test_alembic_ini_and_the_service_use_the_same_migrations() -> None:
    """alembic.ini serves the `alembic` command in a checkout; allocator.migrate configures Alembic
    in code for the service. Both must name the same folder."""
    ini = configparser.ConfigParser()
    ini.read(ROOT / "alembic.ini", encoding="utf-8")
    location = ini.get("alembic", "script_location", vars={"here": str(ROOT)})
    assert Path(location) == resources.migrations()
