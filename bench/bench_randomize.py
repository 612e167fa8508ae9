"""Randomizations per second through the real JSON API, with 1, 8 and 32 concurrent clients.

Usage: python bench/bench_randomize.py [--backend sqlite|postgresql|both] [--quick]
                                       [--workers W] [--threads T] [--sites N] [--pg URL]
                                       [--servers 1|2] [--slots N] [--kits-per-site N] [--sweep]
Targets (issue 16, PostgreSQL, 2-core machine): at 8 clients >= 200 randomizations per second with
p99 < 60 ms; p99 < 25 ms at 1 client; CPU per randomization (server + its database backends)
<= 8 ms; the same CPU within 15 % at 100,000 slots per stratum and 10,000 kits at the site as at
100 slots and 100 kits; zero errors and every consistency check passing on one and two servers.

CPU is counted for the benchmark's own processes only: the gunicorn masters and workers it
started, and the PostgreSQL backends connected to its own database (pg_stat_activity), read from
/proc/<pid>/stat before and after each level (a backend that starts and ends within one level is
missed: the pools keep their connections, so there are none once warmed up). A Flask hello-world
(bench/hello_app.py) is served by the same gunicorn configuration and hit by the same client in the
same run; its rate is printed beside the randomization figures with their ratio. --servers 2 runs
two gunicorn instances on two ports against the one database, clients split between them. --sweep
prints CPU per randomization for lists of 100, 10,000 and 100,000 slots per stratum and 100 and
10,000 kits at the site (PostgreSQL, 8 clients; 8 sites below 1,000 kits per site, else 2).

For each backend: a fresh database (PostgreSQL: a new database `bench_rand_<pid>` on the server of
--pg, dropped afterwards unless --keep; SQLite: a file in a temporary folder), migrations, keys,
then the IFN-gamma trial modified for load (more sites, longer strata) is prepared with the
services exactly as an operator would: sites activated, TEST list generated, approved and
activated (signed), kits generated, shipped and received at every site, one investigator per site
with a changed password and an API bearer token. The server is `gunicorn` with gthread workers
(what `allocator serve` runs) on a free loopback port; the clients are threads with one
keep-alive `http.client` connection each, POSTing /api/v1/trials/IFNG-PAIS/subjects.

Each level is measured in its steady state: every client first sends --settle requests (default 5)
on its new connection, untimed and outside the CPU count (their randomizations are checked with the
others, their errors counted). Timed from its first request, a level of 1,000 requests at 8
clients had six of its twelve slowest (150-600 ms) in its first 0.35 s, which moves the p99 it
reports. Their cause was not isolated: not a new connection alone (at one client, a new
connection's first request took 10-50 ms; eight at once 70-133 ms). --settle 0 times them too.

Request mix: request j goes to site j mod N and alternates the admission cause every N requests,
so that concurrent clients hit different sites (the site row is locked per allocation) and every
stratum is used. Every request is timed from sending to the last byte of the response.

Afterwards the database is checked: one subject per successful response and nothing else, no
slot or kit used twice, each stratum's slots used in order without a gap, every kit at the
subject's site and allocated, one `subject.randomized` audit entry per subject, and the audit
chains verify.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.engine import make_url

from allocator import audit, crypto, migrate
from allocator.audit import Actor
from allocator.db import Database
from allocator.models import AuditEvent, Dispensation, Kit, RandomizationList, Slot, Stratum, Subject
from allocator.permissions import Scope
from allocator.services import auth, codebreak, signatures, trials
from allocator.services import sites as services_sites
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.lists import approval, generation
from allocator.services.supply import kit_lists, shipments
from allocator.settings import Environment, Settings
from allocator.uat import eligible_on

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TRIAL = "IFNG-PAIS"
PASSWORD = "correct horse battery staple 42"  # noqa: S105 - a throw-away benchmark account
ACTOR = Actor(user_id=None, username="bench", name="Benchmark", role="system", request_id="bench")
EVERYWHERE = Scope(all_sites=True, site_ids=frozenset())
CAUSES = ("septic", "non_septic")
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# --- the trial ---------------------------------------------------------------------------------


def site_codes(count: int) -> list[str]:
    return [f"S{i:02d}" for i in range(1, count + 1)]


def definition(sites: list[str], slots_per_stratum: int) -> str:
    """The IFN-gamma definition with `sites` instead of P1/P2 and longer strata."""
    text = (ROOT / "trials" / "ifn-gamma-pais.toml").read_text(encoding="utf-8")
    text = text.replace("slots_per_stratum = 120", f"slots_per_stratum = {slots_per_stratum}")
    blocks = "".join(
        f'[[sites]]\ncode = "{code}"\nname = "Bench site {code}"\ncity = "Paris"\n'
        f'principal_investigator = "Dr {code}"\n\n'
        for code in sites
    )
    text, replaced = re.subn(
        r"\[\[sites\]\]\ncode = \"P1\".*?(?=# --- What the public record)", blocks, text, flags=re.S
    )
    if replaced != 1:
        raise SystemExit("bench: could not replace the sites of trials/ifn-gamma-pais.toml")
    return text


@dataclass
class Prepared:
    tokens: dict[str, str]  # site -> bearer token of its investigator
    kits_per_site: int
    slots_per_stratum: int
    setup_seconds: float


def prepare(
    ctx: ServiceContext,
    sites: list[str],
    total: int,
    slots_override: int | None = None,
    kits_override: int | None = None,
) -> Prepared:
    """Set the trial up with the services, sized for `total` randomizations (or with the given
    stratum length and kits per site)."""
    started = time.perf_counter()
    today = ctx.now().date()
    per_site = -(-total // len(sites))
    per_stratum = -(-per_site // len(CAUSES))
    # Whole blocks of 2/4/6 keep each stratum within a few subjects of balance; the alert threshold
    # (20) stays far away so that no capacity notification is written during the run.
    slots = max(120, 2 * per_stratum + 40)
    # Each subject takes 3 kits of its arm; blocks keep the arms of a site within a few subjects
    # of each other, so 3 x (half the site's subjects + margin) per arm never runs out.
    per_arm = 3 * (-(-per_site // 2) + 12) + 3
    kits_per_site = 2 * per_arm
    if slots_override is not None:
        slots = slots_override
    if kits_override is not None:
        kits_per_site = kits_override
    trials.load_trial(ctx, ACTOR, definition(sites, slots), source_name="bench_randomize.toml")
    stat = _user(ctx, "statistician", "unblinded_statistician", None)
    generated = generation.generate_lists(ctx, ACTOR, TRIAL, "test")
    signed = signatures.SignatureRequest(password=PASSWORD)
    approval.approve_list(ctx, stat, TRIAL, generated.list_id, signed)
    approval.activate_list(ctx, stat, TRIAL, generated.list_id, signed)
    count = kits_per_site * len(sites)
    count += -count % 4
    kit_lists.generate_kit_list(
        ctx, ACTOR, TRIAL, count=count, lot_code="BENCH-1", expiry=today + timedelta(days=365)
    )
    # A site is activated once every kit has its sealed code-break sheet (UNB-07).
    sheets = codebreak.generate_sheets(ctx, stat, TRIAL, signature=signed)
    for code in sites:
        services_sites.activate_site(
            ctx,
            ACTOR,
            TRIAL,
            code,
            approval_date=today - timedelta(days=60),
            delegation_log_date=today - timedelta(days=30),
            code_break_evidence=f"benchmark: sheets {sheets.document_id}",
            scope=EVERYWHERE,
            reason="benchmark",
        )
    tokens = {}
    for code in sites:
        shipment = shipments.create_shipment(ctx, ACTOR, TRIAL, code, kits_per_site)
        shipments.ship(ctx, ACTOR, TRIAL, shipment.number)
        shipments.receive(ctx, ACTOR, TRIAL, shipment.number, shipment.kits, scope=EVERYWHERE)
        investigator = _user(ctx, f"inv-{code.lower()}", "investigator", code)
        tokens[code] = users.create_token(ctx, ACTOR, investigator.username, "bench").token
    return Prepared(tokens, kits_per_site, slots, time.perf_counter() - started)


def _user(ctx: ServiceContext, username: str, role: str, site: str | None) -> Actor:
    created = users.create_user(
        ctx,
        ACTOR,
        users.NewUser(username=username, full_name=username.replace("-", " ").title()),
        users.RoleRequest(role=role, trial_code=TRIAL, site_code=site),
    )
    # API tokens only act for users who replaced their one-time password.
    auth.change_password(
        ctx,
        created.user_id,
        created.one_time_password,
        PASSWORD,
        PASSWORD,
        auth.Client("127.0.0.1", "bench", "setup"),
    )
    return Actor(
        user_id=created.user_id,
        username=username,
        name=username,
        role=role,
        site_code=site,
        request_id="bench",
    )


# --- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """gunicorn with gthread workers, configured as `allocator serve` does (no access log)."""

    def __init__(
        self,
        env: dict[str, str],
        workers: int,
        threads: int,
        log: Path,
        app: str = "allocator.app:create_app()",
    ) -> None:
        self.port = free_port()
        self.log = log
        command = [
            str(VENV_BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            "gthread",
            "--timeout",
            "60",
            "--graceful-timeout",
            "10",
            app,
        ]
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60, path: str = "/healthz") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"bench: the server exited ({self.process.returncode}); see {self.log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"bench: the server did not answer {path} within {timeout} s; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


def _proc_cpu(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process, from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time of the benchmark's own processes: its gunicorn masters and their workers, and the
    PostgreSQL backends connected to its own database (not other databases, not the checkpointer
    or the WAL writer, not the monitoring connection itself). Linux /proc; nan elsewhere."""

    def __init__(self, server_pids: list[int], pg_url: str | None) -> None:
        self.server_pids = set(server_pids)
        self._pg = None
        if pg_url is not None:
            import psycopg

            url = make_url(pg_url)
            self._pg = psycopg.connect(
                host=url.host or "127.0.0.1",
                port=url.port or 5432,
                user=url.username or "postgres",
                password=url.password,
                dbname=url.database or "postgres",
                autocommit=True,
            )

    def backend_pids(self) -> list[int]:
        if self._pg is None:
            return []
        rows = self._pg.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        return [int(row[0]) for row in rows]

    def sample(self) -> tuple[dict[int, float], dict[int, float]]:
        """CPU seconds per server process and per database backend, now."""
        server: dict[int, float] = {}
        try:
            entries = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return {}, {}
        for pid in entries:
            got = _proc_cpu(pid)
            if got is not None and (pid in self.server_pids or got[0] in self.server_pids):
                server[pid] = got[1]
        database = {}
        for pid in self.backend_pids():
            got = _proc_cpu(pid)
            if got is not None:
                database[pid] = got[1]
        return server, database

    @staticmethod
    def used(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()


# --- the clients -------------------------------------------------------------------------------


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)  # seconds: servers, own backends, this process
    errors: Counter[str] = field(default_factory=Counter)
    results: list[dict[str, object]] = field(default_factory=list)  # 201 bodies (+ site, stratum)
    elapsed: float = 0.0
    ok: int = 0
    # Per connection: (requests served, median latency in seconds). A keep-alive connection stays
    # with the gunicorn worker that accepted it, so a worker holding more connections than others
    # answers them more slowly: the spread shows that imbalance.
    connections: list[tuple[int, float]] = field(default_factory=list)


class Load:
    """Hands out request numbers; request j goes to site j mod N, cause alternating every N."""

    def __init__(self, sites: list[str], tokens: dict[str, str], today: date) -> None:
        self.sites = sites
        self.tokens = tokens
        self.eligibility = eligible_on(today)
        self._next = 0
        self._lock = threading.Lock()

    def body(self, j: int) -> tuple[str, str, bytes]:
        site = self.sites[j % len(self.sites)]
        cause = CAUSES[(j // len(self.sites)) % len(CAUSES)]
        screening = f"{site}-{j // len(self.sites) + 1:05d}"
        payload = {
            "site": site,
            "screening_number": screening,
            "eligibility": self.eligibility,
            "strata": {"admission_cause": cause},
        }
        return site, cause, json.dumps(payload).encode()

    def take(self) -> int:
        with self._lock:
            j = self._next
            self._next += 1
            return j


def run_level(
    servers: list[Server],
    load: Load,
    clients: int,
    count: int,
    meter: CpuMeter | None = None,
    hello: bool = False,
    settle: int = 0,
) -> Outcome:
    """`count` requests spread over `clients` threads, each with its own keep-alive connection to
    server (client number mod the number of servers): randomizations, or GET /hello when `hello`.

    With `settle`, each client first sends that many requests on its connection, untimed and out of
    the CPU count (their randomizations are kept for the consistency check, their errors counted):
    the level is then measured in its steady state. Without it, a level's first requests made
    several of the ten slowest of 1,000 (see the module's docstring), which is what a p99 reads."""
    outcome = Outcome()
    lock = threading.Lock()
    remaining = [count]
    settled_gate = threading.Barrier(clients + 1)
    start_gate = threading.Barrier(clients + 1)

    def claim() -> bool:
        with lock:
            if remaining[0] <= 0:
                return False
            remaining[0] -= 1
            return True

    def client(number: int) -> None:
        port = servers[number % len(servers)].port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        results: list[dict[str, object]] = []

        def send() -> float | None:
            """One request on the connection: its latency when answered as wanted, else None (the
            error counted)."""
            nonlocal conn
            if hello:
                site = cause = ""
                method, path, body, headers, wanted = "GET", "/hello", None, {}, 200
            else:
                j = load.take()
                site, cause, body = load.body(j)
                headers = {
                    "Authorization": f"Bearer {load.tokens[site]}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                }
                method, path, wanted = "POST", f"/api/v1/trials/{TRIAL}/subjects", 201
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                errors[f"connection: {type(exc).__name__}"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                return None
            t1 = time.perf_counter()
            if status == wanted:
                if not hello:
                    result = json.loads(data)
                    result["_site"], result["_cause"] = site, cause
                    results.append(result)
                return t1 - t0
            try:
                kind = str(json.loads(data).get("type", ""))
            except ValueError:
                kind = data[:80].decode("utf-8", "replace")
            errors[f"HTTP {status} {kind}"] += 1
            return None

        for _ in range(settle):
            try:
                send()
            except Exception as exc:  # counted: the client must still reach both gates
                errors[f"settle: {type(exc).__name__}"] += 1
        settled_gate.wait()
        start_gate.wait()
        while claim():
            latency = send()
            if latency is not None:
                latencies.append(latency)
        conn.close()
        with lock:
            if latencies:
                outcome.connections.append((len(latencies), percentile(latencies, 50)))
            outcome.latencies.extend(latencies)
            outcome.errors.update(errors)
            outcome.results.extend(results)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    settled_gate.wait()
    before = meter.sample() if meter else ({}, {})
    client0 = time.process_time()
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    outcome.elapsed = time.perf_counter() - t0
    after = meter.sample() if meter else ({}, {})
    outcome.cpu = (
        CpuMeter.used(before[0], after[0]),
        CpuMeter.used(before[1], after[1]),
        time.process_time() - client0,
    )
    outcome.ok = len(outcome.latencies)
    return outcome


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# --- the checks --------------------------------------------------------------------------------


def check(
    db: Database, ring: crypto.KeyRing, results: list[dict[str, object]]
) -> list[tuple[str, bool, str]]:
    """Consistency of the database after the run. Returns (check, ok, detail) rows."""
    rows: list[tuple[str, bool, str]] = []

    def add(name: str, ok: bool, detail: str) -> None:
        rows.append((name, ok, detail))

    with db.read_engine.connect() as conn:
        trial_subjects = conn.execute(
            select(
                Subject.id,
                Subject.subject_number,
                Subject.randomization_number,
                Subject.slot_id,
                Subject.stratum_id,
                Subject.site_id,
                Subject.screening_number,
            )
        ).all()
        add(
            "subjects in database == successful responses",
            len(trial_subjects) == len(results),
            f"{len(trial_subjects)} subjects, {len(results)} responses 201",
        )
        by_number = {s.subject_number: s for s in trial_subjects}
        answered = {str(r["subject_number"]) for r in results}
        add(
            "every response's subject stored, with its randomization number",
            answered == set(by_number)
            and all(
                by_number[str(r["subject_number"])].randomization_number == r["randomization_number"]
                for r in results
            ),
            f"{len(answered)} distinct subject numbers answered",
        )
        numbers = Counter(str(r["randomization_number"]) for r in results)
        dup_numbers = [n for n, c in numbers.items() if c > 1]
        add("no randomization number given twice", not dup_numbers, f"{len(dup_numbers)} duplicates")
        slots = Counter(s.slot_id for s in trial_subjects)
        dup_slots = [s for s, c in slots.items() if s is None or c > 1]
        add(
            "no slot used twice (and none missing)",
            not dup_slots,
            f"{len(slots)} slots for {len(trial_subjects)} subjects",
        )
        dispensations = conn.execute(select(Dispensation.subject_id, Dispensation.kit_id)).all()
        kit_uses = Counter(d.kit_id for d in dispensations)
        dup_kits = [k for k, c in kit_uses.items() if c > 1]
        per_subject = Counter(d.subject_id for d in dispensations)
        answered_kits = Counter(
            str(k["kit_number"]) for r in results for k in cast(list[dict[str, str]], r["kits"])
        )
        add(
            "no kit allocated twice; 3 kits per subject",
            not dup_kits
            and not [k for k, c in answered_kits.items() if c > 1]
            and all(per_subject[s.id] == 3 for s in trial_subjects)
            and len(dispensations) == 3 * len(trial_subjects),
            f"{len(dispensations)} dispensations, {len(kit_uses)} distinct kits",
        )
        kit_rows = {
            k.id: k for k in conn.execute(select(Kit.id, Kit.kit_number, Kit.site_id, Kit.status)).all()
        }
        subject_site = {s.id: s.site_id for s in trial_subjects}
        misplaced = [
            d
            for d in dispensations
            if kit_rows[d.kit_id].site_id != subject_site[d.subject_id]
            or kit_rows[d.kit_id].status != "allocated"
        ]
        allocated = sum(1 for k in kit_rows.values() if k.status == "allocated")
        add(
            "kits at the subject's site, status allocated, none else allocated",
            not misplaced and allocated == len(dispensations),
            f"{allocated} kits allocated",
        )
        positions = {
            s.id: (s.stratum_id, s.position)
            for s in conn.execute(select(Slot.id, Slot.stratum_id, Slot.position)).all()
        }
        strata = conn.execute(
            select(Stratum.id, Stratum.key, Stratum.used, Stratum.capacity)
            .join(RandomizationList, RandomizationList.id == Stratum.list_id)
            .where(RandomizationList.status == "active")
        ).all()
        gaps = []
        for stratum in strata:
            used = sorted(
                positions[s.slot_id][1]
                for s in trial_subjects
                if s.slot_id is not None and positions[s.slot_id][0] == stratum.id
            )
            if used != list(range(1, len(used) + 1)) or stratum.used != len(used):
                gaps.append(stratum.key)
            mismatched = [
                s
                for s in trial_subjects
                if s.stratum_id == stratum.id
                and s.slot_id is not None
                and positions[s.slot_id][0] != stratum.id
            ]
            if mismatched:
                gaps.append(stratum.key)
        add(
            "slots used in order, no gap, counter == subjects, per stratum",
            not gaps,
            f"{len(strata)} strata, {sum(s.used for s in strata)} slots used"
            + (f"; bad: {', '.join(gaps[:5])}" if gaps else ""),
        )
        audited = Counter(
            conn.execute(
                select(AuditEvent.object_id).where(
                    AuditEvent.chain == TRIAL, AuditEvent.action == "subject.randomized"
                )
            ).scalars()
        )
        add(
            "one subject.randomized audit entry per subject",
            set(audited) == set(by_number) and all(c == 1 for c in audited.values()),
            f"{sum(audited.values())} entries",
        )
        for chain in audit.chains(conn):
            verified = audit.verify_chain(conn, ring, chain)
            add(f"audit chain {chain!r} verifies", verified.ok, verified.summary())
    return rows


# --- one backend -------------------------------------------------------------------------------


@dataclass
class LevelRow:
    clients: int
    count: int
    ok: int
    errors: Counter[str]
    elapsed: float
    latencies: list[float]
    cpu: tuple[float, float, float]
    connections: list[tuple[int, float]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0


def create_pg_database(base: str, name: str, template: str | None = None) -> str:
    """A new database `name` (dropped first if it exists), empty or a copy of `template`."""
    import psycopg

    url = make_url(base)
    with psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return pg_url(base, name)


def pg_url(base: str, name: str) -> str:
    """The URL of database `name` on the server of `base`."""
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(base: str, name: str) -> None:
    import psycopg

    url = make_url(base)
    with psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class BackendRun:
    ok: bool
    rows: list[LevelRow]
    hello: list[LevelRow]


def _row(clients: int, count: int, outcome: Outcome) -> LevelRow:
    return LevelRow(
        clients,
        count,
        outcome.ok,
        outcome.errors,
        outcome.elapsed,
        outcome.latencies,
        outcome.cpu,
        outcome.connections,
    )


def run_backend(
    backend: str,
    args: argparse.Namespace,
    levels: list[tuple[int, int]],
    *,
    slots: int | None = None,
    kits: int | None = None,
    sites_count: int | None = None,
    quiet: bool = False,
) -> BackendRun:
    work = Path(tempfile.mkdtemp(prefix=f"bench_rand_{backend}_"))
    key_dir = work / "keys"
    pg_name = f"bench_rand_{os.getpid()}"
    if backend == "postgresql":
        url = create_pg_database(args.pg, pg_name)
    else:
        url = f"sqlite:///{work / 'allocator.db'}"
    servers: list[Server] = []
    meter = None
    db = None

    def say(line: str = "") -> None:
        if not quiet:
            print(line)

    try:
        crypto.KeyRing.create_missing(key_dir)
        migrate.upgrade(url)
        settings = Settings(env=Environment.TEST, database_url=url, key_dir=key_dir)
        ring = crypto.KeyRing.load(key_dir)
        db = Database.connect(url)
        # Cheap Argon2 for the set-up accounts only: the API authenticates by token digest.
        ctx = ServiceContext.build(settings, db, ring, passwords=crypto.FAST_PASSWORD_HASHING)
        sites = site_codes(sites_count or args.sites)
        warmup = args.warmup if args.warmup is not None else 4 * args.workers * args.servers
        total = warmup + sum(n + args.settle * c for c, n in levels)
        prepared = prepare(ctx, sites, total, slots, kits)
        if backend == "postgresql":
            # What autovacuum does within a minute of a bulk load: without fresh statistics the
            # planner takes the freshly loaded slot and kit tables for empty and scans them.
            with db.write_engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        today = ctx.now().astimezone(ZoneInfo("Europe/Paris")).date()
        load = Load(sites, prepared.tokens, today)

        env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOCATOR_")}
        env.update(
            ALLOCATOR_DATABASE_URL=url,
            ALLOCATOR_KEY_DIR=str(key_dir),
            ALLOCATOR_ENV="test",
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        )
        servers = [
            Server(env, args.workers, args.threads, work / f"server{i}.log") for i in range(args.servers)
        ]
        for server in servers:
            server.wait_ready()
        meter = CpuMeter([s.process.pid for s in servers], url if backend == "postgresql" else None)

        version = db.write_engine.dialect.server_version_info if backend == "postgresql" else None
        say(
            f"\n== {backend}: "
            + (f"PostgreSQL {'.'.join(map(str, version or ()))}" if version else "SQLite file")
        )
        say(
            f"server: {args.servers} x gunicorn gthread, {args.workers} workers x {args.threads} threads, "
            f"127.0.0.1:{','.join(str(s.port) for s in servers)}, ALLOCATOR_ENV=test; machine: "
            f"{os.cpu_count()} cores (clients, servers and database share them); load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at start"
        )
        say(
            f"trial: {len(sites)} sites x 2 admission causes = {2 * len(sites)} strata of {prepared.slots_per_stratum} "
            f"slots (blocks 2/4/6); {prepared.kits_per_site} kits received per site; 3 kits per subject; "
            f"set-up {prepared.setup_seconds:.1f} s"
        )
        say(
            f"mix: request j -> site S(j mod {len(sites)}), cause alternating every {len(sites)} requests; "
            f"one investigator token per site; keep-alive connection per client"
        )

        all_results: list[dict[str, object]] = []
        warm = run_level(servers, load, min(4, args.workers) * len(servers), warmup)
        all_results.extend(warm.results)
        say(f"warm-up: {len(warm.results)} randomizations (not timed), errors {sum(warm.errors.values())}")
        say(
            f"settling: {args.settle} untimed request(s) per client on its connection at the start of "
            "each level, outside its figures (--settle 0 times the cold start too)"
        )

        rows: list[LevelRow] = []
        for clients, count in levels:
            outcome = run_level(servers, load, clients, count, meter, settle=args.settle)
            all_results.extend(outcome.results)
            rows.append(_row(clients, count, outcome))
        for server in servers:
            server.stop()
        meter.close()
        meter = None

        # The same gunicorn configuration serving a Flask hello-world, hit by the same client.
        hello_rows: list[LevelRow] = []
        hello = Server(env, args.workers, args.threads, work / "hello.log", app="bench.hello_app:app")
        try:
            hello.wait_ready(path="/hello")
            run_level([hello], load, 4, 200, hello=True)  # warm-up
            hello_meter = CpuMeter([hello.process.pid], None)
            for clients, count in levels:
                outcome = run_level(
                    [hello], load, clients, max(count, 1000), hello_meter, hello=True, settle=args.settle
                )
                hello_rows.append(_row(clients, max(count, 1000), outcome))
        finally:
            hello.stop()

        say()
        say(
            f"{'clients':>7} {'requests':>8} {'ok':>6} {'errors':>6} {'seconds':>8} {'rand/s':>8} "
            f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'hello/s':>8} {'ratio':>6}"
        )
        for row, hello_row in zip(rows, hello_rows, strict=True):
            lat = row.latencies
            say(
                f"{row.clients:>7} {row.count:>8} {row.ok:>6} {sum(row.errors.values()):>6} {row.elapsed:>8.2f} "
                f"{row.rate:>8.1f} {1000 * percentile(lat, 50):>7.1f} {1000 * percentile(lat, 90):>7.1f} "
                f"{1000 * percentile(lat, 99):>7.1f} {1000 * (max(lat) if lat else float('nan')):>7.1f} "
                f"{hello_row.rate:>8.1f} {100 * row.rate / hello_row.rate if hello_row.rate else 0:>5.1f}%"
            )
            for kind, n in row.errors.most_common():
                say(f"        error x{n}: {kind}")
        for row in rows:
            if row.clients > 1 and row.connections:
                served = sorted(n for n, _ in row.connections)
                medians = sorted(1000 * m for _, m in row.connections)
                say(
                    f"{row.clients:>7} clients, per connection: {served[0]}-{served[-1]} requests, "
                    f"median latency {medians[0]:.1f}-{medians[-1]:.1f} ms"
                )
        say(
            "\nCPU per successful request (ms; own server processes and own database backends only; the "
            f"machine has {os.cpu_count()} cores = {1000 * (os.cpu_count() or 1)} ms of CPU per second):"
        )
        say(
            f"{'clients':>7} {'gunicorn':>9} {'backends':>9} {'server+db':>9} {'clients':>8} "
            f"{'hello gunicorn':>15}"
        )
        for row, hello_row in zip(rows, hello_rows, strict=True):
            server_cpu, pg_cpu, client_cpu = (1000 * c / max(row.ok, 1) for c in row.cpu)
            hello_cpu = 1000 * hello_row.cpu[0] / max(hello_row.ok, 1)
            pg = f"{pg_cpu:>9.2f}" if backend == "postgresql" else f"{'-':>9}"
            say(
                f"{row.clients:>7} {server_cpu:>9.2f} {pg} {server_cpu + pg_cpu:>9.2f} {client_cpu:>8.2f} "
                f"{hello_cpu:>15.2f}"
            )

        say("\nconsistency:")
        checks = check(db, ring, all_results)
        for name, ok, detail in checks:
            say(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}")
        consistent = all(ok for _, ok, _ in checks)
        if quiet and not consistent:
            print("consistency FAILED: " + "; ".join(name for name, ok, _ in checks if not ok))

        if backend == "postgresql":
            by_clients = {r.clients: r for r in rows}
            eight, one = by_clients.get(8), by_clients.get(1)
            if eight is not None:
                p99 = 1000 * percentile(eight.latencies, 99)
                cpu = 1000 * (eight.cpu[0] + eight.cpu[1]) / max(eight.ok, 1)
                say(
                    f"\ntarget (8 clients: >= 200 rand/s, p99 < 60 ms): "
                    f"{'MET' if eight.rate >= 200 and p99 < 60 else 'MISSED'} ({eight.rate:.1f} rand/s, p99 {p99:.1f} ms)"
                )
                say(
                    f"target (CPU per randomization <= 8 ms): {'MET' if cpu <= 8 else 'MISSED'} ({cpu:.2f} ms)"
                )
            if one is not None:
                p99 = 1000 * percentile(one.latencies, 99)
                say(f"target (1 client: p99 < 25 ms): {'MET' if p99 < 25 else 'MISSED'} (p99 {p99:.1f} ms)")
        errors_total = sum(sum(r.errors.values()) for r in rows)
        return BackendRun(consistent and errors_total == 0, rows, hello_rows)
    finally:
        for server in servers:
            server.stop()
        if meter is not None:
            meter.close()
        if db is not None:
            db.dispose()
        if backend == "postgresql" and not args.keep:
            drop_pg_database(args.pg, pg_name)
        if args.keep:
            print(f"kept: {work}" + (f" and database {pg_name}" if backend == "postgresql" else ""))
        else:
            shutil.rmtree(work, ignore_errors=True)


SWEEP = ((100, 100), (10_000, 100), (100_000, 100), (100, 10_000), (100_000, 10_000))


def sweep(args: argparse.Namespace, configurations: tuple[tuple[int, int], ...] = SWEEP) -> bool:
    """CPU per randomization against the list's length and the site's stock (PostgreSQL, 8
    clients; 8 sites when each holds fewer than 1,000 kits, else 2; up to 400 randomizations per
    configuration, as many as the kits allow)."""
    print(
        "\n== sweep: CPU per randomization (ms, own gunicorn + own backends), PostgreSQL, 8 clients "
        "(8 sites below 1,000 kits per site, else 2)"
    )
    print(
        f"{'slots/stratum':>13} {'kits/site':>9} {'ok/sent':>9} {'rand/s':>7} {'p99 ms':>7} "
        f"{'gunicorn':>9} {'backends':>9} {'total':>7}"
    )
    ok = True
    base = None
    for slots, kits in configurations:
        # Enough kits for every randomization: 3 kits per subject, arms within a few subjects of
        # each other per site (2 arms); the warm-up takes its share. 8 sites when each holds few
        # kits, so that the count is large enough for CPU figures read in 10 ms ticks; the number
        # of sites does not change the work of one allocation.
        sites = 8 if kits < 1_000 else 2
        # ... and within the strata's slots (2 causes per site), above their alert level of 20.
        budget = min(400, int(0.7 * sites * kits / 3), sites * 2 * (slots - 20))
        count = max(20, budget - args.warmup - 8 * args.settle)
        run = run_backend(
            "postgresql", args, [(8, count)], slots=slots, kits=kits, sites_count=sites, quiet=True
        )
        ok = ok and run.ok
        row = run.rows[0]
        server_cpu, pg_cpu = (1000 * c / max(row.ok, 1) for c in row.cpu[:2])
        total = server_cpu + pg_cpu
        base = base if base is not None else total
        print(
            f"{slots:>13,} {kits:>9,} {row.ok:>4}/{count:<4} {row.rate:>7.1f} {1000 * percentile(row.latencies, 99):>7.1f} "
            f"{server_cpu:>9.2f} {pg_cpu:>9.2f} {total:>7.2f}  ({100 * (total / base - 1):+.0f} % vs first)"
            + ("" if run.ok else "  ERRORS or consistency FAILED")
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="small counts (1:20, 8:80, 32:96)")
    parser.add_argument(
        "--workers",
        type=int,
        default=max(2, (os.cpu_count() or 1) * 2 + 1),
        help="gunicorn workers (default: as `allocator serve`, 2 x cores + 1)",
    )
    parser.add_argument(
        "--threads", type=int, default=4, help="threads per worker (default: 4, as `allocator serve`)"
    )
    parser.add_argument("--sites", type=int, default=16, help="number of sites (default 16)")
    parser.add_argument("--levels", default=None, help="clients:count list, e.g. 1:200,8:1000,32:1000")
    parser.add_argument("--pg", default=DEFAULT_PG, help=f"PostgreSQL server URL (default {DEFAULT_PG})")
    parser.add_argument("--keep", action="store_true", help="keep the database, keys and server log")
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up randomizations (default 4 x workers)"
    )
    parser.add_argument(
        "--settle",
        type=int,
        default=5,
        help="untimed requests per client on its own connection at the start of each level (default "
        "5): the level is measured in its steady state; 0 times its cold start too",
    )
    parser.add_argument(
        "--servers", type=int, default=1, help="gunicorn instances on as many ports (default 1)"
    )
    parser.add_argument(
        "--slots", type=int, default=None, help="slots per stratum (default: sized for the run)"
    )
    parser.add_argument("--kits-per-site", type=int, default=None, help="kits received per site")
    parser.add_argument(
        "--sweep",
        nargs="?",
        const=",".join(f"{a}:{b}" for a, b in SWEEP),
        default=None,
        help="CPU per randomization vs list length and stock: slots:kits list (default: all of SWEEP)",
    )
    args = parser.parse_args()
    if args.settle < 0:
        parser.error("--settle must be 0 or more")
    if args.sweep:
        args.warmup = 8 if args.warmup is None else args.warmup
        configurations = tuple(
            (int(a), int(b)) for a, b in (part.split(":") for part in args.sweep.split(","))
        )
        return 0 if sweep(args, configurations) else 1
    if args.levels:
        levels = [(int(a), int(b)) for a, b in (part.split(":") for part in args.levels.split(","))]
    elif args.quick:
        levels = [(1, 20), (8, 80), (32, 96)]
    else:
        levels = [(1, 200), (8, 1000), (32, 1000)]
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    ok = True
    for backend in backends:
        ok = run_backend(backend, args, levels, slots=args.slots, kits=args.kits_per_site).ok and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
