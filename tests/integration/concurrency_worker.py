"""Worker of the concurrency test: runs randomizations from one process with several threads.

Kept in its own module so that `multiprocessing` (spawn) can import it in a fresh interpreter."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from allocator import crypto
from allocator.audit import Actor
from allocator.db import Database
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.errors import DomainError
from allocator.services.subjects import randomize
from allocator.settings import Environment, Settings

ALL = Scope(all_sites=True, site_ids=frozenset())


def run(
    url: str, key_dir: str, jobs: list[tuple[str, str, str, dict[str, object]]], threads: int
) -> list[tuple[str, str, str]]:
    """jobs: (site, screening number, cause, eligibility). Returns (screening number, outcome, detail)."""
    settings = Settings(env=Environment.TEST, database_url=url, key_dir=Path(key_dir))
    db = Database.connect(url, pool_size=threads)
    ctx = ServiceContext.build(
        settings, db, crypto.KeyRing.load(Path(key_dir)), passwords=crypto.FAST_PASSWORD_HASHING
    )

    def one(job: tuple[str, str, str, dict[str, object]]) -> tuple[str, str, str]:
        site, number, cause, eligibility = job
        actor = Actor(
            user_id=None,
            username=f"load-{site}",
            name="Load test",
            role="investigator",
            site_code=site,
            request_id=number,
        )
        request = randomize.RandomizationRequest(
            site=site, screening_number=number, eligibility=eligibility, strata={"admission_cause": cause}
        )
        try:
            result = randomize.randomize(ctx, actor, "IFNG-PAIS", request, ALL)
        except DomainError as exc:
            return number, exc.slug, exc.detail
        return number, "ok", result.subject_number

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(one, jobs))
    finally:
        db.dispose()
