"""Pages of the observational cohort IMMUNOSEPSIS-4 (issue 20) hosted beside the randomized trial."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from allocator.services import trials
from allocator.services.context import ServiceContext
from tests.support import CLI_ACTOR, ROOT, load_ifn, make_user

COHORT = ROOT / "trials" / "immunosepsis-4.toml"


def load_cohort(ctx: ServiceContext) -> trials.LoadResult:
    return trials.load_trial(
        ctx, CLI_ACTOR, COHORT.read_text(encoding="utf-8"), source_name="trials/immunosepsis-4.toml"
    )


@pytest.mark.req("VAL-03")
def test_the_cohort_page_shows_the_study_without_randomized_trial_facts(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    load_ifn(ctx)
    load_cohort(ctx)
    created = make_user(ctx, "tm-cohort", "trial_manager", trial="IMMUNOSEPSIS-4")
    make_user(ctx, "tm-ifn", "trial_manager")
    client = signed_in("tm-cohort", created.one_time_password)
    home = client.get("/")
    assert home.status_code == 200
    assert "IMMUNOSEPSIS 4" in home.get_data(as_text=True)
    page = client.get("/trials/IMMUNOSEPSIS-4")
    assert page.status_code == 200, page.get_data(as_text=True)[:2000]
    html = page.get_data(as_text=True)
    assert "NCT04067674" in html and "69HCL19_0071" in html
    assert "EU CT number" not in html  # an observational cohort has none
    for randomized_only in ("Randomization lists", "Code-break sheets", "Strata", "Unblinding", "Randomized"):
        assert randomized_only not in html, randomized_only
    assert "Registered" in html
    # A user of the cohort only has no access to the randomized trial (and does not see it).
    assert "IFN-gamma PAIS" not in home.get_data(as_text=True)
    assert client.get("/trials/IFNG-PAIS").status_code in (403, 404)
