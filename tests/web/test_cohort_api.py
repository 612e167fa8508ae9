"""The JSON API of the observational cohort (issue 20): the same POST that randomizes in IFNG-PAIS
registers in IMMUNOSEPSIS-4 — 201 with subject_number, registered_at and the sample schedule, and
no randomization field — and every answer conforms to the OpenAPI document."""

from __future__ import annotations

import pytest
from flask import Flask

from allocator.services.context import ServiceContext
from tests.support import COHORT, COHORT_ELIGIBLE, ready_cohort, stock_tube_sets
from tests.web.test_api_contract import caller

PATH = f"/api/v1/trials/{COHORT}/subjects"


def _body(screening: str = "L1-0001", **changes: object) -> dict[str, object]:
    answers: dict[str, object] = {**COHORT_ELIGIBLE, "age": 58, "lactate": 3.4, **changes}
    return {"site": "L1", "screening_number": screening, "eligibility": answers}


@pytest.mark.req("RND-05", "RND-06")
def test_the_api_registers_a_cohort_patient_with_its_schedule(app: Flask, ctx: ServiceContext) -> None:
    ready_cohort(ctx, tube_sets=0)
    tube_sets = stock_tube_sets(ctx, 3)
    call = caller(app, ctx, "inv-l1")
    created = call("POST", PATH, _body())
    assert created.status_code == 201, created.get_data(as_text=True)
    answer = created.get_json()
    assert answer == {
        "subject_number": "L1-001",
        "registered_at": "2026-03-02T09:30:00Z",
        "samples": [
            {
                "label": "D3",
                "kit_type": "BIOMARKER",
                "due_date": "2026-03-04",
                "window_end": "2026-03-05",
                "planned_date": "2026-03-04",
                "kit_number": answer["samples"][0]["kit_number"],
                "status": "assigned",
                "collected_at": None,
            }
        ],
    }
    assert answer["samples"][0]["kit_number"] in tube_sets  # one of the site's tube sets
    summary = call("GET", f"/api/v1/trials/{COHORT}").get_json()
    assert summary["kind"] == "observational" and summary["eu_ct_number"] is None and summary["subjects"] == 1

    again = call("POST", PATH, _body())
    assert again.status_code == 409 and again.get_json()["type"].endswith("already-registered")
    strata = call("POST", PATH, {**_body("L1-0002"), "strata": {"admission_cause": "septic"}})
    assert strata.status_code == 422
    assert [e["field"] for e in strata.get_json()["errors"]] == ["strata"]
    refused = call("POST", PATH, _body("L1-0003", age=17))
    assert refused.status_code == 422 and refused.get_json()["type"].endswith("ineligible")
    assert [e["field"] for e in refused.get_json()["errors"]] == ["eligibility.age"]
    text = call("POST", PATH, _body("L1-0004", lactate="3.4"))
    assert text.status_code == 422  # a number criterion takes a JSON number, as in the randomized trial


@pytest.mark.req("RND-05")
def test_the_api_refuses_a_registration_when_the_site_has_no_tube_set(
    app: Flask, ctx: ServiceContext
) -> None:
    ready_cohort(ctx, tube_sets=0)
    call = caller(app, ctx, "inv-l1")
    refused = call("POST", PATH, _body())
    assert refused.status_code == 409
    problem = refused.get_json()
    assert problem["type"].endswith("no-tube-set") and "BIOMARKER" in problem["detail"]
    assert problem["errors"] == [{"field": "site", "message": "no BIOMARKER tube set available"}]
    assert call("GET", f"/api/v1/trials/{COHORT}").get_json()["subjects"] == 0  # nothing recorded
