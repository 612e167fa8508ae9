"""Export downloads in the web UI and the ODM pull of the API (issue 17; DIB-04, DIB-07, BLD-01,
BLD-14): a ZIP with the export and its signed manifest for the readers, no arm in a blinded one,
the unblinded one refused before the final unblinding, and the ODM an EDC pulls with its digest."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from sqlalchemy import select

from allocator import crypto, manifest
from allocator.models import AuditEvent
from allocator.services import signatures
from allocator.services.accounts import users
from allocator.services.closeout import state
from allocator.services.context import ServiceContext
from allocator.trialdef import parse_definition
from tests.leakcheck import LeakChecker, Vocabulary
from tests.reporting import Truth, arm_of_subject, build
from tests.support import CLI_ACTOR, GOOD_PASSWORD, IFN_TRIAL, Clock, enroll_totp
from tests.web.conftest import csrf_token
from tests.web.test_report_pages import login, new_user

BASE = "/trials/IFNG-PAIS/exports"
SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "odm" / "cdisc-odm-1.3.2" / "ODM1-3-2.xsd"


@pytest.fixture
def world(ctx: ServiceContext, clock: Clock) -> Truth:
    return build(ctx, clock)


@pytest.fixture
def monitor(app: Flask, ctx: ServiceContext, clock: Clock, world: Truth) -> FlaskClient:
    return login(app, ctx, clock, "mon-all", new_user(ctx, "mon-all", "monitor"), mfa=False)


def _unzip(data: bytes, target: Path) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(target)
        return sorted(archive.namelist())


def _checker() -> LeakChecker:
    return LeakChecker(Vocabulary.of(parse_definition(IFN_TRIAL.read_text(encoding="utf-8"))))


@pytest.mark.req("DIB-07")
@pytest.mark.req("BLD-01")
@pytest.mark.req("BLD-14")
def test_a_monitor_downloads_each_blinded_export_with_its_signed_manifest(
    monitor: FlaskClient, ring: crypto.KeyRing, tmp_path: Path
) -> None:
    page = monitor.get(BASE)
    assert page.status_code == 200 and "Unblinded export" not in page.get_data(as_text=True)
    assert f'href="{BASE}"' in monitor.get("/trials/IFNG-PAIS/reports").get_data(as_text=True)
    trusted = list(crypto.audit_public_keys_pem(ring).values())
    checker = _checker()
    for fmt, suffix in (("odm", ".xml"), ("fhir", ".json"), ("redcap", ".csv"), ("csv", "")):
        response = monitor.get(f"{BASE}/{fmt}")
        assert response.status_code == 200 and response.mimetype == "application/zip"
        disposition = response.headers["Content-Disposition"]
        assert disposition.startswith(f'attachment; filename="IFNG-PAIS-{fmt}-2026') and disposition.endswith(
            f'{suffix}.zip"'
        )
        folder = tmp_path / fmt
        names = _unzip(response.get_data(), folder)
        (manifest_name,) = [n for n in names if n.endswith(manifest.SUFFIX)]
        result = manifest.verify(folder / manifest_name, trusted)
        assert result.ok and result.trusted, result.problems
        assert result.body["blinded"] is True and result.body["rows"]["subjects"] == 5
        for name in names:
            text = (folder / name).read_text("utf-8")
            if name.endswith(".xml"):
                found = checker.html(name, text)
            elif name.endswith(".json"):
                found = checker.json_text(name, text)
            else:
                found = checker.csv_text(name, text)
            assert found == [], name


@pytest.mark.req("DIB-07")
@pytest.mark.req("BLD-08")
def test_the_unblinded_download_is_refused_before_the_final_unblinding_then_signed(
    app: Flask, ctx: ServiceContext, clock: Clock, world: Truth, tmp_path: Path
) -> None:
    stat = world.ready.statistician
    assert stat.user_id is not None
    secret = enroll_totp(ctx, stat.user_id, clock)
    client = login(app, ctx, clock, "stat", stat.user_id, mfa=True, secret=secret)
    assert "Unblinded export" in client.get(BASE).get_data(as_text=True)

    def post(fmt: str) -> tuple[int, bytes]:
        clock.advance(seconds=31)
        response = client.post(
            f"{BASE}/unblinded",
            data={
                "format": fmt,
                "password": GOOD_PASSWORD,
                "otp": crypto.totp_now(secret, clock()),
                "csrf_token": csrf_token(client, BASE),
            },
        )
        return response.status_code, response.get_data()

    status, body = post("odm")
    assert status == 409 and b"only after the final unblinding" in body
    for step, reason in ((state.lock, "database lock"), (state.unblind_trial, "final analysis")):
        clock.advance(seconds=31)
        step(
            ctx,
            stat,
            "IFNG-PAIS",
            reason=reason,
            signature=signatures.SignatureRequest(GOOD_PASSWORD, totp=crypto.totp_now(secret, clock())),
        )
    status, body = post("nope")
    assert status == 422 and b"format" in body
    status, body = post("redcap")
    assert status == 200
    names = _unzip(body, tmp_path)
    (data_name,) = [n for n in names if n.endswith(".csv")]
    assert "unblinded" in data_name
    result = manifest.verify(tmp_path / data_name)
    assert result.ok and result.body["blinded"] is False
    rows = (tmp_path / data_name).read_text("utf-8").splitlines()
    assert rows[0].endswith(",rand_arm")
    arms = {r.split(",")[0]: r.split(",")[-1] for r in rows[1:]}
    assert arms == {n: arm_of_subject(ctx, world, n) for n in world.subjects.values()}


@pytest.mark.req("DIB-07")
def test_an_edc_pulls_the_blinded_odm_through_the_api(app: Flask, ctx: ServiceContext, world: Truth) -> None:
    new_user(ctx, "edc-mon", "monitor")
    token = users.create_token(ctx, CLI_ACTOR, "edc-mon", "edc").token
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    response = client.get(
        "/api/v1/trials/IFNG-PAIS/exports/odm", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200 and response.mimetype == "application/xml"
    body = response.get_data()
    assert (
        response.headers["Repr-Digest"]
        == f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"
    )
    etree.XMLSchema(etree.parse(str(SCHEMA))).assertValid(etree.fromstring(body))
    assert _checker().html("api odm", body.decode("utf-8")) == []
    with ctx.db.reading() as s:
        entry = s.execute(select(AuditEvent).where(AuditEvent.action == "trial.exported")).scalar_one()
    assert hashlib.sha256(body).hexdigest() in (entry.new_values or "")
    nurse = users.create_token(ctx, CLI_ACTOR, world.ready.nurse.username, "x").token
    refused = client.get("/api/v1/trials/IFNG-PAIS/exports/odm", headers={"Authorization": f"Bearer {nurse}"})
    assert refused.status_code == 403
