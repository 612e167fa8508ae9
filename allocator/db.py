"""Engine, sessions and the unit of work.

Services own the transaction (architecture.md): a use case opens `db.unit_of_work()`, does all its
reads and writes — including the audit entry — and the block commits only if nothing raised.
Nothing else commits.

SQLite: WAL mode, foreign keys on, a busy timeout, and `BEGIN IMMEDIATE` for every write
transaction, so that two writers serialise at the start instead of failing at commit with
"database is locked" after having read stale data (RND-08). pysqlite's own transaction handling
is switched off so that the BEGIN we emit is the one that runs. Within one process, writers also
queue in arrival order on a lock taken before BEGIN IMMEDIATE (`WriterQueue`): SQLite's busy
handler makes a waiting writer sleep in growing steps and retry, so under load a writer could
wait seconds while later arrivals got in first; the queue hands the database to the next thread
the moment the previous transaction ends. Writers of other processes still meet at the busy
handler, which stays the guarantee.

PostgreSQL (psycopg 3): READ COMMITTED; allocation services lock the rows they consume with
`SELECT ... FOR UPDATE`.

Bounded waits (issue 14): the application sets PostgreSQL's `lock_timeout` and
`statement_timeout` on each connection and bounds the wait for a pooled connection; a wait that
runs out raises, the unit of work rolls back (nothing half-written), and `is_busy` tells the web
layer to answer 503 with Retry-After instead of 500. On SQLite the busy timeout bounds the wait.

Prepared statements (issue 16): psycopg 3 prepares a statement on the server once it has run
`prepare_threshold` times on a connection, and forgets every prepared statement (DEALLOCATE ALL)
whenever it sends ROLLBACK. Read-only transactions therefore end with COMMIT (`reading`), so that
the guard's and the allocation's statements stay prepared across requests; the pool's
reset-on-return sends nothing after a transaction that already ended. The request guard's read
runs in autocommit (`reading(autocommit=True)`): no BEGIN and COMMIT around its two statements,
which read what they would read in a READ COMMITTED transaction. There is no ping per
checkout (`pool_pre_ping` costs a round trip on every request): a connection the server dropped
fails its first statement, SQLAlchemy's disconnect handling invalidates it and the older ones of
the pool, a read is retried once on a fresh connection (`read`), and a write is never retried
blindly: it answers 503 (`is_busy`), and the client retries with its Idempotency-Key.
"""

from __future__ import annotations

import threading
from collections import deque, namedtuple
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from psycopg import pq
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


class WriterQueue:
    """A first-come, first-served lock for the write transactions of one SQLite database in this
    process. Re-entrant per thread: a unit of work opened inside another (which SQLite itself
    would refuse after the busy timeout) behaves as it did without the queue."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiting: deque[tuple[int, threading.Lock]] = deque()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return
            if self._owner is None:
                self._owner, self._depth = me, 1
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiting.append((me, turn))
        turn.acquire()  # released by `release`, which has already made this thread the owner

    def release(self) -> None:
        with self._mutex:
            self._depth -= 1
            if self._depth:
                return
            if self._waiting:
                # Hand over directly, so that no thread arriving now can overtake the queue.
                self._owner, turn = self._waiting.popleft()
                self._depth = 1
                turn.release()
            else:
                self._owner = None

    @contextmanager
    def turn(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


_WRITER_QUEUES: dict[str, WriterQueue] = {}
_WRITER_QUEUES_LOCK = threading.Lock()


def _writer_queue(url: str) -> WriterQueue:
    """One queue per SQLite database file in this process (several Database objects may share it)."""
    database = make_url(url).database or ""
    key = str(Path(database).resolve()) if database and database != ":memory:" else url
    with _WRITER_QUEUES_LOCK:
        return _WRITER_QUEUES.setdefault(key, WriterQueue())


def _prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_engine(url: str, *, begin: str, pooled: bool = True) -> Engine:
    _prepare_sqlite_file(url)
    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    if pooled:
        engine = create_engine(url, connect_args=connect_args)
    else:
        engine = create_engine(url, connect_args=connect_args, poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite (see module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # FULL: an acknowledged allocation survives a power cut (DIB-01 "enduring").
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one process's use of PostgreSQL: at most `pool_size + max_overflow`
    connections, `pool_timeout_s` to wait for one, and per-connection `lock_timeout` and
    `statement_timeout` in milliseconds (0: no limit, PostgreSQL's default)."""

    pool_size: int
    max_overflow: int
    pool_timeout_s: float
    lock_timeout_ms: int
    statement_timeout_ms: int

    @property
    def connections(self) -> int:
        return self.pool_size + self.max_overflow


def _set_timeouts(engine: Engine, limits: Limits) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Session-level settings: they hold for every transaction on this connection. The values
        # are integers from the validated settings, never user input.
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {int(limits.lock_timeout_ms)}")
            cursor.execute(f"SET statement_timeout = {int(limits.statement_timeout_ms)}")
        dbapi_connection.commit()


# SQLSTATEs of waits that ran out or transactions the server chose to abort; retrying later can
# succeed: lock_not_available, query_canceled (statement_timeout), serialization_failure,
# deadlock_detected.
_BUSY_SQLSTATES = frozenset({"55P03", "57014", "40001", "40P01"})


def is_busy(error: BaseException) -> bool:
    """Whether `error` means "the database is busy, try again": a lock or statement timeout, a
    deadlock victim, SQLite's "database is locked", no pooled connection free in time, or a
    connection the server dropped (already invalidated: the retry gets a fresh one)."""
    if isinstance(error, sa_exc.TimeoutError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        if getattr(error.orig, "sqlstate", None) in _BUSY_SQLSTATES:
            return True
        return "database is locked" in str(error.orig)
    return False


# Connections kept free for the command line, migrations and an operator's psql.
SPARE_CONNECTIONS = 5


def connection_budget_problem(
    *, workers: int, limits: Limits, max_connections: int, reserved: int
) -> str | None:
    """Why `workers` processes, each holding up to `limits.connections`, would not fit in the
    server's `max_connections` (less its superuser-reserved ones and SPARE_CONNECTIONS); None when
    they fit."""
    needed = workers * limits.connections
    available = max_connections - reserved - SPARE_CONNECTIONS
    if needed <= available:
        return None
    fits = max(available // limits.connections, 0)
    return (
        f"{workers} workers x {limits.connections} connections each (pool {limits.pool_size} + "
        f"overflow {limits.max_overflow}) = {needed} exceed what the server allows: max_connections "
        f"{max_connections} - {reserved} reserved - {SPARE_CONNECTIONS} spare = {available}. "
        f"Use --workers {fits} or fewer, a smaller ALLOCATOR_DB_POOL_SIZE, or raise max_connections."
    )


def server_connection_limit(url: str) -> tuple[int, int]:
    """PostgreSQL's max_connections and superuser_reserved_connections."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            max_connections = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
            reserved = int(conn.exec_driver_sql("SHOW superuser_reserved_connections").scalar_one())
    finally:
        engine.dispose()
    return max_connections, reserved


@dataclass(frozen=True, slots=True)
class Database:
    """Holds the engines and session factories of one database. Passed explicitly to services."""

    url: str
    write_engine: Engine
    read_engine: Engine
    _write_sessions: sessionmaker[Session]
    _read_sessions: sessionmaker[Session]
    _writers: WriterQueue | None = None  # SQLite: the writers of this process queue here
    _bound: Connection | None = None  # bound_to: the outer connection every session joins
    # PostgreSQL: read sessions whose connection is in autocommit (see `reading`); None elsewhere.
    _autocommit_sessions: sessionmaker[Session] | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.write_engine.dialect.name == "sqlite"

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    @classmethod
    def connect(cls, url: str, *, pool_size: int = 5, limits: Limits | None = None) -> Database:
        """`limits` bound the waits on PostgreSQL (see `Limits`); without them, the pool holds
        `pool_size` connections plus twice as many overflow ones and nothing times out."""
        if url.startswith("sqlite"):
            write = _sqlite_engine(url, begin="BEGIN IMMEDIATE")
            read = _sqlite_engine(url, begin="BEGIN")
        elif limits is None:
            write = create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2)
            read = write
        else:
            write = create_engine(
                url,
                pool_size=limits.pool_size,
                max_overflow=limits.max_overflow,
                pool_timeout=limits.pool_timeout_s,
            )
            _set_timeouts(write, limits)
            read = write
        return cls.from_engines(url, write, read)

    @classmethod
    def from_engines(cls, url: str, write: Engine, read: Engine) -> Database:
        return cls(
            url=url,
            write_engine=write,
            read_engine=read,
            _write_sessions=sessionmaker(bind=write, expire_on_commit=False, autoflush=True),
            _read_sessions=sessionmaker(bind=read, expire_on_commit=False, autoflush=False),
            _writers=_writer_queue(url) if write.dialect.name == "sqlite" else None,
            _autocommit_sessions=(
                sessionmaker(
                    bind=read.execution_options(isolation_level="AUTOCOMMIT"),
                    expire_on_commit=False,
                    autoflush=False,
                    info={_AUTOCOMMIT: True},
                )
                if read.dialect.name == "postgresql"
                else None
            ),
        )

    @classmethod
    def bound_to(cls, url: str, connection: Connection) -> Database:
        """A Database whose sessions join an outer transaction on `connection` through savepoints.

        Used by the test suite: each test runs inside one transaction that is rolled back at the
        end, while services still "commit" (release their savepoint) as they do in production."""
        factory = sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        engine = connection.engine
        return cls(
            url=url,
            write_engine=engine,
            read_engine=engine,
            _write_sessions=factory,
            _read_sessions=factory,
            _bound=connection,
        )

    @contextmanager
    def shared_transaction(self) -> Iterator[SharedTransaction]:
        """One write transaction that every `unit_of_work` and `reading` of this thread (and this
        Database) joins through savepoints until the block ends, so that something the caller adds
        afterwards (an idempotency record holding the response) commits or rolls back with the
        service's own writes. The block commits only when the caller called `keep()` and nothing
        raised; a service that "commits" inside releases its savepoint only."""
        with self._writer_turn():
            connection = self._bound if self._bound is not None else self.write_engine.connect()
            try:
                transaction = connection.begin_nested() if self._bound is not None else connection.begin()
                shared = SharedTransaction(
                    sessionmaker(
                        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
                    )
                )
                token = _SHARED.set((self, shared))
                try:
                    yield shared
                except BaseException:
                    transaction.rollback()
                    raise
                finally:
                    _SHARED.reset(token)
                if shared.kept:
                    transaction.commit()
                else:
                    transaction.rollback()
            finally:
                if self._bound is None:
                    connection.close()

    def _sessions(self, default: sessionmaker[Session]) -> sessionmaker[Session]:
        shared = _SHARED.get()
        if shared is not None and shared[0] is self:
            return shared[1].sessions
        return default

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """A write transaction: commits when the block ends normally, rolls back on any exception."""
        with self._sessions(self._write_sessions)() as session, self._writer_turn():
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        if self._writers is None:
            yield
        else:
            with self._writers.turn():
                yield

    @contextmanager
    def reading(self, *, autocommit: bool = False) -> Iterator[Session]:
        """A read-only transaction. Closing it rolls back anything flushed, and leaves the loaded
        objects usable (detached, not expired) by the caller.

        A transaction that wrote nothing ends with COMMIT, not ROLLBACK: on PostgreSQL a ROLLBACK
        makes psycopg discard every prepared statement of the connection (module docstring).

        `autocommit`: on PostgreSQL, the statements run without BEGIN and COMMIT, each on its own,
        two round trips fewer (issue 16: the request guard's read). Under READ COMMITTED every
        statement of a transaction takes its own snapshot anyway, so a read sees the same rows
        either way; what is lost is the rollback of a flush, so such a session refuses to flush
        (`_refuse_autocommit_flush`). The connection is back in transactions when it returns to
        the pool. SQLite, a shared transaction and a bound test database read in a transaction."""
        default = self._read_sessions
        if autocommit and self._autocommit_sessions is not None:
            default = self._autocommit_sessions
        with self._sessions(default)() as session:
            yield session
            if session.in_transaction() and not session.info.get(_FLUSHED):
                session.commit()

    def read(self, work: Callable[[Session], T], *, autocommit: bool = False) -> T:
        """`work(session)` in a read-only transaction (`reading`, `autocommit` as there), run once
        more on a fresh connection when the first attempt met a connection the server had dropped
        (after a restart, a failover or an idle timeout). Only for reads: running `work` twice must
        be harmless."""
        try:
            with self.reading(autocommit=autocommit) as session:
                return work(session)
        except sa_exc.DBAPIError as error:
            if not error.connection_invalidated or _SHARED.get() is not None or self._bound is not None:
                raise
        with self.reading(autocommit=autocommit) as session:
            return work(session)

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


class SharedTransaction:
    """See `Database.shared_transaction`."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.kept = False

    def keep(self) -> None:
        self.kept = True


# Set in session.info by a flush: a read session that flushed something rolls it back on close.
_FLUSHED = "allocator_flushed"
# In session.info of a read session in autocommit (`Database.reading`): it must never flush.
_AUTOCOMMIT = "allocator_autocommit"


@event.listens_for(Session, "before_flush")
def _refuse_autocommit_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.info.get(_AUTOCOMMIT) and (session.new or session.dirty or session.deleted):
        raise RuntimeError("a read in autocommit cannot write: each statement would commit at once")


@event.listens_for(Session, "after_flush")
def _remember_flush(session: Session, _context: Any) -> None:
    session.info[_FLUSHED] = True


@event.listens_for(Session, "after_soft_rollback")
def _forget_flush(session: Session, _transaction: Any) -> None:
    session.info.pop(_FLUSHED, None)


_SHARED: ContextVar[tuple[Database, SharedTransaction] | None] = ContextVar("allocator_shared", default=None)


def connect_once(url: str) -> Engine:
    """A short-lived engine without pooling (for migrations and CLI checks)."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, begin="BEGIN IMMEDIATE", pooled=False)
    return create_engine(url, poolclass=NullPool)


def _insert(executor: Session | Connection) -> Any:
    bind = executor if isinstance(executor, Connection) else executor.get_bind()
    return postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert


def insert_if_absent(executor: Session | Connection, model: type[Any], values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, so that two transactions racing to create the same
    counter row (audit chain head, login throttle) do not fail; follow with SELECT ... FOR UPDATE."""
    executor.execute(_insert(executor)(model).values(**values).on_conflict_do_nothing())


def upsert(executor: Session | Connection, model: type[Any], key: str, values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE: the row is `values` after this one statement, whatever
    was there, a row another transaction is inserting included (an UPDATE would not see it)."""
    changed = {name: value for name, value in values.items() if name != key}
    statement = _insert(executor)(model).values(**values)
    executor.execute(statement.on_conflict_do_update(index_elements=[key], set_=changed))


def require(session: Session, model: type[T], ident: object) -> T:
    """`session.get` for a row that must exist (an id taken from a row or session just read).
    A missing row here is a bug or a concurrent deletion, which the database guards forbid."""
    row = session.get(model, ident)
    if row is None:
        raise LookupError(f"{model.__name__} {ident!r} does not exist")
    return row


# --- hot statements straight to the driver (issue 16) -------------------------------------------


class Direct:
    """A Core statement of the randomization path, compiled once per dialect and, on PostgreSQL, run
    on the driver's cursor instead of through `Connection.execute`.

    Measured on this machine, SQLAlchemy's per-statement layer (compiled-cache look-up, execution
    context, parameter processing, result metadata built from the cursor's description) costs about
    35 µs of CPU on top of psycopg's 20 µs for a one-row select; a randomization runs a dozen
    statements. What it did that still matters is kept: the bind processors of the statement's
    types (the same functions, from the same compiled form), the result processors of its columns,
    the `before_cursor_execute` / `after_cursor_execute` events (the tests and the profiler count
    statements through them), and the handling of a driver error, which goes through the
    connection's own (wrapped as `DBAPIError`, so `is_busy` sees lock timeouts and dropped
    connections, and a dropped connection invalidates the pool as before). The statement runs in
    the connection's current transaction (psycopg begins one on the first statement, as it does
    for SQLAlchemy), and is prepared by psycopg after the same threshold. SQLite keeps
    `Connection.execute`. Only statements without expanding (IN-list) parameters qualify.

    Not kept, so not for every statement: `before_cursor_execute` listeners registered with
    `retval=True` cannot rewrite a Direct statement (they are called, their answer is not used);
    execution options (`schema_translate_map`) are not applied; the statement is not in SQLAlchemy's
    echo log; the row type renames duplicate or underscore-led column names. It relies on three
    names private to SQLAlchemy (`Connection._handle_dbapi_exception`, `compiled._bind_processors`,
    `TypeEngine._cached_result_processor`): `tests/web/test_direct_statements.py` compares its rows
    with SQLAlchemy's, so an upgrade that changes them fails there."""

    __slots__ = ("_forms", "statement")

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._forms: dict[str, _DirectForm] = {}

    def rows(self, connection: Connection, parameters: dict[str, Any]) -> list[Any]:
        """Every row, each a named tuple (attribute and index access, as SQLAlchemy's rows)."""
        if (
            connection.dialect.name != "postgresql"
            or not isinstance(connection, Connection)
            or connection.dialect.driver != "psycopg"
            or not connection.in_transaction()
        ):
            # SQLite, another driver, a test's stand-in for a connection, or a connection with no
            # transaction of SQLAlchemy's (psycopg would begin one that SQLAlchemy does not know of)
            return list(connection.execute(self.statement, parameters).all())
        form = self._forms.get(connection.dialect.name)
        if form is None:
            form = self._forms[connection.dialect.name] = _DirectForm(self.statement, connection)
        return form.run(connection, parameters)

    def one(self, connection: Connection, parameters: dict[str, Any]) -> Any:
        rows = self.rows(connection, parameters)
        if len(rows) != 1:
            raise sa_exc.NoResultFound("no row") if not rows else sa_exc.MultipleResultsFound("rows")
        return rows[0]

    def one_or_none(self, connection: Connection, parameters: dict[str, Any]) -> Any:
        rows = self.rows(connection, parameters)
        if len(rows) > 1:
            raise sa_exc.MultipleResultsFound("more than one row")
        return rows[0] if rows else None


_DIRECT_CURSOR = "allocator.direct_cursor"


class _DirectForm:
    """The compiled form of a `Direct` statement for one dialect."""

    def __init__(self, statement: Any, connection: Connection) -> None:
        dialect = connection.dialect
        compiled: Any = statement.compile(dialect=dialect)
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError("a Direct statement cannot have expanding or literal-execute parameters")
        self.compiled = compiled
        self.sql: str = compiled.string
        self.bind_processors: dict[str, Callable[[Any], Any]] = dict(compiled._bind_processors)
        columns = compiled._result_columns
        self.result_processors = [column.type._cached_result_processor(dialect, None) for column in columns]
        self.any_result_processor = any(p is not None for p in self.result_processors)
        # Whether the statement answered rows, without `cursor.description` (which builds a column
        # object per column, the cost this path avoids).
        self.tuples_ok = pq.ExecStatus.TUPLES_OK
        names = [column.keyname for column in columns]
        self.row_type: Any = namedtuple("DirectRow", names, rename=True) if names else None

    def run(self, connection: Connection, parameters: dict[str, Any]) -> list[Any]:
        sql = self.sql
        values: dict[str, Any] = parameters
        cursor = None
        events = connection._has_events or connection.engine._has_events
        # Everything from the parameters to the rows inside the connection's own error handling, as
        # `Connection.execute` has it: a bad value is a StatementError, a connection found closed
        # when the cursor is made is a DBAPIError that invalidates it (`is_busy`: 503), an
        # interruption invalidates it too.
        try:
            values = self.compiled.construct_params(parameters, escape_names=False)
            processors = self.bind_processors
            for key in processors.keys() & values.keys():
                values[key] = processors[key](values[key])  # None too, as SQLAlchemy does (JSON null)
            proxied = connection.connection
            # One cursor per driver connection, kept in the pool record's `info` (cleared by
            # SQLAlchemy when the connection is invalidated or recycled; checked against it anyway).
            driver = proxied.driver_connection
            cursor = proxied.info.get(_DIRECT_CURSOR)
            if cursor is None or cursor.closed or cursor.connection is not driver:
                cursor = proxied.info[_DIRECT_CURSOR] = driver.cursor()  # type: ignore[union-attr]
            if events:
                connection.dispatch.before_cursor_execute(connection, cursor, sql, values, None, False)
            cursor.execute(sql, values)
            result = cursor.pgresult
            fetched = cursor.fetchall() if result is not None and result.status == self.tuples_ok else []
        except BaseException as error:  # the connection's own handling: wrapping, invalidation, events
            connection._handle_dbapi_exception(error, sql, values, cursor, None)
            raise  # pragma: no cover - _handle_dbapi_exception always raises
        if events:
            connection.dispatch.after_cursor_execute(connection, cursor, sql, values, None, False)
        if self.row_type is None:
            return fetched
        make = self.row_type._make
        if self.any_result_processor:
            convert = self.result_processors
            return [
                make(value if p is None else p(value) for p, value in zip(convert, row, strict=True))
                for row in fetched
            ]
        return [make(row) for row in fetched]
