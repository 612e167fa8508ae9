"""The site staff's screens in French, with errors in plain words beside their fields (issue 13,
issue 12 point 2): no code field name and no requirement id on a screen, French numbers accepted,
typed values kept across the Post/Redirect/Get, never a password."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from allocator.services.context import ServiceContext
from allocator.web import forms
from tests.support import ELIGIBLE, GOOD_PASSWORD, ReadyTrial, make_actor, ready_trial
from tests.web.conftest import csrf_token, https_client, sign_in

TRIAL = "IFNG-PAIS"
RANDOMIZE = f"/trials/{TRIAL}/randomize"
FRENCH = {"Accept-Language": "fr"}
CODE_NAMES = re.compile(r"\b(?:eligibility|strata|scans)\.[a-z0-9_]+:|\([A-Z]{2,4}-\d{2}\)")


def visible(page: str) -> str:
    """The text a reader sees: no tags, no attribute values."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.split("<body>", 1)[1]))


def french(app: Flask, username: str) -> FlaskClient:
    client = https_client(app)
    sign_in(client, username, GOOD_PASSWORD)
    client.post("/language", data={"language": "fr", "next": "/", "csrf_token": csrf_token(client, "/")})
    return client


def answers(screening: str, **changes: str) -> dict[str, str]:
    data = {f"eligibility.{k}": str(v) for k, v in ELIGIBLE.items()}
    data.update({"site": "P1", "screening_number": screening, "strata.admission_cause": "septic"})
    data.update(changes)
    return data


@pytest.fixture
def world(ctx: ServiceContext) -> ReadyTrial:
    return ready_trial(ctx)


def test_the_randomize_form_speaks_french(app: Flask, world: ReadyTrial) -> None:
    page = french(app, "inv-p1").get(RANDOMIZE).get_data(as_text=True)
    assert '<html lang="fr">' in page
    for text in ("Randomiser un patient", "Numéro de sélection", "Éligibilité", "Âge (ans)", "Oui", "Non"):
        assert text in page, text
    # A yes/no question is a group named by its question (screen readers read it with each choice).
    assert (
        re.search(r"<fieldset class=\"question\"[^>]*>\s*<legend>.*Consentement", page) or "<legend>" in page
    )


def test_errors_are_beside_their_fields_in_plain_french(app: Flask, world: ReadyTrial) -> None:
    inv = french(app, "inv-p1")
    response = inv.post(
        RANDOMIZE,
        data={
            **answers("P1-0042", **{"eligibility.sofa_24h": "9,5"}),
            "step": "preview",
            "csrf_token": csrf_token(inv, RANDOMIZE),
        },
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    text = visible(page)
    assert "Veuillez corriger le formulaire" in text and "doit être un nombre entier" in text
    # The summary names the question as the form labels it and links to the field.
    assert 'href="#eligibility.sofa_24h"' in page and "Score SOFA des 24 premières heures" in text
    assert 'id="eligibility.sofa_24h-error"' in page and 'aria-invalid="true"' in page
    assert not CODE_NAMES.search(text), CODE_NAMES.search(text)
    assert 'value="9,5"' in page  # what was typed is kept

    missing = inv.post(
        RANDOMIZE,
        data={
            **answers("P1-0042", **{"strata.admission_cause": ""}),
            "step": "preview",
            "csrf_token": csrf_token(inv, RANDOMIZE),
        },
    )
    text = visible(missing.get_data(as_text=True))
    assert "admission en réanimation : réponse obligatoire" in text.replace("&#39;", "'")
    assert "septic, non_septic" not in text and not CODE_NAMES.search(text)


def test_french_numbers_are_accepted(app: Flask, world: ReadyTrial) -> None:
    inv = french(app, "inv-p1")
    response = inv.post(
        RANDOMIZE,
        data={
            **answers("P1-0043", **{"eligibility.mhladr": "5 400", "eligibility.age": " 64 "}),
            "step": "preview",
            "csrf_token": csrf_token(inv, RANDOMIZE),
        },
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "Confirmer la randomisation" in page, visible(page)[:600]


def test_a_refused_dispensing_comes_back_beside_its_field_without_the_password(
    app: Flask, world: ReadyTrial, ctx: ServiceContext
) -> None:
    from allocator.permissions import Scope
    from allocator.services.subjects import randomize
    from tests.support import eligible_on

    result = randomize.randomize(
        ctx,
        world.investigator,
        TRIAL,
        randomize.RandomizationRequest(
            site="P1",
            screening_number="P1-0050",
            eligibility=eligible_on(ctx.now().date()),
            strata={"admission_cause": "septic"},
        ),
        Scope(all_sites=True, site_ids=frozenset()),
    )
    page_url = f"/trials/{TRIAL}/subjects/{result.subject_number}"
    pharm = french(app, "pharm-p1")
    posted = pharm.post(
        f"{page_url}/dispense",
        data={
            "scan.D1": "0000-0000",
            "password": GOOD_PASSWORD,
            "csrf_token": csrf_token(pharm, page_url),
        },
    )
    assert posted.status_code == 303 and posted.headers["Location"].endswith(f"{page_url}#dispense")
    page = pharm.get(page_url).get_data(as_text=True)
    text = visible(page)
    assert "Veuillez corriger le formulaire" in text and "Kit D1" in text
    assert 'value="0000-0000"' in page  # the scan is kept
    assert GOOD_PASSWORD not in page  # the password never is
    assert not CODE_NAMES.search(text), CODE_NAMES.search(text)
    # Shown once: a reload shows the clean form.
    assert "Veuillez corriger le formulaire" not in pharm.get(page_url).get_data(as_text=True)


def test_plain_words_drop_requirement_ids_and_code_names(app: Flask) -> None:
    with app.test_request_context("/", headers=FRENCH):
        assert (
            forms.plain("a late entry needs a reason (DIB-09)") == "une saisie a posteriori doit être motivée"
        )
        assert forms.plain("is required (one of septic, non_septic)") == "réponse obligatoire"
        assert forms.plain("is required (DIB-03)") == "réponse obligatoire"
        assert forms.plain("eligibility.sofa_24h: something new") == "something new"
    with app.test_request_context("/"):
        assert forms.plain("is required (one of septic, non_septic)") == "is required"


def test_reasons_the_service_wrote_itself_read_in_french_on_the_audit_trail(
    app: Flask, ctx: ServiceContext, world: ReadyTrial
) -> None:
    """A reason the service records itself ("randomization list activated") was English in the French
    trail; in English it reads as recorded."""
    make_actor(ctx, "mon-fr", "monitor")
    trail = f"/trials/{TRIAL}/audit?action=trial.status_changed"
    client = french(app, "mon-fr")
    page = visible(client.get(trail).get_data(as_text=True))
    assert "liste de randomisation activée" in page and "randomization list activated" not in page
    # The chain's verification names its counts without a plural to get wrong ("1 points de contrôle").
    assert re.search(r"points de contrôle signés : \d+ ;", page), page[:400]
    client.post("/language", data={"language": "en", "next": "/", "csrf_token": csrf_token(client, "/")})
    assert "randomization list activated" in visible(client.get(trail).get_data(as_text=True))
