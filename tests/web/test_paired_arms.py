"""BLD-02: an active and a placebo subject look the same on every page, API answer and PDF of the
allocation path — randomize, view, print, dispense, print the sheet, scan at the bedside.

Subjects are randomized (on the fixed test clock, at site P1, stratum "septic") until there are two
of arm A and two of arm B; each is then taken through the same steps by the same users. Each
response of an A subject is compared with the response of its B partner: status, headers, JSON
keys, and the bodies after masking what legitimately differs — the subject's own identifiers
(subject, screening and randomization numbers, kit numbers in both written forms, QR payloads),
document ids, request ids, CSRF tokens and timestamps. Identifiers have a fixed length, so the raw
byte lengths must be equal too. The arm is learnt by the test alone, by opening a kit's sealed arm.
"""

from __future__ import annotations

import io
import json
import re
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import pypdf
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

import kits as kitlib
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.supply import kit_rules
from tests.masking import (
    Subject,
    assert_same_response,
    decoded_qr,
    key_shape,
    mask,
    pdf_fingerprint,
    pdf_text,
)
from tests.support import CLI_ACTOR, ELIGIBLE, GOOD_PASSWORD, arm_of, ready_trial
from tests.web.conftest import csrf_token, without_tokens

pytestmark = [pytest.mark.req("BLD-02"), pytest.mark.req("BLD-01")]

TRIAL = "IFNG-PAIS"
BASE = f"/trials/{TRIAL}"
API = f"/api/v1/trials/{TRIAL}"
ARMS = ("A", "B")
DAYS = ("D1", "D2", "D3")
# Blocks of up to 6 can put 6 subjects of one arm in a row before the other arm appears: 18 kits of
# that arm. 48 kits per site (24 of each arm) leave room; ready_trial's default 24 (12) do not.
KITS_PER_SITE = 48


@dataclass
class Seen:
    """Every compared response, for the vocabulary check at the end."""

    texts: list[tuple[str, str]] = field(default_factory=list)
    pdf_texts: list[tuple[str, str, str]] = field(default_factory=list)  # (what, text A, text B)


def assert_same_pdf(
    what: str, a: TestResponse, b: TestResponse, sa: Subject, sb: Subject, seen: Seen
) -> tuple[str, str]:
    assert a.status_code == b.status_code == 200, (what, a.status_code, b.status_code)
    assert_same_response(what, a, b, sa, sb)
    pdf_a, pdf_b = a.get_data(), b.get_data()
    assert pdf_a.startswith(b"%PDF") and pdf_b.startswith(b"%PDF")
    assert pdf_fingerprint(pdf_a) == pdf_fingerprint(pdf_b), what
    meta_a = {k: mask(str(v), sa) for k, v in (pypdf.PdfReader(io.BytesIO(pdf_a)).metadata or {}).items()}
    meta_b = {k: mask(str(v), sb) for k, v in (pypdf.PdfReader(io.BytesIO(pdf_b)).metadata or {}).items()}
    assert meta_a == meta_b, what
    text_a, text_b = pdf_text(pdf_a), pdf_text(pdf_b)
    assert mask(text_a, sa) == mask(text_b, sb), what
    seen.pdf_texts.append((what, text_a, text_b))
    seen.texts += [(f"{what} (headers)", json.dumps(dict(r.headers))) for r in (a, b)]
    return text_a, text_b


# --- the vocabulary check (BLD-01) --------------------------------------------------------------

_TAGS = re.compile(r"<[^>]+>")
_FORBIDDEN = re.compile(r"\barms?\b|placebo|interf[eé]ron|imukin|saline|sodium chloride", re.IGNORECASE)


def visible_text(html: str) -> str:
    return " ".join(_TAGS.sub(" ", html).split())


def assert_no_arm_words(what: str, text: str, *, html: bool) -> None:
    """No arm vocabulary, no product, and no arm code standing alone (a table cell, a JSON value).
    The English article "A" is legitimate in running text, so the arm codes are looked for where
    a code would be shown: alone in an element, as a JSON string value, or after "arm"/"group"."""
    body = visible_text(text) if html else text
    # The markup too (attributes, comments, scripts) — but not the names of the eligibility fields
    # that the confirmation step carries in hidden inputs ("eligibility.imukin_contraindication" is
    # an exclusion criterion asked of every patient, not a product given).
    markup = re.sub(r'name="eligibility\.[a-z0-9_]+"', 'name="eligibility.*"', without_tokens(text))
    for searched in (body, markup):
        assert not _FORBIDDEN.search(searched), f"{what}: {_FORBIDDEN.search(searched)}"
    for code in ARMS:
        if html:
            assert not re.search(rf">\s*{code}\s*<", text), f"{what}: arm code {code} alone in an element"
            assert not re.search(rf"\b(?:group|treatment|allocation)\W+{code}\b", body, re.I), what
        else:
            assert f'"{code}"' not in text, f"{what}: arm code {code} as a JSON value"


# --- steps ----------------------------------------------------------------------------------------


def answers_form(eligibility: Mapping[str, object]) -> dict[str, str]:
    return {f"eligibility.{k}": str(v) for k, v in eligibility.items()}


def learn(ctx: ServiceContext, subject: Subject) -> None:
    """The arm (for the test only: every kit of a subject is of its arm) and the kits' own labels."""
    arms = {arm_of(ctx, number) for number in subject.kits.values()}
    assert len(arms) == 1, "a subject's kits are of one arm"
    subject.arm = arms.pop()
    subject.kit_labels = {
        day: kitlib.build_payload(TRIAL, number, kit_rules.KIT_UNIT, kit_rules.mac(ctx))
        for day, number in subject.kits.items()
    }


def _kits_from_html(html: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for day, left, right in re.findall(r'<td>(D\d)</td><td class="kit">(\d{4})-(\d{4})</td>', html):
        found[day] = left + right
    return found


@dataclass
class Randomized:
    subject: Subject
    responses: dict[str, TestResponse]


def randomize_web(client: FlaskClient, ctx: ServiceContext, screening: str) -> Randomized:
    token = csrf_token(client, f"{BASE}/randomize")
    form = {
        "csrf_token": token,
        "site": "P1",
        "screening_number": screening,
        **answers_form(ELIGIBLE),
        "strata.admission_cause": "septic",
    }
    preview = client.post(f"{BASE}/randomize", data={**form, "step": "preview"})
    assert preview.status_code == 200, preview.get_data(as_text=True)[:2000]
    posted = client.post(f"{BASE}/randomize", data={**form, "step": "confirm"})
    assert posted.status_code == 303, posted.get_data(as_text=True)[:2000]
    done = client.get(posted.headers["Location"])  # Post/Redirect/Get (issue 13)
    assert done.status_code == 200, done.get_data(as_text=True)[:2000]
    html = done.get_data(as_text=True)
    subject = Subject(screening)
    subject.subject_number = re.search(r'data-testid="subject-number">([^<]+)<', html).group(1)  # type: ignore[union-attr]
    subject.randomization_number = re.search(r'data-testid="randomization-number">([^<]+)<', html).group(1)  # type: ignore[union-attr]
    subject.kits = _kits_from_html(html)
    assert list(subject.kits) == list(DAYS)
    learn(ctx, subject)
    return Randomized(subject, {"preview": preview, "randomized": done})


def randomize_api(
    client: FlaskClient, ctx: ServiceContext, headers: dict[str, str], screening: str
) -> Randomized:
    response = client.post(
        f"{API}/subjects",
        json={
            "site": "P1",
            "screening_number": screening,
            "eligibility": ELIGIBLE,
            "strata": {"admission_cause": "septic"},
        },
        headers=headers,
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.json
    assert body is not None
    subject = Subject(
        screening,
        body["subject_number"],
        body["randomization_number"],
        kits={k["day"]: k["kit_number"] for k in body["kits"]},
    )
    learn(ctx, subject)
    return Randomized(subject, {"api": response})


def bearer(ctx: ServiceContext, username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {users.create_token(ctx, CLI_ACTOR, username, 'bld-02').token}"}


def pairs_of(found: Iterable[Randomized]) -> tuple[Randomized, Randomized]:
    by_arm: dict[str, Randomized] = {}
    for item in found:
        by_arm.setdefault(item.subject.arm, item)
    assert set(by_arm) == set(ARMS)
    return by_arm["A"], by_arm["B"]


# --- the test -------------------------------------------------------------------------------------


def test_an_active_and_a_placebo_subject_are_indistinguishable(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    ready_trial(ctx, kits_per_site=KITS_PER_SITE)
    seen = Seen()
    investigator = signed_in("inv-p1", GOOD_PASSWORD)
    pharmacist = signed_in("pharm-p1", GOOD_PASSWORD)
    nurse = signed_in("nurse-p1", GOOD_PASSWORD)
    inv_api, pharm_api, nurse_api = bearer(ctx, "inv-p1"), bearer(ctx, "pharm-p1"), bearer(ctx, "nurse-p1")

    # Randomize, alternating the page and the API, until each channel gave one subject of each arm.
    web_found: list[Randomized] = []
    api_found: list[Randomized] = []

    def complete(found: list[Randomized]) -> bool:
        return {r.subject.arm for r in found} == set(ARMS)

    number = 0
    while not (complete(web_found) and complete(api_found)):
        number += 1
        assert number <= 40, "no subject of each arm after 40 randomizations"
        screening = f"P1-{number:04d}"
        if not complete(web_found) and (complete(api_found) or number % 2):
            web_found.append(randomize_web(investigator, ctx, screening))
        else:
            api_found.append(randomize_api(investigator, ctx, inv_api, screening))
    web_a, web_b = pairs_of(web_found)  # pair 1: randomized through the page, scanned on the page
    api_a, api_b = pairs_of(api_found)  # pair 2: randomized through the API, scanned through the API
    pairs = [(web_a.subject, web_b.subject), (api_a.subject, api_b.subject)]

    def same(what: str, a: TestResponse, b: TestResponse, sa: Subject, sb: Subject) -> None:
        assert_same_response(what, a, b, sa, sb)
        for response in (a, b):
            seen.texts.append((f"{what} (headers)", json.dumps(dict(response.headers))))
            if response.mimetype in ("text/html", "application/json", "application/problem+json"):
                seen.texts.append((what, response.get_data(as_text=True)))

    for step in ("preview", "randomized"):
        same(
            f"randomize page ({step})",
            web_a.responses[step],
            web_b.responses[step],
            web_a.subject,
            web_b.subject,
        )
    same(
        "randomization API (201)",
        api_a.responses["api"],
        api_b.responses["api"],
        api_a.subject,
        api_b.subject,
    )

    # Views before dispensing, by every blinded role of the path.
    for sa, sb in pairs:
        for who, client in (("investigator", investigator), ("pharmacist", pharmacist), ("nurse", nurse)):
            same(
                f"subject page ({who}, allocated)",
                client.get(f"{BASE}/subjects/{sa.subject_number}"),
                client.get(f"{BASE}/subjects/{sb.subject_number}"),
                sa,
                sb,
            )
        same(
            "subject JSON (allocated)",
            investigator.get(f"{API}/subjects/{sa.subject_number}", headers=inv_api),
            investigator.get(f"{API}/subjects/{sb.subject_number}", headers=inv_api),
            sa,
            sb,
        )
        confirmations = []
        for s in (sa, sb):
            token = csrf_token(investigator, f"{BASE}/subjects/{s.subject_number}")
            posted = investigator.post(
                f"{BASE}/subjects/{s.subject_number}/confirmations", data={"csrf_token": token}
            )
            assert posted.status_code == 303
            confirmations.append(investigator.get(posted.headers["Location"]))
        text_a, text_b = assert_same_pdf("confirmation PDF", *confirmations, sa, sb, seen)
        assert sa.subject_number in text_a and sb.subject_number in text_b
        refused = []
        for s in (sa, sb):
            token = csrf_token(pharmacist, f"{BASE}/subjects/{s.subject_number}")
            posted = pharmacist.post(
                f"{BASE}/subjects/{s.subject_number}/dispensation-sheets", data={"csrf_token": token}
            )
            assert posted.status_code == 303
            refused.append(pharmacist.get(posted.headers["Location"]))  # shows the refusal
        same("sheet before dispensing (refused)", refused[0], refused[1], sa, sb)
        assert "dispense first" in refused[0].get_data(as_text=True)

    # Dispense (signed): pair 1 by typing the kit numbers, pair 2 by scanning the kits' own labels.
    for index, (sa, sb) in enumerate(pairs):
        posted, flashed = [], []
        for s in (sa, sb):
            scans = {
                f"scan.{day}": f"{n[:4]}-{n[4:]}" if index == 0 else s.kit_labels[day]
                for day, n in s.kits.items()
            }
            token = csrf_token(pharmacist, f"{BASE}/subjects/{s.subject_number}")
            posted.append(
                pharmacist.post(
                    f"{BASE}/subjects/{s.subject_number}/dispense",
                    data={**scans, "password": GOOD_PASSWORD, "otp": "", "csrf_token": token},
                )
            )
            flashed.append(pharmacist.get(posted[-1].headers["Location"]))  # shows the flash message
        same("dispense (303)", posted[0], posted[1], sa, sb)
        assert posted[0].status_code == 303
        same("subject page after dispensing (pharmacist, flash)", flashed[0], flashed[1], sa, sb)
        assert "Dispensed (signed)" in flashed[0].get_data(as_text=True)

        sheets = {}
        for channel, client, headers in (("web", pharmacist, {}), ("API", pharmacist, pharm_api)):
            printed = []
            for s in (sa, sb):
                if channel == "web":  # print (POST, CSRF), then follow to the printed document
                    token = csrf_token(client, f"{BASE}/subjects/{s.subject_number}")
                    posted = client.post(
                        f"{BASE}/subjects/{s.subject_number}/dispensation-sheets", data={"csrf_token": token}
                    )
                    assert posted.status_code == 303
                else:
                    posted = client.post(
                        f"{API}/subjects/{s.subject_number}/dispensation-sheets", headers=headers
                    )
                    assert posted.status_code == 201
                printed.append(client.get(posted.headers["Location"], headers=headers))
            a, b = printed
            assert_same_pdf(f"dispensation sheet ({channel})", a, b, sa, sb, seen)
            sheets[channel] = (a.get_data(), b.get_data())
        # The QR codes of the original sheet: three per subject, same error correction, same length.
        codes_a, codes_b = decoded_qr(sheets["web"][0]), decoded_qr(sheets["web"][1])
        for s, codes in ((sa, codes_a), (sb, codes_b)):
            assert len(codes) == len(DAYS), codes
            for text, _ in codes:
                parsed = kitlib.verify_payload(text, TRIAL, kit_rules.mac(ctx))
                assert s.kits[parsed.unit] == parsed.kit_number
                s.payloads[parsed.unit] = text
        assert sorted((len(t), ec) for t, ec in codes_a) == sorted((len(t), ec) for t, ec in codes_b)
        assert {mask(t, sa) for t, _ in codes_a} == {mask(t, sb) for t, _ in codes_b}

    # Views after dispensing; the subjects list JSON entries.
    listing = investigator.get(f"{API}/subjects", headers=inv_api).json
    assert listing is not None
    entries = {e["subject_number"]: e for e in listing["subjects"]}
    for sa, sb in pairs:
        ea, eb = entries[sa.subject_number], entries[sb.subject_number]
        assert key_shape(ea) == key_shape(eb)
        dump_a, dump_b = json.dumps(ea, sort_keys=True), json.dumps(eb, sort_keys=True)
        assert mask(dump_a, sa) == mask(dump_b, sb)
        assert len(dump_a) == len(dump_b)
        seen.texts += [("subjects list JSON entry", dump_a), ("subjects list JSON entry", dump_b)]
        for who, client in (("investigator", investigator), ("nurse", nurse)):
            same(
                f"subject page ({who}, dispensed)",
                client.get(f"{BASE}/subjects/{sa.subject_number}"),
                client.get(f"{BASE}/subjects/{sb.subject_number}"),
                sa,
                sb,
            )

    # The bedside: pair 1 on the nurse's page, pair 2 through the API. First the refusals (another
    # subject's label — the partner's, of the other arm — and the D2 label as D1), then D1 itself,
    # then D1 again.
    (pa, pb), (qa, qb) = pairs

    def page_scan(subject: Subject, payload: str, day: str) -> TestResponse:
        token = csrf_token(nurse, f"{BASE}/bedside")
        return nurse.post(
            f"{BASE}/bedside",
            data={
                "subject_number": subject.subject_number,
                "day": day,
                "payload": payload,
                "csrf_token": token,
            },
            follow_redirects=True,  # Post/Redirect/Get since issue 13: the outcome is the GET page
        )

    def api_scan(subject: Subject, payload: str, day: str) -> TestResponse:
        return nurse.post(
            f"{API}/scans",
            json={"subject_number": subject.subject_number, "day": day, "payload": payload},
            headers=nurse_api,
        )

    for label, scan, sa, sb in (("page", page_scan, pa, pb), ("API", api_scan, qa, qb)):
        wrong_patient = (scan(sa, sb.payloads["D1"], "D1"), scan(sb, sa.payloads["D1"], "D1"))
        # The partner's label is masked as a foreign value: compare after masking it too.
        partner = {id(sa): sb, id(sb): sa}
        refused = 200 if label == "page" else 409
        for response, s in zip(wrong_patient, (sa, sb), strict=True):
            assert response.status_code == refused, response.get_data(as_text=True)
            assert partner[id(s)].payloads["D1"] not in response.get_data(as_text=True)
        same(f"bedside wrong patient ({label})", *wrong_patient, sa, sb)
        wrong_day = (scan(sa, sa.payloads["D2"], "D1"), scan(sb, sb.payloads["D2"], "D1"))
        assert wrong_day[0].status_code == refused
        same(f"bedside wrong day ({label})", *wrong_day, sa, sb)
        given = (scan(sa, sa.payloads["D1"], "D1"), scan(sb, sb.payloads["D1"], "D1"))
        assert given[0].status_code == (200 if label == "page" else 201), given[0].get_data(as_text=True)
        same(f"bedside D1 ({label})", *given, sa, sb)
        again = (scan(sa, sa.payloads["D1"], "D1"), scan(sb, sb.payloads["D1"], "D1"))
        assert again[0].status_code == refused
        same(f"bedside D1 again ({label})", *again, sa, sb)
        same(
            f"subject JSON (D1 given, {label})",
            investigator.get(f"{API}/subjects/{sa.subject_number}", headers=inv_api),
            investigator.get(f"{API}/subjects/{sb.subject_number}", headers=inv_api),
            sa,
            sb,
        )

    # BLD-01 vocabulary: no arm word, no product, no arm code in any page or JSON of the path.
    for what, text in seen.texts:
        assert_no_arm_words(what, text, html=text.lstrip().startswith("<"))
    # In the PDFs the labels legitimately name the blinded product ("Interféron gamma-1b ... ou
    # placebo") — identically for both arms: compare the counts instead of forbidding the words.
    for what, text_a, text_b in seen.pdf_texts:
        for word in (r"\barms?\b", "placebo", r"interf[eé]ron", "imukin", "saline", r"\bbras\b"):
            count_a = len(re.findall(word, text_a, re.IGNORECASE))
            count_b = len(re.findall(word, text_b, re.IGNORECASE))
            assert count_a == count_b, (what, word, count_a, count_b)
        for code in ARMS:
            alone = rf"(?m)^\s*{code}\s*$"
            assert len(re.findall(alone, text_a)) == len(re.findall(alone, text_b)), (what, code)


def test_subject_page_timing_does_not_depend_on_the_arm(
    ctx: ServiceContext, signed_in: Callable[[str, str], FlaskClient]
) -> None:
    """A smoke check, not a statistical proof: the median time of 30 interleaved requests for the
    subject page of an A and of a B subject differ by less than a factor 1.5. It catches an arm-
    dependent code path doing visibly more work (an unblinding read, an extra query), not a subtle
    timing side channel, which would need thousands of samples on a quiet machine."""
    ready = ready_trial(ctx, kits_per_site=KITS_PER_SITE)
    investigator = signed_in("inv-p1", GOOD_PASSWORD)
    headers = bearer(ctx, ready.investigator.username)
    found = [randomize_api(investigator, ctx, headers, f"P1-{i:04d}") for i in range(1, 3)]
    i = 3
    while {r.subject.arm for r in found} != set(ARMS):
        found.append(randomize_api(investigator, ctx, headers, f"P1-{i:04d}"))
        i += 1
    a, b = pairs_of(found)
    paths = {arm: f"{BASE}/subjects/{r.subject.subject_number}" for arm, r in (("A", a), ("B", b))}
    for path in paths.values():  # warm up (templates, caches)
        for _ in range(3):
            assert investigator.get(path).status_code == 200
    times: dict[str, list[float]] = {"A": [], "B": []}
    for n in range(30):
        for arm in ARMS if n % 2 else ARMS[::-1]:
            start = time.perf_counter()
            response = investigator.get(paths[arm])
            times[arm].append(time.perf_counter() - start)
            assert response.status_code == 200
    median_a, median_b = statistics.median(times["A"]), statistics.median(times["B"])
    ratio = max(median_a, median_b) / min(median_a, median_b)
    assert ratio < 1.5, f"median A {median_a * 1000:.1f} ms, B {median_b * 1000:.1f} ms"
