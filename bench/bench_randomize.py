"""Randomizations per second through the real JSON API, with 1, 8 and 32 concurrent clients.

Usage: python bench/bench_randomize.py [--backend sqlite|postgresql|both] [--quick]
                                       [--workers W] [--threads T] [--sites N] [--pg URL]
Target (issue 6): on PostgreSQL with 8 clients, at least 300 randomizations per second with p99
under 100 ms, zero errors and zero duplicates.

For each backend: a fresh database (PostgreSQL: a new database `bench_rand_<pid>` on the server of
--pg, dropped afterwards unless --keep; SQLite: a file in a temporary folder), migrations, keys,
then the IFN-gamma trial modified for load (more sites, longer strata) is prepared with the
services exactly as an operator would: sites activated, TEST list generated, approved and
activated (signed), kits generated, shipped and received at every site, one investigator per site
with a changed password and an API bearer token. The server is `gunicorn` with gthread workers
(what `allocator serve` runs) on a free loopback port; the clients are threads with one
keep-alive `http.client` connection each, POSTing /api/v1/trials/IFNG-PAIS/subjects.

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


def eligible_answers(today: date) -> dict[str, object]:
    """Eligible answers relative to the trial's local date (as tests/support.py eligible_on)."""
    return {
        "age": 64,
        "icu_admission_date": (today - timedelta(days=7)).isoformat(),
        "sofa_24h": 9,
        "invasive_ventilation": "yes",
        "mhladr": 5400,
        "mhladr_date": (today - timedelta(days=1)).isoformat(),
        "social_security": "yes",
        "consent": "yes",
        "short_icu_stay": "no",
        "preexisting_immunosuppression": "no",
        "prolonged_ventilation_expected": "no",
        "pregnancy_breastfeeding": "no",
        "imukin_contraindication": "no",
        "immunosuppressive_therapy": "no",
        "severe_hepatic_renal_failure": "no",
        "other_interventional_trial": "no",
        "legal_protection": "no",
    }


@dataclass
class Prepared:
    tokens: dict[str, str]  # site -> bearer token of its investigator
    kits_per_site: int
    slots_per_stratum: int
    setup_seconds: float


def prepare(ctx: ServiceContext, sites: list[str], total: int) -> Prepared:
    """Set the trial up with the services, sized for `total` randomizations."""
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

    def __init__(self, env: dict[str, str], workers: int, threads: int, log: Path) -> None:
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
            "allocator.app:create_app()",
        ]
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"bench: the server exited ({self.process.returncode}); see {self.log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"bench: the server did not answer /healthz within {timeout} s; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


def cpu_seconds(server_pid: int) -> tuple[float, float]:
    """CPU time so far of the gunicorn processes (master and workers) and of every `postgres`
    process on the machine (Linux /proc; (nan, nan) elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    server = database = 0.0
    try:
        entries = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return float("nan"), float("nan")
    for pid in entries:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(pid) == server_pid or int(fields[1]) == server_pid:
            server += used
        elif name == "postgres":
            database += used
    return server, database


# --- the clients -------------------------------------------------------------------------------


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    cpu: tuple[float, float, float] = (0.0, 0.0, 0.0)  # seconds: server, postgres, this process
    errors: Counter[str] = field(default_factory=Counter)
    results: list[dict[str, object]] = field(default_factory=list)  # 201 bodies (+ site, stratum)
    elapsed: float = 0.0


class Load:
    """Hands out request numbers; request j goes to site j mod N, cause alternating every N."""

    def __init__(self, sites: list[str], tokens: dict[str, str], today: date) -> None:
        self.sites = sites
        self.tokens = tokens
        self.eligibility = eligible_answers(today)
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


def run_level(server: Server, load: Load, clients: int, count: int) -> Outcome:
    """`count` randomizations spread over `clients` threads, each with its own connection."""
    outcome = Outcome()
    lock = threading.Lock()
    remaining = [count]
    start_gate = threading.Barrier(clients + 1)
    port = server.port

    def claim() -> bool:
        with lock:
            if remaining[0] <= 0:
                return False
            remaining[0] -= 1
            return True

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        results: list[dict[str, object]] = []
        start_gate.wait()
        while claim():
            j = load.take()
            site, cause, body = load.body(j)
            headers = {
                "Authorization": f"Bearer {load.tokens[site]}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
            t0 = time.perf_counter()
            try:
                conn.request("POST", f"/api/v1/trials/{TRIAL}/subjects", body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                errors[f"connection: {type(exc).__name__}"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            t1 = time.perf_counter()
            if status == 201:
                latencies.append(t1 - t0)
                result = json.loads(data)
                result["_site"], result["_cause"] = site, cause
                results.append(result)
            else:
                try:
                    kind = str(json.loads(data).get("type", ""))
                except ValueError:
                    kind = data[:80].decode("utf-8", "replace")
                errors[f"HTTP {status} {kind}"] += 1
        conn.close()
        with lock:
            outcome.latencies.extend(latencies)
            outcome.errors.update(errors)
            outcome.results.extend(results)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    server_pid = server.process.pid
    cpu0 = (*cpu_seconds(server_pid), time.process_time())
    start_gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    outcome.elapsed = time.perf_counter() - t0
    cpu1 = (*cpu_seconds(server_pid), time.process_time())
    outcome.cpu = (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], cpu1[2] - cpu0[2])
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

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0


def create_pg_database(base: str, name: str) -> str:
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
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


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


def run_backend(backend: str, args: argparse.Namespace, levels: list[tuple[int, int]]) -> bool:
    work = Path(tempfile.mkdtemp(prefix=f"bench_rand_{backend}_"))
    key_dir = work / "keys"
    pg_name = f"bench_rand_{os.getpid()}"
    if backend == "postgresql":
        url = create_pg_database(args.pg, pg_name)
    else:
        url = f"sqlite:///{work / 'allocator.db'}"
    server = None
    db = None
    try:
        crypto.KeyRing.create_missing(key_dir)
        migrate.upgrade(url)
        settings = Settings(env=Environment.TEST, database_url=url, key_dir=key_dir)
        ring = crypto.KeyRing.load(key_dir)
        db = Database.connect(url)
        # Cheap Argon2 for the set-up accounts only: the API authenticates by token digest.
        ctx = ServiceContext.build(settings, db, ring, passwords=crypto.FAST_PASSWORD_HASHING)
        sites = site_codes(args.sites)
        warmup = 4 * args.workers
        total = warmup + sum(n for _, n in levels)
        prepared = prepare(ctx, sites, total)
        today = ctx.now().astimezone(ZoneInfo("Europe/Paris")).date()
        load = Load(sites, prepared.tokens, today)

        env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOCATOR_")}
        env.update(
            ALLOCATOR_DATABASE_URL=url,
            ALLOCATOR_KEY_DIR=str(key_dir),
            ALLOCATOR_ENV="test",
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        )
        server = Server(env, args.workers, args.threads, work / "server.log")
        server.wait_ready()

        version = db.write_engine.dialect.server_version_info if backend == "postgresql" else None
        print(
            f"\n== {backend}: "
            + (f"PostgreSQL {'.'.join(map(str, version or ()))}" if version else "SQLite file")
        )
        print(
            f"server: gunicorn gthread, {args.workers} workers x {args.threads} threads, 127.0.0.1:{server.port}, "
            f"ALLOCATOR_ENV=test; machine: {os.cpu_count()} cores (clients, server and database share them)"
        )
        print(
            f"trial: {len(sites)} sites x 2 admission causes = {2 * len(sites)} strata of {prepared.slots_per_stratum} "
            f"slots (blocks 2/4/6); {prepared.kits_per_site} kits received per site; 3 kits per subject; "
            f"set-up {prepared.setup_seconds:.1f} s"
        )
        print(
            f"mix: request j -> site S(j mod {len(sites)}), cause alternating every {len(sites)} requests; "
            f"one investigator token per site; keep-alive connection per client"
        )

        all_results: list[dict[str, object]] = []
        warm = run_level(server, load, min(4, args.workers), warmup)
        all_results.extend(warm.results)
        print(f"warm-up: {len(warm.results)} randomizations (not timed), errors {sum(warm.errors.values())}")

        rows: list[LevelRow] = []
        for clients, count in levels:
            outcome = run_level(server, load, clients, count)
            all_results.extend(outcome.results)
            rows.append(
                LevelRow(
                    clients,
                    count,
                    len(outcome.results),
                    outcome.errors,
                    outcome.elapsed,
                    outcome.latencies,
                    outcome.cpu,
                )
            )
        server.stop()

        print()
        print(
            f"{'clients':>7} {'requests':>8} {'ok':>6} {'errors':>6} {'seconds':>8} {'rand/s':>8} "
            f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}"
        )
        for row in rows:
            lat = row.latencies
            print(
                f"{row.clients:>7} {row.count:>8} {row.ok:>6} {sum(row.errors.values()):>6} {row.elapsed:>8.2f} "
                f"{row.rate:>8.1f} {1000 * percentile(lat, 50):>7.1f} {1000 * percentile(lat, 90):>7.1f} "
                f"{1000 * percentile(lat, 99):>7.1f} {1000 * (max(lat) if lat else float('nan')):>7.1f}"
            )
            for kind, n in row.errors.most_common():
                print(f"        error x{n}: {kind}")
        print(
            "\nCPU per successful randomization (ms; the machine has "
            f"{os.cpu_count()} cores = {1000 * (os.cpu_count() or 1)} ms of CPU per second):"
        )
        print(f"{'clients':>7} {'gunicorn':>9} {'postgres':>9} {'clients':>8} {'total':>7} {'CPU busy':>9}")
        for row in rows:
            server_cpu, pg_cpu, client_cpu = (1000 * c / max(row.ok, 1) for c in row.cpu)
            busy = sum(row.cpu) / (row.elapsed * (os.cpu_count() or 1)) if row.elapsed else 0.0
            pg = f"{pg_cpu:>9.1f}" if backend == "postgresql" else f"{'-':>9}"
            print(
                f"{row.clients:>7} {server_cpu:>9.1f} {pg} {client_cpu:>8.1f} "
                f"{server_cpu + (pg_cpu if backend == 'postgresql' else 0) + client_cpu:>7.1f} {100 * busy:>8.0f}%"
            )

        print("\nconsistency:")
        checks = check(db, ring, all_results)
        for name, ok, detail in checks:
            print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}")
        consistent = all(ok for _, ok, _ in checks)

        verdict = True
        if backend == "postgresql":
            eight = next((r for r in rows if r.clients == 8), None)
            if eight is not None:
                p99 = 1000 * percentile(eight.latencies, 99)
                errors = sum(eight.errors.values())
                met = eight.rate >= 300 and p99 < 100 and errors == 0 and consistent
                print(
                    f"\ntarget (PostgreSQL, 8 clients: >= 300 rand/s, p99 < 100 ms, 0 errors, 0 duplicates): "
                    f"{'MET' if met else 'MISSED'} ({eight.rate:.1f} rand/s, p99 {p99:.1f} ms, {errors} errors, "
                    f"consistency {'ok' if consistent else 'FAILED'})"
                )
                verdict = met
        errors_total = sum(sum(r.errors.values()) for r in rows)
        return consistent and errors_total == 0 and verdict
    finally:
        if server is not None:
            server.stop()
        if db is not None:
            db.dispose()
        if backend == "postgresql" and not args.keep:
            drop_pg_database(args.pg, pg_name)
        if args.keep:
            print(f"kept: {work}" + (f" and database {pg_name}" if backend == "postgresql" else ""))
        else:
            shutil.rmtree(work, ignore_errors=True)


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
    args = parser.parse_args()
    if args.levels:
        levels = [(int(a), int(b)) for a, b in (part.split(":") for part in args.levels.split(","))]
    elif args.quick:
        levels = [(1, 20), (8, 80), (32, 96)]
    else:
        levels = [(1, 200), (8, 1000), (32, 1000)]
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    ok = True
    for backend in backends:
        ok = run_backend(backend, args, levels) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
