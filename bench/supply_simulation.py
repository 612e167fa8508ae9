"""Automatic resupply at scale (issue 19): a two-year trial of --subjects subjects over --sites sites
on a simulated clock, supplied by the automatic resupply alone; prints the stock-outs (randomizations
refused for lack of kits) and the kits wasted to expiry.

Usage: python bench/supply_simulation.py [--subjects 10000] [--sites 50] [--days 730] [--seed 19]
                                         [--predictive] [--pg URL]

The simulation is tests/support/supply_simulation.py's (the one the 170-subject test runs): the
IFN-gamma definition with --sites sites (bench_randomize.definition), the trial's dosing (three daily
kits), lead times of 3 days (every fifth site: 5), a first batch that expires on day 300 and a second
that reaches the depot on day 200. Every step goes through the services, so a full run takes a long
time (tens of minutes on SQLite); it is not part of CI. SQLite in a temporary directory by default;
--pg runs it in a new database on that PostgreSQL server (dropped afterwards).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_randomize as br

from allocator import crypto, migrate
from allocator.db import Database
from allocator.services.context import ServiceContext
from allocator.settings import Environment, Settings
from tests.support import Clock
from tests.support.supply_simulation import BatchPlan, SupplySimulation, with_supply


def supply_section(sites: list[str], predictive: bool) -> str:
    slow = "".join(f'\n[[supply.sites]]\ncode = "{code}"\nlead_time_days = 5\n' for code in sites[4::5])
    return (
        "[supply]\ninitial_courses = 12\ntrigger_courses = 9\nresupply_courses = 13\nlead_time_days = 3\n"
        f"do_not_ship_days = 60\npredictive = {'true' if predictive else 'false'}\n{slow}"
    )


def whole_blocks(kits: int) -> int:
    return kits + -kits % 4  # two ratio totals of the IFN-gamma trial


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--predictive", action="store_true")
    parser.add_argument("--pg", default=None, help="a PostgreSQL server URL (default: SQLite)")
    args = parser.parse_args()
    sites = br.site_codes(args.sites)
    per_stratum = -(-args.subjects // args.sites // 2)
    text = with_supply(
        br.definition(sites, max(120, 2 * per_stratum + 40)), supply_section(sites, args.predictive)
    )
    work = Path(tempfile.mkdtemp(prefix="supply_sim_"))
    name = f"supply_sim_{os.getpid()}"
    url = br.create_pg_database(args.pg, name) if args.pg else f"sqlite:///{work / 'sim.db'}"
    db = None
    try:
        key_dir = work / "keys"
        crypto.KeyRing.create_missing(key_dir)
        migrate.upgrade(url)
        settings = Settings(env=Environment.TEST, database_url=url, key_dir=key_dir)
        ring = crypto.KeyRing.load(key_dir)
        db = Database.connect(url, limits=settings.db_limits())
        clock = Clock()
        ctx = ServiceContext.build(settings, db, ring, clock=clock, passwords=crypto.FAST_PASSWORD_HASHING)
        started = time.perf_counter()
        simulation = SupplySimulation(
            ctx,
            clock,
            definition_text=text,
            site_codes=sites,
            subjects=args.subjects,
            days=args.days,
            batches=[
                BatchPlan("LOT-A", whole_blocks(args.subjects + 40 * args.sites), 0, 300),
                BatchPlan("LOT-B", whole_blocks(3 * args.subjects + 40 * args.sites), 200, 1100),
            ],
            seed=args.seed,
            progress=lambda line: print(f"  {line} ({time.perf_counter() - started:.0f} s)", flush=True),
        )
        outcome = simulation.run()
        print(f"{args.subjects} subjects, {args.sites} sites, {args.days} days: {outcome.summary()}")
        print(f"stock-outs: {outcome.refused_for_kits} {outcome.stockouts}")
        print(f"kits wasted to expiry: {outcome.wasted_at_sites + outcome.wasted_at_depot}")
        print(f"wall time {time.perf_counter() - started:.0f} s")
        return 0 if not outcome.discrepancies else 1
    finally:
        if db is not None:
            db.dispose()
        if args.pg:
            br.drop_pg_database(args.pg, name)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
