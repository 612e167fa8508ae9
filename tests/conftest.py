"""Suite-wide fixtures: databases built by the migrations (SQLite always, PostgreSQL when
ALLOCATOR_TEST_DATABASE_URL is set), one rolled-back transaction per test, a key ring, a clock,
the service context and the Flask app. Also the requirement-marker check (VAL-01)."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar, cast

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from allocator import crypto, migrate
from allocator.db import Database
from allocator.services.context import ServiceContext
from allocator.settings import Environment, Settings
from tests.support import Clock

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "docs" / "requirements.md"
_REQ_ID = re.compile(r"^\| ([A-Z]{3}-\d{2}) \|", re.MULTILINE)
PG_URL = os.environ.get("ALLOCATOR_TEST_DATABASE_URL", "").strip()
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
T = TypeVar("T")


def known_requirement_ids() -> frozenset[str]:
    """IDs of every requirement row in docs/requirements.md."""
    return frozenset(_REQ_ID.findall(REQUIREMENTS_FILE.read_text(encoding="utf-8")))


def pytest_report_header(config: pytest.Config) -> str:
    return f"allocator database backends: {', '.join(BACKENDS)}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A `req` marker naming an ID that is not in the requirements document is a collection error."""
    known = known_requirement_ids()
    for item in items:
        for marker in item.iter_markers("req"):
            unknown = [rid for rid in marker.args if rid not in known]
            if unknown or not marker.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: unknown requirement id(s) {unknown or '(none given)'}"
                )
            # In the JUnit XML (--junitxml) for `allocator validation-report` (VAL-01).
            item.user_properties.extend(("requirement", rid) for rid in marker.args)


def pg_url_with_schema(base: str, schema: str) -> str:
    url = make_url(base)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


class FreshDatabase:
    """A brand-new, migrated database of one backend; `drop()` removes it."""

    def __init__(self, backend: str, directory: Path) -> None:
        self.backend = backend
        if backend == "sqlite":
            self.url = f"sqlite:///{directory / f'allocator-{secrets.token_hex(4)}.db'}"
            self.schema = None
        else:
            self.schema = f"t_{secrets.token_hex(6)}"
            admin = create_engine(pg_url_with_schema(PG_URL, "public"))
            with admin.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {self.schema}"))
            admin.dispose()
            self.url = pg_url_with_schema(PG_URL, self.schema)

    def migrate(self) -> FreshDatabase:
        migrate.upgrade(self.url)
        return self

    def drop(self) -> None:
        if self.schema is not None:
            admin = create_engine(pg_url_with_schema(PG_URL, "public"))
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))
            admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Kept:
    """Costly worlds built once per test process, whatever order the tests run in. A module-scoped
    fixture is torn down and built again whenever the process runs another module's test (or the
    other backend's) in between, as random order and xdist make it do: the leak crawl and the
    page-words walk were each built twice per backend in CI (about 200 s and 120 s each time)."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, ...], object] = {}
        self._cleanups: list[Callable[[], None]] = []

    def get(self, key: tuple[str, ...], build: Callable[[], tuple[T, Callable[[], None]]]) -> T:
        """The value kept under `key`, built by `build` (value, cleanup) the first time."""
        if key not in self._values:
            value, cleanup = build()
            self._values[key] = value
            self._cleanups.append(cleanup)
        return cast(T, self._values[key])

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            cleanup()


@pytest.fixture(scope="session")
def kept() -> Iterator[Kept]:
    """Worlds kept for the whole run of this process; see Kept."""
    worlds = Kept()
    yield worlds
    worlds.close()


@pytest.fixture(scope="session")
def _migrated_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FreshDatabase]]:
    """The migrated database of each backend, made on first use and kept for the whole run.

    Not a fixture parametrized by backend: pytest keeps one instance of such a fixture at a time,
    so a run that alternates backends (pytest-xdist hands out whole modules, each with its SQLite
    and its PostgreSQL tests) would drop and migrate the database again at every switch."""
    databases: dict[str, FreshDatabase] = {}
    yield databases
    for fresh in databases.values():
        fresh.drop()


@pytest.fixture
def migrated(
    backend: str, _migrated_databases: dict[str, FreshDatabase], tmp_path_factory: pytest.TempPathFactory
) -> FreshDatabase:
    """The migrated database of the backend, shared by the whole run; tests roll their changes back."""
    if backend not in _migrated_databases:
        _migrated_databases[backend] = FreshDatabase(
            backend, tmp_path_factory.mktemp(f"db-{backend}")
        ).migrate()
    return _migrated_databases[backend]


@pytest.fixture
def fresh_database(backend: str, tmp_path: Path) -> Iterator[FreshDatabase]:
    """An empty (unmigrated) database of the current backend, dropped afterwards."""
    fresh = FreshDatabase(backend, tmp_path)
    yield fresh
    fresh.drop()


@pytest.fixture
def db(migrated: FreshDatabase) -> Iterator[Database]:
    """A Database whose every unit of work joins one outer transaction, rolled back at the end."""
    engine = Database.connect(migrated.url).write_engine
    connection = engine.connect()
    outer = connection.begin()
    try:
        yield Database.bound_to(migrated.url, connection)
    finally:
        outer.rollback()
        connection.close()
        engine.dispose()


@pytest.fixture(scope="session")
def key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys"
    crypto.KeyRing.create_missing(path)
    return path


@pytest.fixture(scope="session")
def ring(key_dir: Path) -> crypto.KeyRing:
    return crypto.KeyRing.load(key_dir)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings(migrated: FreshDatabase, key_dir: Path) -> Settings:
    return Settings(env=Environment.TEST, database_url=migrated.url, key_dir=key_dir)


@pytest.fixture
def ctx(db: Database, ring: crypto.KeyRing, settings: Settings, clock: Clock) -> ServiceContext:
    return ServiceContext.build(settings, db, ring, clock=clock, passwords=crypto.FAST_PASSWORD_HASHING)
