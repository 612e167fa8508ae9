"""Where the CPU of one randomization goes, in-process (issue 16): the trial of bench_randomize.py
on a fresh PostgreSQL database, N randomizations through the Flask test client (the full request
path: guard, idempotency layer, service, JSON answer) under cProfile with a CPU clock (waiting on
the database counts nothing), then the self time grouped by package, the top functions, and the
statements sent per randomization. cProfile's own overhead inflates the absolute figures; the
shares are what it is for. Request log lines go to stderr: 2>/dev/null.

Usage: python bench/profile_randomize.py [--count N] [--pg URL] [--slots N] [--kits-per-site N] [--plain]
                                        [--dump FILE]

--plain runs the same randomizations without the profiler and prints the CPU per randomization of
this process and of the benchmark database's own backends: the figure to compare two versions of
the code with, in the same conditions.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_randomize as bench

from allocator import crypto, migrate
from allocator.app import create_app
from allocator.db import Database
from allocator.services.context import ServiceContext
from allocator.settings import Environment, Settings

GROUPS = (
    ("sqlalchemy", "/sqlalchemy/"),
    ("psycopg", "/psycopg"),
    ("flask/werkzeug/jinja", ("/flask/", "/werkzeug/", "/jinja2/", "/flask_")),
    ("cryptography", "/cryptography/"),
    ("allocator", "/allocator/"),
    ("json", "/json/"),
)


def group_of(filename: str) -> str:
    for name, marks in GROUPS:
        for mark in (marks,) if isinstance(marks, str) else marks:
            if mark in filename:
                return name
    return "python stdlib/other" if filename != "~" else "builtins (C)"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--pg", default=bench.DEFAULT_PG)
    parser.add_argument("--slots", type=int, default=None)
    parser.add_argument("--kits-per-site", type=int, default=None)
    parser.add_argument(
        "--plain",
        action="store_true",
        help="no profiler: CPU per randomization of this process and of its own database backends",
    )
    parser.add_argument(
        "--dump", type=Path, default=None, help="also write the raw profile (pstats) to this file"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="profile_rand_"))
    name = f"profile_rand_{os.getpid()}"
    url = bench.create_pg_database(args.pg, name)
    db = None
    try:
        key_dir = work / "keys"
        crypto.KeyRing.create_missing(key_dir)
        migrate.upgrade(url)
        settings = Settings(env=Environment.TEST, database_url=url, key_dir=key_dir)
        ring = crypto.KeyRing.load(key_dir)
        db = Database.connect(url, limits=settings.db_limits())
        ctx = ServiceContext.build(settings, db, ring, passwords=crypto.FAST_PASSWORD_HASHING)
        sites = bench.site_codes(2)
        prepared = bench.prepare(ctx, sites, 2 * args.count + 50, args.slots, args.kits_per_site)
        load = bench.Load(sites, prepared.tokens, ctx.now().astimezone(ZoneInfo("Europe/Paris")).date())
        app = create_app(settings, db=db, ring=ring)
        client = app.test_client()

        def one() -> None:
            site, _, body = load.body(load.take())
            response = client.post(
                f"/api/v1/trials/{bench.TRIAL}/subjects",
                data=body,
                headers={
                    "Authorization": f"Bearer {prepared.tokens[site]}",
                    "Content-Type": "application/json",
                },
                base_url="https://localhost",
            )
            if response.status_code != 201:
                raise SystemExit(f"HTTP {response.status_code}: {json.dumps(response.get_json())[:300]}")

        for _ in range(20):  # warm-up: statements prepared, caches filled
            one()
        statements: Counter[str] = Counter()

        def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            statements[" ".join(statement.split())[:110]] += 1

        event.listen(db.write_engine, "before_cursor_execute", seen)
        one()
        event.remove(db.write_engine, "before_cursor_execute", seen)

        if args.plain:
            meter = bench.CpuMeter([], url)
            _, before = meter.sample()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.count):
                one()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            _, after = meter.sample()
            backends = meter.used(before, after)
            meter.close()
            print(
                f"{args.count} randomizations in-process (Flask test client), PostgreSQL, not profiled: "
                f"wall {1000 * wall / args.count:.2f} ms, CPU per randomization: process "
                f"{1000 * cpu / args.count:.2f} ms + own backends {1000 * backends / args.count:.2f} ms "
                f"= {1000 * (cpu + backends) / args.count:.2f} ms; {sum(statements.values())} statements"
            )
            return 0
        profiler = cProfile.Profile(time.process_time)  # CPU time, not time spent waiting
        t0, c0 = time.perf_counter(), time.process_time()
        profiler.enable()
        for _ in range(args.count):
            one()
        profiler.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        stats = pstats.Stats(profiler)
        if args.dump is not None:
            stats.dump_stats(args.dump)
        raw = stats.stats  # type: ignore[attr-defined]
        total = sum(entry[2] for entry in raw.values())
        groups: Counter[str] = Counter()
        for (filename, _, _), entry in raw.items():
            groups[group_of(filename)] += entry[2]
        print(f"{args.count} randomizations in-process (Flask test client), PostgreSQL, profiled:")
        print(
            f"  wall {1000 * wall / args.count:.2f} ms, process CPU {1000 * cpu / args.count:.2f} ms per randomization"
        )
        print("self time by package:")
        for group, seconds in groups.most_common():
            print(f"  {group:<22} {100 * seconds / total:5.1f} %  {1000 * seconds / args.count:6.2f} ms")
        print(
            f"statements sent by one randomization (write engine = the only engine): {sum(statements.values())}"
        )
        for statement, n in statements.most_common():
            print(f"  {n:>2} x {statement}")
        print("top functions by self time:")
        stats.sort_stats("tottime").print_stats(25)
        print("top allocator functions by cumulative time:")
        stats.sort_stats("cumulative").print_stats("/allocator/", 25)
        return 0
    finally:
        if db is not None:
            db.dispose()
        bench.drop_pg_database(args.pg, name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
