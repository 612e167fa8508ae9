"""Suite-wide fixtures: databases built by the migrations (SQLite always, PostgreSQL when
ALLOCATOR_TEST_DATABASE_URL is set), one rolled-back transaction per test, a key ring, a clock,
the service context and the Flask app. Also the requirement-marker check (VAL-01)."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar, cast

import coverage
import hypothesis
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from allocator import crypto, migrate
from allocator.db import Database
from allocator.services.context import ServiceContext
from allocator.settings import Environment, Settings
from tests.support import Clock, fast_apps

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "docs" / "requirements.md"
_REQ_ID = re.compile(r"^\| ([A-Z]{3}-\d{2}) \|", re.MULTILINE)
PG_URL = os.environ.get("ALLOCATOR_TEST_DATABASE_URL", "").strip()
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
T = TypeVar("T")
fast_apps.install()  # compiled URL builders and templates shared by the run's many applications
# No per-example deadline: on two busy workers an example past Hypothesis's 200 ms default fails
# the test without saying anything of the code under test. Examples stay bounded per test.
hypothesis.settings.register_profile("allocator", deadline=None)
hypothesis.settings.load_profile("allocator")


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


@contextmanager
def _coverage_paused() -> Iterator[None]:
    """Stop the run's coverage measurement (`--cov`) for the block, if there is one.

    Every started measurement is stopped, not only the latest: in an xdist worker two are running
    (pytest-cov's own, and the one its start-up hook begins in each new process), and stopping one
    resumes the one beneath it. Stopping only the latest left the leak crawl and the page-words
    walk measured line by line, at about twice their cost."""
    paused: list[coverage.Coverage] = []
    while (measuring := coverage.Coverage.current()) is not None:
        measuring.stop()
        paused.append(measuring)
    try:
        yield
    finally:
        for measuring in reversed(paused):
            measuring.start()


class Kept:
    """Costly worlds built once per test process, whatever order the tests run in. A module-scoped
    fixture is torn down and built again whenever the process runs another module's test (or the
    other backend's) in between, as random order and xdist make it do: the leak crawl and the
    page-words walk were each built twice per backend in CI (about 200 s and 120 s each time)."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, ...], object] = {}
        self._cleanups: list[Callable[[], None]] = []

    def get(self, key: tuple[str, ...], build: Callable[[], tuple[T, Callable[[], None]]]) -> T:
        """The value kept under `key`, built by `build` (value, cleanup) the first time.

        Coverage is not measured while a kept world is built: the leak crawl and the page-words
        walk request every route of the application thousands of times, for what the pages show,
        and measuring each line they run was a third of their time (the routes' own tests measure
        the code)."""
        if key not in self._values:
            with _coverage_paused():
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


@pytest.fixture(scope="session")
def _engines(_migrated_databases: dict[str, FreshDatabase]) -> Iterator[dict[str, Engine]]:
    """One engine per database URL for the whole run. An engine per test threw away SQLAlchemy's
    compiled-statement cache (it lives on the engine) and PostgreSQL's prepared statements (they
    live on the connection): every test compiled every statement again, about a tenth of the
    suite's time."""
    engines: dict[str, Engine] = {}  # disposed before the databases are dropped (they depend on them)
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture
def db(migrated: FreshDatabase, _engines: dict[str, Engine]) -> Iterator[Database]:
    """A Database whose every unit of work joins one outer transaction, rolled back at the end."""
    engine = _engines.get(migrated.url)
    if engine is None:
        made = Database.connect(migrated.url)
        if made.read_engine is not made.write_engine:
            made.read_engine.dispose()
        engine = _engines[migrated.url] = made.write_engine
    connection = engine.connect()
    outer = connection.begin()
    try:
        yield Database.bound_to(migrated.url, connection)
    finally:
        outer.rollback()
        connection.close()


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
