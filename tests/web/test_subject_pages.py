"""The investigator's, pharmacist's and nurse's pages on their error paths: every refusal names its
field, shows what was entered, changes nothing and is never a 500 (issue 6; RND-05, RND-06, LBL-09)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

import kits as kitlib
from allocator.models import AuditEvent, PrintedDocument, ScreeningEntry, Subject
from allocator.permissions import Scope
from allocator.services import dispensing, signatures
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.reports import participant_flow
from allocator.services.reports.filters import ReportFilter
from allocator.services.subjects import randomize, views
from allocator.services.supply import kit_rules
from tests.support import CLI_ACTOR, ELIGIBLE, GOOD_PASSWORD, Clock, ReadyTrial, make_user
from tests.web.conftest import button_link, csrf_token, https_client, sign_in, without_tokens

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
RANDOMIZE = f"/trials/{TRIAL}/randomize"


def form(screening: str, **changes: str) -> dict[str, str]:
    data = {f"eligibility.{k}": str(v) for k, v in ELIGIBLE.items()}
    data.update({"site": "P1", "screening_number": screening, "strata.admission_cause": "septic"})
    data.update(changes)
    return data


def counts(ctx: ServiceContext) -> tuple[int, int]:
    with ctx.db.reading() as s:
        return (
            s.execute(select(func.count()).select_from(Subject)).scalar_one(),
            s.execute(select(func.count()).select_from(ScreeningEntry)).scalar_one(),
        )


def client_for(app: Flask, username: str) -> FlaskClient:
    client = https_client(app)
    sign_in(client, username, GOOD_PASSWORD)
    return client


@pytest.mark.req("RND-05", "RND-06")
def test_the_confirmation_step_shows_the_strata_once_and_lets_the_answers_be_corrected(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    inv = client_for(app, "inv-p1")
    preview = inv.post(
        RANDOMIZE, data={**form("P1-0042"), "step": "preview", "csrf_token": csrf_token(inv, RANDOMIZE)}
    )
    page = preview.get_data(as_text=True)
    assert preview.status_code == 200 and "Confirm the randomization" in page
    assert page.count("<dt>Site</dt>") == 1 and "P1 – Paris" in page
    assert "<dt>Cause of ICU admission</dt><dd><strong>Septic</strong></dd>" in page
    assert counts(ctx) == (0, 0)  # nothing written by the preview

    # "Correct the answers" goes back to the form with every answer kept.
    hidden = dict(
        re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
            page.split("Correct the answers")[0].rsplit("<form", 1)[1],
        )
    )
    assert hidden["step"] == "edit" and hidden["screening_number"] == "P1-0042"
    back = inv.post(RANDOMIZE, data=hidden)
    form_page = back.get_data(as_text=True)
    assert back.status_code == 200 and "Randomize a patient" in form_page
    assert 'value="P1-0042"' in form_page and counts(ctx) == (0, 0)

    done = inv.post(
        RANDOMIZE, data={**form("P1-0042"), "step": "confirm", "csrf_token": csrf_token(inv, RANDOMIZE)}
    )
    # Post/Redirect/Get (issue 13): the result is a GET; reloading it shows it again, read-only,
    # where re-sending the POST had shown a 409 page that looked like a failure.
    assert done.status_code == 303
    result = done.headers["Location"]
    assert result.endswith(f"/trials/{TRIAL}/subjects/P1-001/randomized")

    first = without_tokens(inv.get(result).get_data(as_text=True))
    reload = inv.get(result)
    assert reload.status_code == 200 and without_tokens(reload.get_data(as_text=True)) == first
    assert "P1-001" in first
    assert 'data-testid="subject-number">P1-001<' in first and 'class="kit"' in first
    assert counts(ctx) == (1, 1)
    subject_page = inv.get(f"/trials/{TRIAL}/subjects/P1-001").get_data(as_text=True)
    assert "<dt>Cause of ICU admission</dt><dd>Septic" in subject_page  # labels, not codes
    again = inv.post(
        RANDOMIZE, data={**form("P1-0042"), "step": "confirm", "csrf_token": csrf_token(inv, RANDOMIZE)}
    )
    assert again.status_code == 409 and "already" in again.get_data(as_text=True).lower()
    assert counts(ctx) == (1, 1)


@pytest.mark.req("RND-05")
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"screening_number": ""}, "screening_number"),
        ({"screening_number": "Dupont Jean"}, "screening_number"),
        ({"site": "P9"}, "site"),
        ({"strata.admission_cause": "unknown"}, "admission_cause"),
        ({"eligibility.sofa_24h": "a lot"}, "sofa_24h"),
    ],
)
def test_a_bad_field_is_named_and_nothing_is_written(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, changes: dict[str, str], field: str
) -> None:
    inv = client_for(app, "inv-p1")
    for step in ("preview", "confirm"):
        response = inv.post(
            RANDOMIZE,
            data={**form("P1-0042", **changes), "step": step, "csrf_token": csrf_token(inv, RANDOMIZE)},
        )
        page = response.get_data(as_text=True)
        assert response.status_code in (404, 422), (step, response.status_code)
        assert field in page, (step, field)
    assert counts(ctx) == (0, 0)


@pytest.mark.req("RND-06")
def test_an_ineligible_patient_goes_to_the_screening_log_only(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    inv = client_for(app, "inv-p1")
    bad = form("P1-0043", **{"eligibility.sofa_24h": "3"})
    preview = inv.post(RANDOMIZE, data={**bad, "step": "preview", "csrf_token": csrf_token(inv, RANDOMIZE)})
    # Recorded at the check already (issue 13); the click that follows records nothing more.
    assert "The patient is not eligible" in preview.get_data(as_text=True) and counts(ctx) == (0, 1)
    recorded = inv.post(RANDOMIZE, data={**bad, "step": "confirm", "csrf_token": csrf_token(inv, RANDOMIZE)})
    assert recorded.status_code == 422 and counts(ctx) == (0, 1)
    log = inv.get(f"/trials/{TRIAL}/screening").get_data(as_text=True)
    assert "P1-0043" in log and "not eligible" in log


@pytest.mark.req("LBL-09", "RND-05")
def test_the_pharmacist_is_refused_a_wrong_kit_and_a_missing_signature(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    request = randomize.RandomizationRequest(
        site="P1",
        screening_number="P1-0001",
        eligibility=dict(ELIGIBLE),
        strata={"admission_cause": "septic"},
    )
    first = randomize.randomize(ctx, world.investigator, TRIAL, request, ALL)
    pharm = client_for(app, "pharm-p1")
    page_path = f"/trials/{TRIAL}/subjects/{first.subject_number}"
    path = f"{page_path}/dispense"
    kits_of = {k.day: k.kit_number for k in first.kits}

    wrong = {f"scan.{d}": n for d, n in kits_of.items()}
    wrong["scan.D2"] = kits_of["D1"]
    refused = pharm.post(
        path,
        data={**wrong, "password": GOOD_PASSWORD, "csrf_token": csrf_token(pharm, page_path)},
        follow_redirects=True,
    )
    assert refused.status_code == 200 and "D2" in refused.get_data(as_text=True)
    unsigned = pharm.post(
        path,
        data={**{f"scan.{d}": n for d, n in kits_of.items()}, "csrf_token": csrf_token(pharm, page_path)},
        follow_redirects=True,
    )
    assert "password" in unsigned.get_data(as_text=True)
    assert {d.status for d in views.subject(ctx, TRIAL, first.subject_number, ALL).days} == {"allocated"}

    scanned = {
        f"scan.{d}": kitlib.build_payload(TRIAL, n, kit_rules.KIT_UNIT, kit_rules.mac(ctx))
        for d, n in kits_of.items()
    }
    done = pharm.post(
        path,
        data={**scanned, "password": GOOD_PASSWORD, "csrf_token": csrf_token(pharm, page_path)},
        follow_redirects=True,
    )
    assert "Dispensed (signed)" in done.get_data(as_text=True)
    assert {d.status for d in views.subject(ctx, TRIAL, first.subject_number, ALL).days} == {"dispensed"}


def printed(ctx: ServiceContext) -> tuple[int, int]:
    """(printed documents, `document.printed` audit entries)."""
    with ctx.db.reading() as s:
        return (
            s.execute(select(func.count()).select_from(PrintedDocument)).scalar_one(),
            s.execute(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "document.printed")
            ).scalar_one(),
        )


@pytest.mark.req("LBL-06", "LBL-10")
def test_printing_a_dispensation_sheet_is_a_post_and_viewing_it_creates_nothing(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    """Issue 15, point 5: a GET printed a DUPLICATA (a printed document and an audit entry) each
    time. Printing is now a POST (CSRF, then a redirect); the printed document is served byte for
    byte by a GET that creates nothing, on the web and the API."""
    subjects = []
    for screening in ("P1-0001", "P1-0002"):
        request = randomize.RandomizationRequest(
            site="P1",
            screening_number=screening,
            eligibility=dict(ELIGIBLE),
            strata={"admission_cause": "septic"},
        )
        subject = randomize.randomize(ctx, world.investigator, TRIAL, request, ALL)
        dispensing.dispense(
            ctx,
            world.pharmacist,
            TRIAL,
            subject.subject_number,
            {k.day: k.kit_number for k in subject.kits},
            scope=ALL,
            signature=signatures.SignatureRequest(password=GOOD_PASSWORD),
        )
        subjects.append(subject.subject_number)
    first, second = subjects
    pharm = client_for(app, "pharm-p1")
    page = f"/trials/{TRIAL}/subjects/{first}"
    before = printed(ctx)

    assert pharm.get(f"{page}/dispensation-sheet.pdf").status_code == 404  # the old GET is gone
    assert pharm.get(f"{page}/dispensation-sheets").status_code == 405
    assert pharm.post(f"{page}/dispensation-sheets").status_code == 400  # no CSRF token
    assert printed(ctx) == before

    posted = pharm.post(f"{page}/dispensation-sheets", data={"csrf_token": csrf_token(pharm, page)})
    assert posted.status_code == 303
    location = posted.headers["Location"]
    assert re.search(rf"{page}/dispensation-sheets/DISP-{TRIAL}-\d{{6}}\.pdf$", location)
    assert printed(ctx) == (before[0] + 1, before[1] + 1)
    views_of = [pharm.get(location) for _ in range(3)]
    assert {(v.status_code, v.mimetype) for v in views_of} == {(200, "application/pdf")}
    original = views_of[0].get_data()
    assert original.startswith(b"%PDF") and all(v.get_data() == original for v in views_of)
    assert printed(ctx) == (before[0] + 1, before[1] + 1)  # viewing created nothing
    with ctx.db.reading() as s:
        row = s.execute(select(PrintedDocument).order_by(PrintedDocument.id.desc()).limit(1)).scalar_one()
    assert row.content == original and row.reprint_number == 0

    # A reprint is another action: a DUPLICATA with its own id; the original is still served as printed.
    again = pharm.post(f"{page}/dispensation-sheets", data={"csrf_token": csrf_token(pharm, page)})
    assert again.status_code == 303 and again.headers["Location"] != location
    assert "DUPLICATA" in " ".join(kitlib_text(pharm.get(again.headers["Location"]).get_data()).split())
    assert pharm.get(location).get_data() == original
    # Another subject's path does not serve this subject's document.
    other = location.replace(f"/subjects/{first}/", f"/subjects/{second}/")
    assert pharm.get(other).status_code == 404

    # The API: POST prints (201, Location), GET downloads the same bytes and creates nothing.
    token = users.create_token(ctx, CLI_ACTOR, "pharm-p1", "pharmacy").token
    api = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    base = f"/api/v1/trials/{TRIAL}/subjects/{first}"
    assert (
        api.get(f"{base}/dispensation-sheet.pdf", headers=auth, base_url="https://localhost").status_code
        == 404
    )
    made = api.post(f"{base}/dispensation-sheets", headers=auth, base_url="https://localhost")
    assert made.status_code == 201
    body = made.get_json()
    assert made.headers["Location"].endswith(body["href"]) and body["href"].endswith(
        f"/{body['document_id']}.pdf"
    )
    count = printed(ctx)
    downloads = [api.get(body["href"], headers=auth, base_url="https://localhost") for _ in range(2)]
    assert downloads[0].status_code == 200 and downloads[0].get_data() == downloads[1].get_data()
    assert downloads[0].get_data().startswith(b"%PDF")
    assert printed(ctx) == count
    missing = api.get(
        f"{base}/dispensation-sheets/DISP-{TRIAL}-999999.pdf", headers=auth, base_url="https://localhost"
    )
    assert missing.status_code == 404


@pytest.mark.req("LBL-12")
def test_printing_a_confirmation_is_a_post_and_viewing_it_creates_nothing(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    """Each view of GET .../confirmation.pdf recorded a printed document and an audit entry (a
    DUPLICATA at every reload). As for the dispensation sheet (issue 15, point 5): printing is a
    POST (CSRF, then a redirect), the printed bytes are served by a GET that creates nothing, on the
    web and the API; the result page and the subject page print through a form."""
    numbers = []
    for screening in ("P1-0001", "P1-0002"):
        request = randomize.RandomizationRequest(
            site="P1",
            screening_number=screening,
            eligibility=dict(ELIGIBLE),
            strata={"admission_cause": "septic"},
        )
        numbers.append(randomize.randomize(ctx, world.investigator, TRIAL, request, ALL).subject_number)
    first, second = numbers
    inv = client_for(app, "inv-p1")
    page = f"/trials/{TRIAL}/subjects/{first}"
    before = printed(ctx)

    assert f'action="{page}/confirmations"' in inv.get(page).get_data(as_text=True)
    assert f'action="{page}/confirmations"' in inv.get(f"{page}/randomized").get_data(as_text=True)
    assert inv.get(f"{page}/confirmation.pdf").status_code == 404  # the old GET is gone
    assert inv.get(f"{page}/confirmations").status_code == 405
    assert inv.post(f"{page}/confirmations").status_code == 400  # no CSRF token
    assert printed(ctx) == before

    posted = inv.post(f"{page}/confirmations", data={"csrf_token": csrf_token(inv, page)})
    assert posted.status_code == 303
    location = posted.headers["Location"]
    assert re.search(rf"{page}/confirmations/RAND-{TRIAL}-\d{{6}}\.pdf$", location)
    assert printed(ctx) == (before[0] + 1, before[1] + 1)
    views_of = [inv.get(location) for _ in range(3)]
    assert {(v.status_code, v.mimetype) for v in views_of} == {(200, "application/pdf")}
    original = views_of[0].get_data()
    assert original.startswith(b"%PDF") and all(v.get_data() == original for v in views_of)
    assert printed(ctx) == (before[0] + 1, before[1] + 1)  # viewing created nothing
    with ctx.db.reading() as s:
        row = s.execute(select(PrintedDocument).order_by(PrintedDocument.id.desc()).limit(1)).scalar_one()
    assert row.content == original and row.reprint_number == 0 and row.kind == "randomization_confirmation"

    again = inv.post(f"{page}/confirmations", data={"csrf_token": csrf_token(inv, page)})
    assert again.status_code == 303 and again.headers["Location"] != location
    assert "DUPLICATA" in " ".join(kitlib_text(inv.get(again.headers["Location"]).get_data()).split())
    assert inv.get(location).get_data() == original
    assert inv.get(location.replace(f"/subjects/{first}/", f"/subjects/{second}/")).status_code == 404
    assert inv.get(f"{page}/confirmations/RAND-{TRIAL}-999999.pdf").status_code == 404

    # The API: POST prints (201, Location), GET downloads the same bytes and creates nothing.
    token = users.create_token(ctx, CLI_ACTOR, "inv-p1", "edc").token
    api = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    base = f"/api/v1/trials/{TRIAL}/subjects/{first}"
    made = api.post(f"{base}/confirmations", headers=auth, base_url="https://localhost")
    assert made.status_code == 201
    body = made.get_json()
    assert made.headers["Location"].endswith(body["href"]) and body["href"] == (
        f"{base}/confirmations/{body['document_id']}.pdf"
    )
    count = printed(ctx)
    downloads = [api.get(body["href"], headers=auth, base_url="https://localhost") for _ in range(2)]
    assert downloads[0].status_code == 200 and downloads[0].get_data() == downloads[1].get_data()
    assert downloads[0].get_data().startswith(b"%PDF")
    assert printed(ctx) == count


def kitlib_text(pdf: bytes) -> str:
    from tests.unit.kits.kits_testdata import all_text, flat

    return flat(all_text(pdf))


@pytest.mark.req("DIB-01", "LBL-09", "DIB-09")
def test_the_bedside_page_keeps_the_patient_for_the_next_dose_and_stops_an_early_one(
    app: Flask, ctx: ServiceContext, world: ReadyTrial, clock: Clock
) -> None:
    """Issue 13: check, then record. A right kit for the right patient and day is recorded in one
    step; a dose a day early is a stop (nothing recorded) until it is confirmed with a reason, which
    is audited with the warning. Every POST redirects (a reload records nothing)."""
    request = randomize.RandomizationRequest(
        site="P1",
        screening_number="P1-0001",
        eligibility=dict(ELIGIBLE),
        strata={"admission_cause": "septic"},
    )
    first = randomize.randomize(ctx, world.investigator, TRIAL, request, ALL)
    kits_of = {k.day: k.kit_number for k in first.kits}
    dispensing.dispense(
        ctx,
        world.pharmacist,
        TRIAL,
        first.subject_number,
        kits_of,
        scope=ALL,
        signature=signatures.SignatureRequest(password=GOOD_PASSWORD),
    )
    label = {d: kitlib.build_payload(TRIAL, n, d, kit_rules.mac(ctx)) for d, n in kits_of.items()}
    nurse = client_for(app, "nurse-p1")
    path = f"/trials/{TRIAL}/bedside"

    def scan(day: str, payload: str, **extra: str) -> str:
        response = nurse.post(
            path,
            data={
                "subject_number": first.subject_number,
                "day": day,
                "payload": payload,
                "csrf_token": csrf_token(nurse, path),
                **extra,
            },
        )
        assert response.status_code == 303 and response.headers["Location"] == path
        shown = nurse.get(path)
        assert shown.status_code == 200
        return shown.get_data(as_text=True)

    def statuses() -> list[str]:
        return [d.status for d in views.subject(ctx, TRIAL, first.subject_number, ALL).days]

    page = scan("D1", label["D2"])
    assert "scan-bad" in page and "another day" in page.lower()
    page = scan("D1", label["D1"])
    assert 'class="scan-ok"' in page and statuses() == ["administered", "dispensed", "dispensed"]
    # Ready for the same patient's next dose; the result is shown once: a reload shows the form.
    assert f'value="{first.subject_number}"' in page and "<option selected>D2</option>" in page
    assert "scan-ok" not in nurse.get(path).get_data(as_text=True)

    page = scan("D2", label["D2"])  # minutes after D1: a day early, so a stop
    assert "Stop: check before giving this dose" in page and "Check: D2 was planned for" in page
    assert 'name="confirmation"' in page and "scan-ok" not in page
    assert statuses() == ["administered", "dispensed", "dispensed"]  # nothing recorded
    page = scan("D2", label["D2"], step="confirm", confirmation="  ")
    assert "Say why, or do not give this dose." in page and 'aria-invalid="true"' in page
    assert statuses() == ["administered", "dispensed", "dispensed"]
    page = scan("D2", label["D2"], step="confirm", confirmation="prescribed early by Dr Martin")
    assert 'class="scan-warn"' in page and "Check: D2 was planned for" in page and "recorded as given" in page
    assert statuses() == ["administered", "administered", "dispensed"]
    with ctx.db.reading() as s:
        entry = s.execute(
            select(AuditEvent)
            .where(AuditEvent.action == "administration.recorded")
            .order_by(AuditEvent.id.desc())
            .limit(1)
        ).scalar_one()
    assert '"confirmed_despite_warnings":"prescribed early by Dr Martin"' in (entry.new_values or "")
    assert "D2 was planned for" in (entry.new_values or "")
    page = scan("D2", label["D2"])
    assert "scan-bad" in page and statuses() == ["administered", "administered", "dispensed"]


@pytest.mark.req("RND-05", "RND-07")
def test_the_api_answers_each_refusal_with_its_own_problem_type(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    token = users.create_token(ctx, CLI_ACTOR, "inv-p1", "edc").token
    client = app.test_client()

    def post(body: object) -> tuple[int, dict[str, object]]:
        response = client.post(
            f"/api/v1/trials/{TRIAL}/subjects",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            base_url="https://localhost",
        )
        return response.status_code, response.get_json()

    body = {
        "site": "P1",
        "screening_number": "P1-0001",
        "eligibility": ELIGIBLE,
        "strata": {"admission_cause": "septic"},
    }
    assert post({**body, "arm": "A"})[0] == 422  # nobody chooses an arm or a slot
    status, problem = post({**body, "eligibility": {**ELIGIBLE, "sofa_24h": 3}})
    assert status == 422 and problem["type"] == "urn:allocator:problem:ineligible"
    status, created = post(body)
    assert status == 201 and set(created) == {
        "subject_number",
        "randomization_number",
        "kits",
        "randomized_at",
    }
    status, problem = post(body)
    assert status == 409 and problem["type"] == "urn:allocator:problem:already-randomized"
    status, problem = post({**body, "screening_number": "P1-0099", "site": "P2"})
    assert status in (403, 404) and "arm" not in str(problem).lower()
    status, problem = post([body, body])
    assert status == 422 and problem["errors"] == [{"field": "body", "message": "expected a JSON object"}]


@pytest.mark.req("DIB-03", "REP-04", "BLD-01")
def test_a_withdrawal_by_the_trial_manager_needs_the_investigators_agreement_and_names_no_treatment(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    """Issue 15, point 4: a trial manager could withdraw a subject without the reference of the
    investigator's agreement that a stratum correction requires (DIB-03), and the reason, shown to
    blinded staff, was not checked for treatment words."""
    request = randomize.RandomizationRequest(
        site="P1",
        screening_number="P1-0001",
        eligibility=dict(ELIGIBLE),
        strata={"admission_cause": "septic"},
    )
    number = randomize.randomize(ctx, world.investigator, TRIAL, request, ALL).subject_number
    created = make_user(ctx, "tman", "trial_manager")
    manager = https_client(app)
    sign_in(manager, "tman", created.one_time_password)
    page_path = f"/trials/{TRIAL}/subjects/{number}"
    path = f"{page_path}/withdrawal"
    assert 'name="investigator_agreement_ref"' in manager.get(page_path).get_data(as_text=True)
    data = {
        "kind": "consent_withdrawn",
        "effective_date": "2026-03-02",
        "reason": "the family withdrew consent",
        "password": GOOD_PASSWORD,
    }

    def post(client: FlaskClient, **changes: str) -> str:
        token = csrf_token(client, page_path)
        return client.post(
            path, data={**data, **changes, "csrf_token": token}, follow_redirects=True
        ).get_data(as_text=True)

    refused = post(manager)
    assert 'id="investigator_agreement_ref-error">is required' in refused and "DIB-03" not in refused
    inv = client_for(app, "inv-p1")
    for leaking in ("switched to placebo by mistake", "Interferon stopped"):
        assert 'id="reason-error">do not write the treatment here' in post(inv, reason=leaking), leaking
    assert views.subject(ctx, TRIAL, number, ALL).withdrawal is None
    with ctx.db.reading() as s:
        withdrawn_entries = (
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "subject.withdrawn")
        )
        assert s.execute(withdrawn_entries).scalar_one() == 0

    done = post(manager, investigator_agreement_ref="e-mail of Dr P1, 2026-03-02")
    assert f"The withdrawal of {number} is recorded (signed)" in done
    assert "agreement: e-mail of Dr P1, 2026-03-02" in done
    withdrawn = views.subject(ctx, TRIAL, number, ALL).withdrawal
    assert withdrawn is not None and withdrawn.agreement == "e-mail of Dr P1, 2026-03-02"


@pytest.mark.req("REP-04", "ACC-12")
def test_a_withdrawal_is_recorded_from_the_subject_page_and_stops_the_bedside(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    request = randomize.RandomizationRequest(
        site="P1",
        screening_number="P1-0001",
        eligibility=dict(ELIGIBLE),
        strata={"admission_cause": "septic"},
    )
    first = randomize.randomize(ctx, world.investigator, TRIAL, request, ALL)
    number = first.subject_number
    inv = client_for(app, "inv-p1")
    page_path = f"/trials/{TRIAL}/subjects/{number}"
    path = f"{page_path}/withdrawal"
    page = inv.get(page_path).get_data(as_text=True)
    assert "Record a withdrawal" in page and f'action="{path}"' in page
    assert "Meaning of this signature: subject withdrawal" in page
    assert "Record a withdrawal" not in client_for(app, "pharm-p1").get(page_path).get_data(as_text=True)

    data = {"kind": "treatment_discontinued", "effective_date": "2026-03-02", "reason": "allergic reaction"}
    refused = inv.post(
        path,
        data={
            **data,
            "effective_date": "tomorrow",
            "password": GOOD_PASSWORD,
            "csrf_token": csrf_token(inv, page_path),
        },
        follow_redirects=True,
    )
    # Beside its field, named as the form labels it (issue 13), not by its code name.
    refused_page = refused.get_data(as_text=True)
    assert refused.status_code == 200 and 'id="effective_date-error">is not a date' in refused_page
    assert "Effective date (site&#39;s calendar date): is not a date" in refused_page
    assert "allergic reaction</textarea>" in refused_page  # what was typed is kept
    unsigned = inv.post(path, data={**data, "csrf_token": csrf_token(inv, page_path)}, follow_redirects=True)
    unsigned_page = unsigned.get_data(as_text=True)
    assert 'id="password-error">is wrong' in unsigned_page and "allergic reaction</textarea>" in unsigned_page
    assert views.subject(ctx, TRIAL, number, ALL).withdrawal is None

    done = inv.post(
        path,
        data={**data, "password": GOOD_PASSWORD, "csrf_token": csrf_token(inv, page_path)},
        follow_redirects=True,
    )
    text = done.get_data(as_text=True)
    assert f"The withdrawal of {number} is recorded (signed)" in text
    assert "withdrawn (treatment discontinued) on Mar 2, 2026" in text
    assert "Record a withdrawal" not in text
    again = inv.post(
        path,
        data={**data, "password": GOOD_PASSWORD, "csrf_token": csrf_token(inv, page_path)},
        follow_redirects=True,
    )
    assert "already withdrawn on 2026-03-02" in again.get_data(as_text=True)
    assert "withdrawn" in inv.get(f"/trials/{TRIAL}/subjects").get_data(as_text=True)

    # The pharmacy no longer sees a dispensing form; the bedside refuses with the date.
    pharm_page = client_for(app, "pharm-p1").get(page_path).get_data(as_text=True)
    assert "Dispense (signed)" not in pharm_page
    nurse = client_for(app, "nurse-p1")
    bedside = f"/trials/{TRIAL}/bedside"
    response = nurse.post(
        bedside,
        data={
            "subject_number": number,
            "day": "D1",
            "payload": kitlib.build_payload(TRIAL, first.kits[0].kit_number, "D1", kit_rules.mac(ctx)),
            "csrf_token": csrf_token(nurse, bedside),
        },
    )
    assert response.status_code == 303  # Post/Redirect/Get (issue 13): the refusal is shown by the GET
    shown = nurse.get(bedside).get_data(as_text=True)
    assert f"{number} was withdrawn on 2026-03-02: no further dose" in shown


def flow_counts(ctx: ServiceContext) -> tuple[int | None, int | None, int]:
    total = participant_flow.participant_flow(ctx, TRIAL, ALL, ReportFilter()).counts[0]
    return total.screened, total.ineligible, total.randomized


@pytest.mark.req("RND-06")
def test_an_ineligible_check_is_logged_and_counted_even_if_the_investigator_walks_away(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    """Issue 13 point 4: a screening checked as ineligible and then left was not recorded (the
    participant flow showed 2 screened, 0 ineligible). Now the check itself records it, once."""
    inv = client_for(app, "inv-p1")
    bad = form("P1-0043", **{"eligibility.sofa_24h": "3"})
    for _reload in range(2):  # the check, then a reload of it: one entry
        page = inv.post(RANDOMIZE, data={**bad, "step": "preview", "csrf_token": csrf_token(inv, RANDOMIZE)})
        assert page.status_code == 200 and "The patient is not eligible" in page.get_data(as_text=True)
    # ... and the investigator walks away.
    assert counts(ctx) == (0, 1) and flow_counts(ctx) == (1, 1, 0)
    with ctx.db.reading() as s:
        audited = (
            s.execute(select(AuditEvent).where(AuditEvent.action == "screening.ineligible")).scalars().all()
        )
    assert [e.object_id for e in audited] == ["P1-0043"]
    log = inv.get(f"/trials/{TRIAL}/screening").get_data(as_text=True)
    assert "P1-0043" in log and "not eligible" in log


@pytest.mark.req("RND-06")
def test_corrected_answers_are_kept_as_history_and_the_patient_counted_once(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    inv = client_for(app, "inv-p1")
    wrong = form("P1-0044", **{"eligibility.sofa_24h": "3"})  # a typo: the SOFA score was 8
    inv.post(RANDOMIZE, data={**wrong, "step": "preview", "csrf_token": csrf_token(inv, RANDOMIZE)})
    right = form("P1-0044")
    confirm = inv.post(RANDOMIZE, data={**right, "step": "preview", "csrf_token": csrf_token(inv, RANDOMIZE)})
    assert "Confirm the randomization" in confirm.get_data(as_text=True) and counts(ctx) == (0, 1)
    done = inv.post(RANDOMIZE, data={**right, "step": "confirm", "csrf_token": csrf_token(inv, RANDOMIZE)})
    assert done.status_code == 303 and counts(ctx) == (1, 2)  # both checks kept
    assert flow_counts(ctx) == (1, 0, 1)  # one patient screened, eligible, randomized
    log = inv.get(f"/trials/{TRIAL}/screening").get_data(as_text=True)
    assert "answers corrected later" in log and "randomized as P1-001" in log
    entries = views.screening_log(ctx, TRIAL, ALL)
    assert [(e.eligible, e.superseded) for e in entries] == [(True, False), (False, True)]


@pytest.mark.req("BLD-01")
def test_the_pharmacy_queue_is_paged_newest_first_and_refuses_a_bad_cursor_in_french(
    app: Flask,
    ctx: ServiceContext,
    world: ReadyTrial,
    monkeypatch: pytest.MonkeyPatch,
    signed_in: Callable[[str, str], FlaskClient],
) -> None:
    """Issue 21: the queue shows a page of subjects, most recently randomized first, with a link to
    the earlier ones and back; a bad cursor or site is a 422 naming it, in French too."""
    made = [
        randomize.randomize(
            ctx,
            world.investigator,
            TRIAL,
            randomize.RandomizationRequest(
                site="P1",
                screening_number=f"P1-00{i}",
                eligibility=ELIGIBLE,
                strata={"admission_cause": "septic"},
            ),
            ALL,
        ).subject_number
        for i in range(3)
    ]
    theirs = randomize.randomize(
        ctx,
        world.investigator_p2,
        TRIAL,
        randomize.RandomizationRequest(
            site="P2", screening_number="P2-001", eligibility=ELIGIBLE, strata={"admission_cause": "septic"}
        ),
        ALL,
    ).subject_number
    monkeypatch.setattr(dispensing, "QUEUE_PAGE", 2)
    pharm = client_for(app, "pharm-p1")
    pharmacy = f"/trials/{TRIAL}/pharmacy"

    def listed(html: str) -> list[str]:
        return re.findall(r'/subjects/([^/"]+)">\1</a>', html)

    first = pharm.get(pharmacy).get_data(as_text=True)
    assert listed(first) == [made[2], made[1]] and button_link(first, "Most recent") is None
    assert 'class="filters"' not in first  # one site within reach: nothing to choose, no form
    earlier = button_link(first, "Randomized earlier")
    assert earlier is not None and f"before={made[1]}" in earlier and earlier.endswith("#queue")
    second = pharm.get(earlier).get_data(as_text=True)
    assert listed(second) == [made[0]] and button_link(second, "Randomized earlier") is None
    assert button_link(second, "Most recent") is not None
    # A page after the oldest subject (an earlier page that has emptied since): it says so, not
    # that nothing matches a filter that was never set.
    emptied = pharm.get(f"{pharmacy}?before={made[0]}").get_data(as_text=True)
    assert listed(emptied) == [] and "Nothing further on the list" in emptied
    assert "No subject matches." not in emptied and "Nothing to dispense." not in emptied
    assert button_link(emptied, "Most recent") is not None
    for query, words in (
        ("before=P1-999", "no subject"),
        ("site=P2", "is not a site of"),
        ("before=a%00b", "printable"),
    ):
        refused = pharm.get(f"{pharmacy}?{query}")
        assert refused.status_code == 422 and words in refused.get_data(as_text=True), query
    spaced = pharm.get(f"{pharmacy}?before=P1%20x").get_data(as_text=True)
    assert "<li>no subject P1 x within your reach</li>" in spaced
    pharm.post("/language", data={"language": "fr", "next": "/", "csrf_token": csrf_token(pharm, "/")})
    french = pharm.get(pharmacy).get_data(as_text=True)
    assert "les plus récemment randomisés d’abord" in french and "Randomisés plus tôt" in french
    emptied = pharm.get(f"{pharmacy}?before={made[0]}").get_data(as_text=True)
    assert "Rien de plus dans la liste" in emptied and "Nothing further" not in emptied
    for cursor in ("P1-%27x", "P1%20x"):  # the cursor's repr is quoted; one with a space too
        unknown = pharm.get(f"{pharmacy}?before={cursor}").get_data(as_text=True)
        assert "aucun patient" in unknown and "within your reach" not in unknown, cursor

    # A reader of every site chooses a site; the links keep it.
    manager = signed_in("tman", make_user(ctx, "tman", "trial_manager").one_time_password)
    everywhere = manager.get(pharmacy).get_data(as_text=True)
    assert listed(everywhere) == [theirs, made[2]] and 'name="site"' in everywhere
    at_p1 = manager.get(f"{pharmacy}?site=P1").get_data(as_text=True)
    assert listed(at_p1) == [made[2], made[1]]
    earlier_at_p1 = button_link(at_p1, "Randomized earlier")
    assert earlier_at_p1 is not None and "site=P1" in earlier_at_p1
    assert listed(manager.get(earlier_at_p1).get_data(as_text=True)) == [made[0]]
