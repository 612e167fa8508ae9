"""The subject list, on the web and in the API, a page at a time with a cursor and a site filter
narrowed in SQL (issue 21): every subject exactly once, in randomization order, and bad cursors,
limits and sites named as errors."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from allocator.services.context import ServiceContext
from allocator.services.subjects import views
from allocator.web import subjects as web_subjects
from tests.support import ALL_SITES, GOOD_PASSWORD, TRIAL, person
from tests.support.crowd import crowded_trial
from tests.web.conftest import https_client, sign_in
from tests.web.test_api_contract import caller

API = "/api/v1/trials/IFNG-PAIS/subjects"
PAGE = "/trials/IFNG-PAIS/subjects"


@pytest.fixture
def numbers(ctx: ServiceContext) -> list[str]:
    crowded_trial(ctx, subjects=20)
    person(ctx, "mon-all", "monitor")
    return [v.subject_number for v in views.subjects(ctx, TRIAL, ALL_SITES)]


@pytest.mark.req("REP-08")
def test_the_api_pages_through_every_subject_once(
    app: Flask, ctx: ServiceContext, numbers: list[str]
) -> None:
    call = caller(app, ctx, "mon-all")
    seen: list[str] = []
    path = f"{API}?limit=7"
    pages = 0
    while True:
        body = call("GET", path).get_json()
        pages += 1
        assert len(body["subjects"]) <= 7
        seen += [s["subject_number"] for s in body["subjects"]]
        if body["next_after"] is None:
            break
        assert body["next_after"] == seen[-1]
        path = f"{API}?limit=7&after={body['next_after']}"
    assert seen == numbers and pages == 3

    p2 = call("GET", f"{API}?site=P2&limit=1000").get_json()
    assert [s["subject_number"] for s in p2["subjects"]] == [
        v.subject_number for v in views.subjects(ctx, TRIAL, ALL_SITES) if v.site == "P2"
    ]
    assert p2["next_after"] is None
    assert len(call("GET", API).get_json()["subjects"]) == 20  # 100 by default


@pytest.mark.req("REP-08")
@pytest.mark.parametrize(
    ("query", "field"),
    [("after=NOPE-0001", "after"), ("site=ZZ", "site"), ("limit=0", "limit"), ("limit=1001", "limit")],
)
def test_bad_cursors_limits_and_sites_are_named(
    app: Flask, ctx: ServiceContext, numbers: list[str], query: str, field: str
) -> None:
    response = caller(app, ctx, "mon-all")("GET", f"{API}?{query}")
    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == [field]


def _rows(client: FlaskClient, path: str) -> tuple[list[str], str | None]:
    page = client.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)[:300]
    text = page.get_data(as_text=True)
    shown = re.findall(r'href="/trials/IFNG-PAIS/subjects/([^"/]+)"', text)
    following = re.search(r'href="\?([^"]+)">[^<]+</a></p>', text)
    return shown, following.group(1).replace("&amp;", "&") if following else None


@pytest.mark.req("REP-08")
def test_the_web_list_pages_with_a_next_link_and_a_site_filter(
    app: Flask, numbers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_subjects, "SUBJECT_PAGE", 8)
    client = https_client(app)
    sign_in(client, "mon-all", GOOD_PASSWORD)
    seen: list[str] = []
    path: str | None = PAGE
    while path is not None:
        shown, query = _rows(client, path)
        assert len(shown) <= 8
        seen += shown
        path = f"{PAGE}?{query}" if query else None
    assert seen == numbers

    p1, query = _rows(client, f"{PAGE}?site=P1")
    assert query is not None and "site=P1" in query
    rest, _ = _rows(client, f"{PAGE}?{query}")
    assert p1 + rest == numbers[0::2]  # the crowd alternates P1, P2

    bad = client.get(f"{PAGE}?after=NOPE-0001")
    assert bad.status_code == 422 and "after" in bad.get_data(as_text=True)


@pytest.mark.req("REP-04")
def test_the_screening_log_pages_newest_first(
    app: Flask, ctx: ServiceContext, numbers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_subjects, "SUBJECT_PAGE", 8)
    client = https_client(app)
    sign_in(client, "mon-all", GOOD_PASSWORD)
    seen: list[str] = []
    path: str | None = "/trials/IFNG-PAIS/screening"
    while path is not None:
        page = client.get(path)
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        seen += re.findall(r"<tr><td>(P\d-\d{4})</td>", text)
        following = re.search(r'href="\?(before=\d+)"', text)
        path = f"/trials/IFNG-PAIS/screening?{following.group(1)}" if following else None
    assert seen == [e.screening_number for e in views.screening_log(ctx, TRIAL, ALL_SITES)]
    assert len(seen) == 20 and seen[0] == "P2-0019"
    assert client.get("/trials/IFNG-PAIS/screening?before=x").status_code == 422
    # Fuzzing on PostgreSQL: a cursor past the 32-bit row ids overflowed there (a server error).
    assert client.get("/trials/IFNG-PAIS/screening?before=2147483647").status_code == 200
    for past in ("2147483648", "9223372036854775807"):
        assert client.get(f"/trials/IFNG-PAIS/screening?before={past}").status_code == 422
