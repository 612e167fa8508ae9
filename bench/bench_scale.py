"""Every list, report page, CSV and PDF of a large trial, as a monitor and as the unblinded
statistician: wall time, CPU, SQL statements and peak memory per request (issue 21).

Usage: python bench/bench_scale.py [--backend sqlite|postgresql|both] [--subjects N] [--sites N]
                                   [--repeat R] [--pg URL] [--only SUBSTRING] [--no-pdf] [--keep]
                                   [--worker-memory] [--world DIR] [--unblinded]
Targets (issue 21, 2-core machine, 5,000 subjects over 50 sites): every page and CSV < 1 s, every
PDF < 5 s, a page's statement count independent of the number of subjects, peak memory < 300 MB
for any single request, and the same figures at 500 subjects within 20 %.

The trial is bench_randomize's (the IFN-gamma definition with --sites sites), prepared with the
services as an operator would, then filled as the issue's trial was (`populate`): --subjects
subjects randomized over 300 days at every hour of the day, 6 ineligible screenings per 10
subjects, all but one in 19 dispensed and given each planned dose at the bedside, one in ten with a
stratum correction, one in fifty withdrawn, ten emergency unblindings (5,000 subjects: about 45,000
audit entries, the issue's 42,382). The build runs on a simulated clock; the reads on the real one.

The requests are served in this process by the Flask application (the test client, no network),
one at a time, each --repeat times (the median is printed): what is measured is the application
and its database, not a server. CPU is this process's own (time.process_time) plus, on
PostgreSQL, the backends connected to the benchmark's own database (bench_randomize.CpuMeter);
statements are counted with an engine event listener; peak memory is the process's peak resident
set (VmHWM), reset before each request (/proc/self/clear_refs). A hello-world request
(bench/hello_app.py) is timed the same way in the same run, as the floor of this machine.

That peak includes everything the benchmark process holds after building the trial. With
--worker-memory, each request is also served once more by a fresh process that only loads the
application on the same database and serves that one request with the reader's session cookie or
token (`--one`): its peak resident set (VmHWM, from its start) is what a worker that served only
this request would reach, and "worker MB" is printed beside its size before the request.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_randomize as br
import hello_app

import kits as kitlib
from allocator import audit, crypto, migrate
from allocator.app import create_app
from allocator.db import Database
from allocator.services import (
    audit_trail,
    auth,
    bedside,
    dispensing,
    exports,
    lookups,
    signatures,
    unblinding,
)
from allocator.services.accounts import users
from allocator.services.closeout import releases, state
from allocator.services.context import ServiceContext
from allocator.services.reports.audit_review import REVIEW_KINDS
from allocator.services.reports.catalogue import REPORTS
from allocator.services.subjects import corrections, withdrawal
from allocator.services.subjects import randomize as subjects_randomize
from allocator.services.supply import kit_check, kit_rules
from allocator.settings import Environment, Settings
from allocator.uat import eligible_on

T = f"/trials/{br.TRIAL}"
SIGNED = signatures.SignatureRequest(password=br.PASSWORD)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def peak_rss_reset() -> None:
    with contextlib.suppress(OSError):  # not Linux: the peak is then the process's own
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class SimulatedClock:
    """The trial's clock while it is built: set by `populate` to each event's moment, spread over
    months and over every hour of the day as real recruitment is; the real time otherwise."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def __call__(self) -> datetime:
        return self.at if self.at is not None else datetime.now(UTC)


# What the trial held (issue 21): 5,000 subjects, 4,737 dispensed, 14,115 bedside doses,
# 100 withdrawals, 10 emergency unblindings, 3,000 ineligible screenings, 42,382 audit entries.
SPAN_DAYS = 300  # recruitment; every event of the trial is over before the benchmark runs
NOT_DISPENSED = 19  # one subject in 19 is never dispensed (263 of 5,000)
INELIGIBLE = (0, 3, 6)  # subjects j with j mod 10 here come after two ineligible screenings: 3,000 for 5,000
UNBLINDINGS = 10


def populate(ctx: ServiceContext, clock: SimulatedClock, sites: list[str], count: int) -> float:
    """Build the issue's trial through the services, as its staff would over `SPAN_DAYS` days, every
    event in time order on the simulated clock: `count` subjects randomized (site j mod N, the
    admission cause alternating) at moments spread over the span and over the hours of the day;
    6 ineligible screenings per 10 subjects, just before; every subject but one in 19 dispensed 20
    minutes after and given each planned dose at the bedside at its planned hour; one in ten with a
    stratum correction; one in fifty withdrawn, half of them between their second and third doses
    (the third is then not given), half after the last; ten emergency unblindings. Returns the
    seconds it took."""
    started = time.perf_counter()
    investigators = {code: br._user(ctx, f"inv-b-{code.lower()}", "investigator", code) for code in sites}
    pharmacists = {code: br._user(ctx, f"ph-{code.lower()}", "pharmacist", code) for code in sites}
    nurses = {code: br._user(ctx, f"nu-{code.lower()}", "nurse", code) for code in sites}
    mac = kit_rules.mac(ctx)
    definition = lookups.trial_definition(ctx, br.TRIAL)
    schedule = [(d.label, d.offset_hours) for d in definition.dispensing.schedule]
    last_dose = timedelta(hours=max(offset for _, offset in schedule), minutes=45)
    # The last randomization's last dose and withdrawal are over a day before now.
    end = datetime.now(UTC).replace(microsecond=0) - last_dose - timedelta(days=2)
    begin = end - timedelta(days=SPAN_DAYS)
    rng = random.Random(21)
    span = SPAN_DAYS * 86400
    moments = sorted(begin + timedelta(seconds=rng.uniform(0, span)) for _ in range(count))
    events: list[tuple[datetime, int, Callable[[], Any]]] = []  # (moment, order, action): the heap
    queued = 0
    unblind_every = max(1, count // UNBLINDINGS)
    withdrawn: set[str] = set()

    def at(moment: datetime, action: Callable[[], Any]) -> None:
        nonlocal queued
        queued += 1
        heapq.heappush(events, (moment, queued, action))

    def dose(site: str, number: str, kits: dict[str, str], day: str) -> Callable[[], Any]:
        def give() -> None:
            if number in withdrawn:  # no further dose once withdrawn (REP-04)
                return
            bedside.record_scan(
                ctx,
                nurses[site],
                br.TRIAL,
                payload=kitlib.build_payload(br.TRIAL, kits[day], day, mac),
                subject_number=number,
                day=day,
                scope=br.EVERYWHERE,
                confirmation="given as prescribed",  # used only if a dose falls on another day
            )

        return give

    def withdraw(site: str, number: str) -> Callable[[], Any]:
        def record() -> None:
            withdrawn.add(number)
            withdrawal.withdraw(
                ctx,
                investigators[site],
                br.TRIAL,
                number,
                kind="consent_withdrawn",
                effective_date=ctx.now().date(),
                reason="the patient asked",
                scope=br.EVERYWHERE,
                signature=SIGNED,
                agreement_ref=None,
                is_investigator=True,
            )

        return record

    def dispense(site: str, number: str, kits: dict[str, str], randomized: datetime) -> Callable[[], Any]:
        def record() -> None:
            dispensing.dispense(
                ctx, pharmacists[site], br.TRIAL, number, kits, scope=br.EVERYWHERE, signature=SIGNED
            )
            for day, offset in schedule:
                at(randomized + timedelta(hours=offset, minutes=45), dose(site, number, kits, day))

        return record

    def correct(site: str, number: str, j: int) -> Callable[[], Any]:
        return lambda: corrections.correct_stratum(
            ctx,
            investigators[site],
            br.TRIAL,
            number,
            factor="admission_cause",
            level=br.CAUSES[(j // len(sites) + 1) % 2],
            reason="cause of admission re-assessed",
            scope=br.EVERYWHERE,
            agreement_ref=None,
            is_investigator=True,
        )

    def unblind(site: str, number: str) -> Callable[[], Any]:
        return lambda: unblinding.emergency_unblind(
            ctx,
            investigators[site],
            br.TRIAL,
            number,
            reason_category="serious_adverse_event",
            reason="severe reaction needing a specific treatment",
            confirmed=True,
            signature=SIGNED,
            scope=br.EVERYWHERE,
        )

    def randomize(j: int, moment: datetime) -> Callable[[], Any]:
        def record() -> None:
            site = sites[j % len(sites)]
            for k in range(2 if j % 10 in INELIGIBLE else 0):
                answers = {**eligible_on(moment.date()), "consent": "no" if k == 0 else "yes", "age": 12}
                with contextlib.suppress(subjects_randomize.Ineligible):
                    subjects_randomize.randomize(
                        ctx,
                        investigators[site],
                        br.TRIAL,
                        subjects_randomize.RandomizationRequest(
                            site=site,
                            screening_number=f"{site}-{count + 2 * j + k:05d}",
                            eligibility=answers,
                            strata={"admission_cause": br.CAUSES[0]},
                        ),
                        br.EVERYWHERE,
                    )
            result = subjects_randomize.randomize(
                ctx,
                investigators[site],
                br.TRIAL,
                subjects_randomize.RandomizationRequest(
                    site=site,
                    screening_number=f"{site}-{j:05d}",
                    eligibility=eligible_on(moment.date()),
                    strata={"admission_cause": br.CAUSES[(j // len(sites)) % 2]},
                ),
                br.EVERYWHERE,
            )
            number = result.subject_number
            kits = {k.day: k.kit_number for k in result.kits}
            if j % NOT_DISPENSED != 3:
                at(moment + timedelta(minutes=20), dispense(site, number, kits, moment))
            if j % 10 == 1:
                at(moment + timedelta(minutes=30), correct(site, number, j))
            if j % unblind_every == unblind_every // 2:
                at(moment + timedelta(hours=2), unblind(site, number))
            if j % 50 == 7:  # between the second and third doses, or after the last
                after = timedelta(hours=30) if j % 100 == 7 else last_dose + timedelta(minutes=45)
                at(moment + after, withdraw(site, number))
            if (j + 1) % 500 == 0:
                print(
                    f"  {j + 1} subjects ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True
                )

        return record

    for j, moment in enumerate(moments):
        at(moment, randomize(j, moment))
    while events:
        clock.at, _, action = heapq.heappop(events)
        action()
    clock.at = None
    return time.perf_counter() - started


def sign_in(app: Any, ctx: ServiceContext, username: str, *, totp: bool) -> Any:
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    token = CSRF.search(client.get("/login").get_data(as_text=True)).group(1)  # type: ignore[union-attr]
    response = client.post(
        "/login", data={"username": username, "password": br.PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    if totp:
        from sqlalchemy import select

        from allocator.models import User

        with ctx.db.reading() as session:
            user_id = session.execute(select(User.id).where(User.username == username)).scalar_one()
        enrollment = auth.start_totp_enrollment(ctx, user_id)
        import base64

        secret = base64.b32decode(enrollment.secret_base32 + "=" * (-len(enrollment.secret_base32) % 8))
        auth.confirm_totp_enrollment(
            ctx,
            user_id,
            None,
            crypto.totp_now(secret, ctx.now()),
            auth.Client("127.0.0.1", "bench", "enrol"),
            ticket=enrollment.ticket,
        )
        time.sleep(31)  # a code is never accepted twice
        page = client.get("/account/totp").get_data(as_text=True)
        done = client.post(
            "/account/totp",
            data={"code": crypto.totp_now(secret, ctx.now()), "csrf_token": CSRF.search(page).group(1)},  # type: ignore[union-attr]
        )
        assert done.status_code == 302, done.get_data(as_text=True)[:300]
    return client


# Every PDF is built during its request, long ones too: what is timed is the cost a report job pays
# in its background thread (a download above REPORT_JOB_ROWS rows would only time the redirect).
NO_JOBS = 10**9


@dataclass
class Row:
    who: str
    path: str
    status: int
    size: int
    wall: float
    cpu: float
    statements: int
    peak_mb: float
    worker_mb: float = float("nan")  # --worker-memory: a fresh process's peak serving this request
    worker_base_mb: float = float("nan")  # that process's size before the request


@dataclass(frozen=True)
class Reader:
    """How a fresh process presents itself as one reader: a session cookie or a bearer token."""

    cookie: str | None = None
    token: str | None = None


def serve_one(url: str, keys: str, path: str, reader: Reader) -> dict[str, Any]:
    """In this (fresh) process: load the application on `url`, serve `path` once as `reader`, and
    return its status, size, and this process's resident size before the request and its peak."""
    settings = Settings(env=Environment.TEST, database_url=url, key_dir=Path(keys))
    db = Database.connect(url)
    ring = crypto.KeyRing.load(Path(keys))
    app = create_app(settings, db=db, ring=ring, passwords=crypto.FAST_PASSWORD_HASHING)
    app.config["REPORT_JOB_ROWS"] = NO_JOBS
    logging.getLogger("allocator").setLevel(logging.WARNING)
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    headers = {}
    if reader.cookie is not None:
        client.set_cookie(app.config["SESSION_COOKIE_NAME"], reader.cookie)
    if reader.token is not None:
        headers["Authorization"] = f"Bearer {reader.token}"
    client.get("/login")  # the first request's one-time costs (templates, catalogues) are not this one's
    base = current_rss_mb()
    response = client.get(path, headers=headers)
    size = len(response.get_data())
    return {"status": response.status_code, "size": size, "base_mb": base, "peak_mb": peak_rss_mb()}


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def in_fresh_process(url: str, keys: Path, path: str, reader: Reader) -> dict[str, Any]:
    command = [sys.executable, __file__, "--one", path, "--url", url, "--keys", str(keys)]
    if reader.cookie is not None:
        command += ["--cookie", reader.cookie]
    if reader.token is not None:
        command += ["--token", reader.token]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=900)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(
    who: str, path: str, call: Callable[[], Any], db: Database, meter: br.CpuMeter, repeat: int
) -> Row:
    seen: list[int] = []
    walls, cpus, peaks = [], [], []
    status = size = 0

    def note(*_args: Any) -> None:
        seen.append(1)

    for _ in range(repeat):
        seen.clear()
        peak_rss_reset()
        event.listen(db.write_engine, "before_cursor_execute", note)
        if db.read_engine is not db.write_engine:
            event.listen(db.read_engine, "before_cursor_execute", note)
        _, backends_before = meter.sample()
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        response = call()
        body = response.get_data()
        wall = time.perf_counter() - wall_before
        cpu = time.process_time() - cpu_before
        _, backends_after = meter.sample()
        event.remove(db.write_engine, "before_cursor_execute", note)
        if db.read_engine is not db.write_engine:
            event.remove(db.read_engine, "before_cursor_execute", note)
        walls.append(wall)
        cpus.append(cpu + meter.used(backends_before, backends_after))
        peaks.append(peak_rss_mb())
        status, size = response.status_code, len(body)
    return Row(
        who, path, status, size, statistics.median(walls), statistics.median(cpus), len(seen), max(peaks)
    )


def world_of(backend: str, args: argparse.Namespace) -> tuple[str, Path, bool]:
    """The database URL and key directory of the run, and whether the trial is already built there.

    Without --world: a new database and new keys. With --world DIR: DIR holds the keys and, on
    SQLite, the database file; on PostgreSQL, DIR/pg_database names the (kept) database. A world
    built once is read again by later runs, which then skip the set-up."""
    if args.world is None:
        keys = Path(tempfile.mkdtemp(prefix="bench-scale-keys-"))
        if backend == "postgresql":
            return br.create_pg_database(args.pg, f"bench_scale_{os.getpid()}"), keys, False
        return f"sqlite:///{tempfile.mkdtemp(prefix='bench-scale-')}/allocator.db", keys, False
    world = args.world / backend
    world.mkdir(parents=True, exist_ok=True)
    keys = world / "keys"
    built = (world / "built").exists()
    if not built:  # a world (re)built: any unblinded copy beside it was of another world
        (world / "unblinded").unlink(missing_ok=True)
    if backend == "sqlite":
        if not built:  # a build that stopped part-way is started again
            (world / "allocator.db").unlink(missing_ok=True)
        return f"sqlite:///{world / 'allocator.db'}", keys, built
    named = world / "pg_database"
    if not named.exists():
        named.write_text(f"bench_scale_world_{os.getpid()}")
    name = named.read_text().strip()
    return (br.pg_url(args.pg, name) if built else br.create_pg_database(args.pg, name)), keys, built


def unblinded_copy(backend: str, args: argparse.Namespace, url: str) -> tuple[str, bool]:
    """--unblinded with --world: the URL of a copy of the world kept beside it (made once, so that
    the world itself stays blinded for the monitor's runs), and whether the copy is already locked
    and unblinded. Without --world, the run's own database is unblinded."""
    if args.world is None:
        return url, False
    world = args.world / backend
    done = (world / "unblinded").exists()
    if backend == "sqlite":
        copy = world / "allocator-unblinded.db"
        if not done:
            shutil.copyfile(world / "allocator.db", copy)
        return f"sqlite:///{copy}", done
    name = (world / "pg_database").read_text().strip()
    if done:
        return br.pg_url(args.pg, f"{name}_unblinded"), True
    return br.create_pg_database(args.pg, f"{name}_unblinded", template=name), False


def close_out(ctx: ServiceContext) -> None:
    """The database lock and the final unblinding, each signed, by a statistician of the run."""
    closer = br._user(ctx, f"closer-{os.getpid()}", "unblinded_statistician", None)
    state.lock(ctx, closer, br.TRIAL, reason="bench: last patient out", signature=SIGNED)
    state.unblind_trial(ctx, closer, br.TRIAL, reason="bench: final analysis", signature=SIGNED)


@dataclass(frozen=True, slots=True)
class Done:
    """What `measure` reads of a response, for a service called directly (a signed release)."""

    body: bytes
    status_code: int = 200

    def get_data(self) -> bytes:
        return self.body


HELLO_TIMES = 1000


def hellos(client: Any) -> bytes:
    body = b""
    for _ in range(HELLO_TIMES):
        body = client.get("/hello").get_data()
    return body


def whole_verification(ctx: ServiceContext) -> bytes:
    """`allocator audit verify` in one process: every chain verified whole, and kept."""
    with ctx.db.read_engine.connect() as connection:
        chains = audit.chains(connection)
    marks = audit_trail.verification_marks(ctx, chains)  # before the chains are read
    witness = ctx.settings.audit_witness
    with ctx.db.read_engine.connect() as connection:
        results = [audit.verify_chain(connection, ctx.ring, chain, witness) for chain in chains]
    assert all(result.ok for result in results), [result.summary() for result in results]
    audit_trail.keep_whole(ctx, results, marks)
    return "\n".join(result.summary() for result in results).encode()


def whole_kit_check(ctx: ServiceContext) -> bytes:
    """The kit histories of `allocator integrity-check` (daily): every kit checked whole, kept."""
    checks = kit_check.check_whole(ctx, br.ACTOR)
    assert all(checked.ok and checked.kept for checked in checks), checks
    return "\n".join(f"{checked.trial_code}: {checked.kits} kits" for checked in checks).encode()


def run_backend(backend: str, args: argparse.Namespace) -> list[Row]:
    url, keys, built = world_of(backend, args)
    crypto.KeyRing.create_missing(keys)
    try:
        settings = Settings(env=Environment.TEST, database_url=url, key_dir=keys)
        migrate.upgrade(url)  # a world built by an older revision is brought to this one
        db = Database.connect(url)
        ring = crypto.KeyRing.load(keys)
        clock = SimulatedClock()
        ctx = ServiceContext.build(settings, db, ring, clock=clock, passwords=crypto.FAST_PASSWORD_HASHING)
        if built:
            print(f"{backend}: the trial of {args.world} read again (its own size)", file=sys.stderr)
        else:
            sites = br.site_codes(args.sites)
            clock.at = datetime.now(UTC) - timedelta(days=SPAN_DAYS + 10)  # set up before recruitment
            prepared = br.prepare(ctx, sites, args.subjects)
            took = populate(ctx, clock, sites, args.subjects)
            print(
                f"{backend}: trial prepared in {prepared.setup_seconds:.0f} s, {args.subjects} subjects in {took:.0f} s",
                file=sys.stderr,
            )
            br._user(ctx, "monitor", "monitor", None)
            if args.world is not None:
                (args.world / backend / "built").write_text(f"{args.subjects} subjects, {args.sites} sites\n")
        if args.unblinded:
            # The unblinded statistician's reads need a trial locked and unblinded: a copy of the
            # world (the world stays blinded), closed out once.
            db.dispose()
            url, unblinded_already = unblinded_copy(backend, args, url)
            db = Database.connect(url)
            ctx = ServiceContext.build(
                settings, db, ring, clock=clock, passwords=crypto.FAST_PASSWORD_HASHING
            )
            if not unblinded_already:
                clock.at = None
                close_out(ctx)
                if args.world is not None:
                    (args.world / backend / "unblinded").write_text("locked and unblinded\n")
            settings = replace(settings, database_url=url)
        if backend == "postgresql":
            # What autovacuum does within a minute of a bulk load, on every run (a world built
            # earlier included): a server with autovacuum off (this machine's) otherwise plans on
            # the statistics of a table a fifth of its size, sorting on disk and joining row by row.
            with db.write_engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        app = create_app(settings, db=db, ring=ring, passwords=crypto.FAST_PASSWORD_HASHING)
        app.config["REPORT_JOB_ROWS"] = NO_JOBS
        logging.getLogger("allocator").setLevel(logging.WARNING)  # one JSON line per request otherwise
        monitor = sign_in(app, ctx, "monitor", totp=False)
        # The statistician signs in with a second factor, enrolled here (31 s: a code is never
        # accepted twice), only when the run reads a restricted report; a world read again gets
        # a statistician of its own.
        wanted = lambda p: (not args.only or args.only in p) and not (args.no_pdf and p.endswith("/pdf"))  # noqa: E731
        statistician = None
        if any(wanted(f"{T}/reports/restricted/{n}") for n, r in REPORTS.items() if r.restricted) or any(
            wanted(f"{T}/{page}")
            for page in ("lists", "quality", "code-break/sheets", "audit/unblinded", "drills")
        ):
            username = "statistician"
            if built:
                username = f"statistician-{os.getpid()}"
                br._user(ctx, username, "unblinded_statistician", None)
            statistician = sign_in(app, ctx, username, totp=True)
        token = users.create_token(ctx, br.ACTOR, "monitor", "bench").token
        api = app.test_client()
        api.environ_base["wsgi.url_scheme"] = "https"
        hello = hello_app.app.test_client()
        meter = br.CpuMeter([], url if backend == "postgresql" else None)
        # The anchor: this machine's speed at the moment of the run (it moves by a third from one
        # quarter of an hour to the next on the shared development machine). One hello-world is
        # too short to time, so HELLO_TIMES of them in a row: compare the requests in those units.
        plan: list[tuple[str, str, Callable[[], Any]]] = [
            ("-", f"hello world x {HELLO_TIMES}", lambda: Done(hellos(hello)))
        ]
        # What a deployed server's daily `allocator audit verify` does before anyone reads (issue 21):
        # every chain verified whole and kept, so that the audit pages verify only the entries
        # appended since. Its cost is printed here, apart from the pages'.
        plan.append(("-", "audit verify, every chain (daily; kept)", lambda: Done(whole_verification(ctx))))
        # ... and `allocator integrity-check`'s whole check of the kit histories, kept, so that the
        # kit reconciliation pages check only the kits that moved since.
        plan.append(("-", "integrity-check, every kit (daily; kept)", lambda: Done(whole_kit_check(ctx))))
        monitor_paths = [
            f"{T}/subjects",
            f"{T}/screening",
            *(f"{T}/reports/{n}{s}" for n in REPORTS for s in ("", "/csv", "/pdf")),
            *(f"{T}/reports/review/{n}{s}" for n in REVIEW_KINDS for s in ("", "/csv", "/pdf")),
            f"{T}/audit",
            f"{T}/audit.csv",
        ]
        plan += [("monitor", p, lambda p=p: monitor.get(p)) for p in monitor_paths]
        api_paths = (f"/api/v1{T}/subjects", f"/api/v1{T}/audit", f"/api/v1{T}/audit/verify")
        plan += [
            ("monitor", f"API {p}", lambda p=p: api.get(p, headers={"Authorization": f"Bearer {token}"}))
            for p in api_paths
        ]
        # The operational pages of the trial manager, who reads every site (issue 21's table: the
        # pharmacy queue of all sites, the kit and code-break reconciliations), when the run reads them.
        operations = {
            "manager": [
                f"{T}/{page}"
                for page in (
                    "pharmacy",
                    "supply",
                    "stock",
                    "shipments",
                    "reconciliation",
                    "reconciliation.csv",
                    "code-break",
                    "code-break.csv",
                    "strata",
                    "sites",
                    "returns",
                    "excursions",
                    "closeout",
                )
            ],
        }
        staff: dict[str, Any] = {}
        for role, paths in operations.items():
            if any(wanted(p) for p in paths):
                username = f"{role}-all-{os.getpid()}"
                br._user(ctx, username, "trial_manager", None)
                staff[role] = sign_in(app, ctx, username, totp=False)
                plan += [(role, p, lambda p=p, c=staff[role]: c.get(p)) for p in paths]
        cookie = app.config["SESSION_COOKIE_NAME"]
        readers = {"monitor": Reader(cookie=monitor.get_cookie(cookie).value), "API": Reader(token=token)}
        readers |= {role: Reader(cookie=client.get_cookie(cookie).value) for role, client in staff.items()}
        if statistician is not None:
            readers["statistician"] = Reader(cookie=statistician.get_cookie(cookie).value)
        restricted = [
            f"{T}/reports/restricted/{n}{s}"
            for n, r in REPORTS.items()
            if r.restricted
            for s in ("", "/csv", "/pdf")
        ]
        # The statistician's own pages, which grow with the lists, the documents and the trail.
        restricted += [
            f"{T}/{page}"
            for page in (
                "lists",
                "quality",
                "code-break/sheets",
                "audit/unblinded",
                "drills",
                "unblinded-roles",
            )
        ]
        if statistician is not None:
            plan += [("statistician", p, lambda p=p: statistician.get(p)) for p in restricted]
        if args.unblinded:
            # The signed releases, through the services (their pages are a signature form): the
            # final listing and the unblinded CSV export, each read in full.
            reader = br._user(ctx, f"releaser-{os.getpid()}", "unblinded_statistician", None)
            plan += [
                (
                    "statistician",
                    "final unblinded listing (service)",
                    lambda: Done(
                        releases.unblinded_listing(ctx, reader, br.TRIAL, signature=SIGNED).csv.encode()
                    ),
                ),
                (
                    "statistician",
                    "unblinded csv export (service)",
                    lambda: Done(
                        b"".join(
                            exports.export_trial(
                                ctx, reader, br.TRIAL, "csv", name="x.csv", unblinded=True, signature=SIGNED
                            ).files.values()
                        )
                    ),
                ),
            ]
        rows = []
        for who, path, call in plan:
            if who != "-" and not wanted(path):
                continue
            row = measure(who, path, call, db, meter, args.repeat)
            if args.worker_memory and who != "-":
                api_call = path.startswith("API ")
                one = in_fresh_process(
                    url, keys, path.removeprefix("API "), readers["API" if api_call else who]
                )
                assert one["status"] == row.status, (path, one)
                row.worker_mb, row.worker_base_mb = one["peak_mb"], one["base_mb"]
            rows.append(row)
            worker = (
                f" {row.worker_mb:6.0f} MB worker ({row.worker_base_mb:.0f} before)"
                if args.worker_memory
                else ""
            )
            print(
                f"{backend:10} {row.who:12} {row.path:58} {row.status} {row.size / 1024:9.0f} KB "
                f"{row.wall:8.3f} s {row.cpu:8.3f} s cpu {row.statements:6} sql {row.peak_mb:7.0f} MB"
                + worker,
                flush=True,
            )
        meter.close()
        return rows
    finally:
        if backend == "postgresql" and not args.keep and args.world is None:
            br.drop_pg_database(args.pg, url.rsplit("/", 1)[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--subjects", type=int, default=5000)
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", default=br.DEFAULT_PG)
    parser.add_argument("--only", default="")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    parser.add_argument(
        "--world",
        type=Path,
        default=None,
        help="build the trial in this directory once (keys, SQLite file or the PostgreSQL database's name) "
        "and read it again on later runs",
    )
    parser.add_argument("--no-pdf", action="store_true", help="skip the PDFs (the longest requests)")
    parser.add_argument(
        "--unblinded",
        action="store_true",
        help="read the trial locked and unblinded (a copy of the --world, closed out once): the restricted "
        "reports with their arms, the final listing and the unblinded export, as the unblinded statistician",
    )
    parser.add_argument(
        "--worker-memory",
        action="store_true",
        help="also serve each request in a fresh process and print its peak resident size",
    )
    # --one: the fresh process of --worker-memory (internal)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--keys", help=argparse.SUPPRESS)
    parser.add_argument("--cookie", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(serve_one(args.url, args.keys, args.one, Reader(args.cookie, args.token))))
        return 0
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    print(
        f"bench_scale: {args.subjects} subjects over {args.sites} sites; median of {args.repeat}; "
        "columns: backend, reader, request, status, size, wall, CPU, SQL statements, peak RSS",
        flush=True,
    )
    for backend in backends:
        run_backend(backend, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
