"""The unblinding forms offer the subjects within reach to be chosen (issue 13); issue 21 reads
them in one statement instead of building every subject's view (0.3-0.45 s of CPU for a
pharmacovigilance officer's form at 5,000 subjects, 0.013 s now). The choices are the views'
subjects, numbers, sites and randomization times, by site and number, within the reader's sites."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from allocator.models import Site
from allocator.permissions import Scope
from allocator.services.context import ServiceContext
from allocator.services.subjects import views
from tests.support import TRIAL, randomize, ready_trial


@pytest.mark.req("UNB-01")
def test_the_choices_are_the_subjects_within_reach(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx)
    for n, site in enumerate(("P2", "P1", "P1", "P2", "P1")):
        randomize(ctx, ready, f"{site}-{n + 1:04d}", site)
    with ctx.db.reading() as session:
        p2 = session.execute(select(Site.id).where(Site.code == "P2")).scalar_one()
    for scope in (
        Scope(all_sites=True, site_ids=frozenset()),
        Scope(all_sites=False, site_ids=frozenset({p2})),
    ):
        expected = sorted(
            ((s.subject_number, s.site, s.randomized_at) for s in views.subjects(ctx, TRIAL, scope)),
            key=lambda choice: (choice[1], choice[0]),
        )
        chosen = [
            (c.subject_number, c.site, c.randomized_at) for c in views.subject_choices(ctx, TRIAL, scope)
        ]
        assert chosen == expected and chosen
    assert {
        c.site for c in views.subject_choices(ctx, TRIAL, Scope(all_sites=False, site_ids=frozenset({p2})))
    } == {"P2"}
