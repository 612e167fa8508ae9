"""The leak crawler (H1): for one principal, sign in and walk every rule of `app.url_map` with real
ids of the world, follow same-origin links and GET forms, call every API endpoint with the
principal's bearer token, submit every POST route with refused input, and run every response
through `tests.leakcheck.LeakChecker`.

Route parameters are filled by `Resolver`, which knows each parameter by name (and, for generic
names, by the path segment before it). A route with a parameter it does not know raises
`UnknownParameter`, naming the route: a new route cannot silently escape the crawl.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlencode, urlsplit

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import HTTPException
from werkzeug.routing import AnyConverter, Rule
from werkzeug.routing.exceptions import RequestRedirect
from werkzeug.test import TestResponse

from allocator import crypto
from tests.leakcheck import Finding, LeakChecker, parse_html
from tests.masking import Subject
from tests.support import ELIGIBLE, GOOD_PASSWORD
from tests.web.conftest import csrf_token, https_client
from tests.web.leak_world import ARMS, TRIAL, Principal, World

MAX_DEPTH = 2  # links and forms followed from the route seeds
MAX_VARIANTS = 30  # distinct query strings per endpoint and principal
MAX_COMBINATIONS = 120  # argument combinations per route
STATIC = Path(__file__).resolve().parents[2] / "static"
SKIPPED_POSTS = {"auth.logout"}  # submitted last, on purpose (it ends the session)


class UnknownParameter(AssertionError):
    """A route has a parameter the resolver cannot fill: teach `Resolver.KINDS` about it."""


@dataclass
class Fetched:
    """One request and its answer, with what the checks found in it."""

    principal: str
    channel: str  # session | bearer
    method: str
    url: str
    endpoint: str | None
    args: dict[str, str]
    via: str  # seed | error-path | link | form | redirect | post-empty | post-realistic | follow
    response: TestResponse
    findings: list[Finding]
    barcodes: int = 0
    seconds: float = 0.0  # the request and its checks
    subject: str | None = None  # the subject a subject-specific request is about
    pair_key: str | None = None  # equal for the two twins of a request made for both

    @property
    def status(self) -> int:
        return self.response.status_code


class Resolver:
    """Values for route parameters, by name. Generic names are known only after a known segment."""

    # parameter name -> kind of value in World.values
    KINDS: ClassVar[dict[str, str]] = {
        "trial": "trial",
        "subject": "subject",
        "site": "site",
        "list_id": "list_id",
        "lot": "lot",
        "day": "day",
        "username": "username",
        "token_id": "token_id",
        "session_id": "session_id",
        "assignment_id": "assignment_id",
        "unblinding_id": "unblinding_id",
        "drill_id": "drill_id",
        "job": "report_job",
    }
    # (generic parameter name, path segment before it) -> kind
    CONTEXTUAL: ClassVar[dict[tuple[str, str], str]] = {
        ("number", "shipments"): "shipment",
        ("number", "excursions"): "excursion",
        ("number", "returns"): "kit_disposal",
        ("filename", "static"): "static",
        ("name", "reports"): "report",
        ("name", "restricted"): "report",
        ("name", "review"): "review",
        ("document_id", "documents"): "code_break_document",
        ("document", "dispensation-sheets"): "dispensation_sheet",
        ("document", "confirmations"): "confirmation",
        # labship (issue 20)
        ("number", "lab-shipments"): "lab_shipment",
        ("number", "lab-receipt"): "lab_shipment",
        ("document", "manifests"): "lab_manifest",
        ("label", "samples"): "sample_label",  # issue 20: a cohort participant's planned sample (D3)
    }
    UNKNOWN: ClassVar[dict[str, str]] = {
        "trial": "NOPE",
        "subject": "P1-999",
        "site": "P9",
        "list_id": "999999",
        "lot": "LOT-NONE",
        "day": "D9",
        "username": "nobody-here",
        "token_id": "999999",
        "session_id": "999999",
        "assignment_id": "999999",
        "unblinding_id": "999999",
        "drill_id": "999999",
        "report_job": "999999",
        "shipment": "SH-9999",
        "excursion": "EXC-9999",
        "kit_disposal": "DES-P9-9999",
        "static": "missing.css",
        "report": "no-such-report",
        "review": "no-such-review",
        "code_break_document": "CBDOC-NONE",
        "dispensation_sheet": "DISP-NONE",
        "confirmation": "RAND-NONE",
        "lab_shipment": "LS-9999",
        "lab_manifest": "LM-NONE",
        "sample_label": "D99",
    }

    def __init__(self, world: World) -> None:
        self.world = world

    @classmethod
    def kind(cls, rule: Rule, name: str) -> str | None:
        """The kind of `name` in `rule`, None for a converter with its own values (any(...))."""
        if isinstance(rule._converters.get(name), AnyConverter):
            return None
        if name in cls.KINDS:
            return cls.KINDS[name]
        before = re.search(rf"/([^/<>]+)/<(?:[^:<>]+:)?{re.escape(name)}>", rule.rule)
        kind = cls.CONTEXTUAL.get((name, before.group(1) if before else ""))
        if kind is None:
            raise UnknownParameter(
                f"route {rule.rule} ({rule.endpoint}) has a parameter {name!r} the leak crawler cannot "
                "fill: add it to Resolver.KINDS or Resolver.CONTEXTUAL (tests/web/crawler.py) with real "
                "values from the world (tests/web/leak_world.py)"
            )
        return kind

    def values(self, rule: Rule, name: str, trial: str | None = None) -> list[str]:
        """Real values of `name`; within `trial` (a route with a <trial>), that trial's own values of
        the kind when the world has some (World.trial_values: the cohort's subjects and site)."""
        kind = self.kind(rule, name)
        if kind is None:
            converter = rule._converters[name]
            assert isinstance(converter, AnyConverter)
            return sorted(converter.items)
        if kind == "static":
            return sorted(p.name for p in STATIC.iterdir() if p.is_file())
        own = self.world.trial_values.get(trial or "", {}).get(kind)
        found = own if own is not None else self.world.values.get(kind, [])
        if not found:
            raise UnknownParameter(f"the world holds no value of kind {kind!r} for {rule.rule}")
        return found

    def expand(self, rule: Rule) -> Iterator[tuple[dict[str, str], str]]:
        """(arguments, via) for every combination of real values, then one error path per
        parameter (an unknown value, the others real)."""
        names = sorted(rule.arguments)
        # Each trial of the world on its own (issue 20: the cohort beside the trial), so that the
        # cap on combinations applies per trial and each trial's routes get its own ids.
        trials = self.values(rule, "trial") if "trial" in names else [None]
        for trial in trials:
            own = [[trial] if name == "trial" and trial else self.values(rule, name, trial) for name in names]
            for combination in itertools.islice(itertools.product(*own), MAX_COMBINATIONS):
                yield dict(zip(names, combination, strict=True)), "seed"
        choices = [self.values(rule, name) for name in names]
        for name in names:
            kind = self.kind(rule, name)
            if kind is None:
                continue
            args = {n: c[0] for n, c in zip(names, choices, strict=True)}
            args[name] = self.UNKNOWN[kind]
            yield args, "error-path"


@dataclass
class Crawler:
    """Crawls the app as each principal; everything fetched is in `fetched`."""

    app: Flask
    world: World
    checker: LeakChecker
    fetched: list[Fetched] = field(default_factory=list)
    only: frozenset[str] | None = None  # restrict to these endpoints (the injected-leak tests)

    def __post_init__(self) -> None:
        self._last = time.perf_counter()
        self.resolver = Resolver(self.world)
        self.adapter = self.app.url_map.bind("localhost", url_scheme="https")
        self.rules = sorted(
            (r for r in self.app.url_map.iter_rules() if self.only is None or r.endpoint in self.only),
            key=lambda r: r.rule,
        )

    # --- plumbing -------------------------------------------------------------------------------

    def client(self, principal: Principal) -> FlaskClient:
        """A client of its own address per principal (failed attempts are throttled by address)."""
        client = https_client(self.app)
        index = (
            sorted(self.world.principals).index(principal.role)
            if principal.role in self.world.principals
            else 99
        )
        client.environ_base["REMOTE_ADDR"] = f"198.51.100.{10 + index}"
        return client

    def sign_in(self, principal: Principal) -> FlaskClient:
        """Through the pages, as a person would; every answer on the way is checked too."""
        client = self.client(principal)
        page = self.record(principal, "session", "GET", "/login", "sign-in", client.get("/login"))
        token = _csrf(page)
        response = client.post(
            "/login", data={"username": principal.username, "password": GOOD_PASSWORD, "csrf_token": token}
        )
        self.record(principal, "session", "POST", "/login", "sign-in", response)
        assert response.status_code == 302, response.get_data(as_text=True)[:300]
        if principal.totp_secret is not None:
            page = self.record(
                principal, "session", "GET", "/account/totp", "sign-in", client.get("/account/totp")
            )
            code = crypto.totp_now(principal.totp_secret, self.world.clock())
            done = client.post("/account/totp", data={"code": code, "csrf_token": _csrf(page)})
            self.record(principal, "session", "POST", "/account/totp", "sign-in", done)
            assert done.status_code == 302 and done.headers["Location"] == "/", done.get_data(as_text=True)[
                :300
            ]
        return client

    def endpoint_of(self, method: str, url: str) -> tuple[str | None, dict[str, str]]:
        parts = urlsplit(url)
        try:
            endpoint, args = self.adapter.match(parts.path, method=method)
        except (HTTPException, RequestRedirect):
            return None, {}
        return str(endpoint), {k: str(v) for k, v in args.items()}

    def build(self, rule: Rule, args: dict[str, str]) -> str:
        return self.adapter.build(
            rule.endpoint, args, method=sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})[0]
        )

    def record(
        self,
        principal: Principal,
        channel: str,
        method: str,
        url: str,
        via: str,
        response: TestResponse,
        *,
        pair_key: str | None = None,
        subject: str | None = None,
    ) -> Fetched:
        endpoint, args = self.endpoint_of(method, url)
        started = self._last
        where = f"{principal.role} {channel} {method} {url} ({response.status_code})"
        before = len(self.checker.seen.barcodes)
        findings = self.checker.headers(where, response.headers.items())
        findings += self.checker.body(where, response.mimetype or "", response.get_data())
        fetched = Fetched(
            principal=principal.role,
            channel=channel,
            method=method,
            url=url,
            endpoint=endpoint,
            args=args,
            via=via,
            response=response,
            findings=findings,
            barcodes=len(self.checker.seen.barcodes) - before,
            subject=subject or args.get("subject"),
            pair_key=pair_key,
        )
        self._last = time.perf_counter()
        fetched.seconds = self._last - started
        self.fetched.append(fetched)
        return fetched

    # --- the crawl ------------------------------------------------------------------------------

    def crawl(self, principal: Principal) -> None:
        client = self.sign_in(principal)
        self.walk(principal, client)
        self.api(principal)
        self.submit(principal, client)
        self.realistic(principal, client)
        token = csrf_token(client, "/account")
        self.record(
            principal,
            "session",
            "POST",
            "/logout",
            "post-empty",
            client.post("/logout", data={"csrf_token": token}),
        )

    def walk(self, principal: Principal, client: FlaskClient) -> None:
        """Every GET route with real ids and error paths, then links and GET forms found."""
        queue: deque[tuple[str, int, str]] = deque()
        for rule in self.rules:
            if "GET" not in (rule.methods or set()):
                queue.append(
                    (self.build(rule, next(self.resolver.expand(rule))[0]), MAX_DEPTH, "wrong-method")
                )
                continue
            for args, via in self.resolver.expand(rule):
                queue.append((self.build(rule, args), 0, via))
        seen: set[str] = set()
        variants: dict[str, int] = {}
        denied: set[tuple[str | None, str | None]] = set()  # (endpoint, trial) refused to the role
        while queue:
            url, depth, via = queue.popleft()
            if url in seen:
                continue
            seen.add(url)
            endpoint, url_args = self.endpoint_of("GET", url)
            refusal = (endpoint, url_args.get("trial"))
            if self.only is not None and endpoint not in self.only:
                continue
            if via == "seed" and refusal in denied:
                continue  # the role may not open this route at all: one refusal per route is enough
            if "?" in url and endpoint is not None:
                variants[endpoint] = variants.get(endpoint, 0) + 1
                if variants[endpoint] > MAX_VARIANTS:
                    continue
            response = client.get(url)
            key = self._pair_key(principal, "session", "GET", url, via)
            fetched = self.follow(
                principal, client, self.record(principal, "session", "GET", url, via, response, pair_key=key)
            )
            if _refused_by_role(response):
                denied.add(refusal)
            if depth >= MAX_DEPTH:
                continue
            for target, how in self._targets(fetched.url, fetched):
                if target not in seen:
                    queue.append((target, depth + 1, how))

    def _targets(self, url: str, fetched: Fetched) -> Iterator[tuple[str, str]]:
        response = fetched.response
        if response.mimetype != "text/html":
            return
        page = parse_html(response.get_data(as_text=True))
        for href in page.links:
            target = _same_origin(href, url)
            if target and not target.startswith("/static/"):
                yield target, "link"
        for form in page.forms:
            if form.method != "get":
                continue
            action = _same_origin(form.action or url, url)
            if not action:
                continue
            base = action.split("?")[0]
            yield f"{base}?{urlencode(form.fields)}", "form"
            for name, value in form.fields.items():
                for candidate in self._form_values(name, value):
                    yield f"{base}?{urlencode({**form.fields, name: candidate})}", "form"

    def _form_values(self, name: str, value: str) -> list[str]:
        """Real values to try in a GET form field: subjects in id fields, users in user fields."""
        lowered = name.lower()
        if "id" in lowered.split("_") or lowered.endswith("id"):
            twins = self.world.twins
            return [s.subject_number for pair in twins.values() for s in pair]
        if "user" in lowered:
            return [p.username for p in self.world.principals.values()][:3]
        return []

    def _pair_key(self, principal: Principal, channel: str, method: str, url: str, via: str) -> str | None:
        """The same key for the same request about either twin of a pair (subject routes only)."""
        endpoint, args = self.endpoint_of(method, url)
        subject = args.get("subject")
        if endpoint is None or subject is None:
            return None
        state = self._twin_state(subject)
        if state is None:
            return None
        if "document" in args:  # a printed sheet belongs to one subject: pair "its own" with "its own"
            owners = dict(v.split("=", 1) for v in self.world.values.get("dispensation_sheet_owner", []))
            args = {**args, "document": "own" if owners.get(args["document"]) == subject else "other"}
        rest = ",".join(f"{k}={v}" for k, v in sorted(args.items()) if k != "subject")
        query = urlsplit(url).query
        return f"{principal.role}|{channel}|{method}|{endpoint}|{rest}|{query}|{via}|{state}"

    def _twin_state(self, subject: str) -> str | None:
        for state, pair in self.world.twins.items():
            if subject in (pair[0].subject_number, pair[1].subject_number):
                return state
        return None

    def api(self, principal: Principal) -> None:
        """Every API GET route with the principal's bearer token (no cookie)."""
        client = self.client(principal)
        headers = {"Authorization": f"Bearer {principal.token}"}
        for rule in self.rules:
            if not rule.rule.startswith("/api/") or "GET" not in (rule.methods or set()):
                continue
            denied: set[str | None] = set()  # the trials whose route refused the role
            for args, via in self.resolver.expand(rule):
                if args.get("trial") in denied and via == "seed":
                    continue
                url = self.build(rule, args)
                response = client.get(url, headers=headers)
                self.record(
                    principal,
                    "bearer",
                    "GET",
                    url,
                    via,
                    response,
                    pair_key=self._pair_key(principal, "bearer", "GET", url, via),
                )
                if _refused_by_role(response):
                    denied.add(args.get("trial"))

    def submit(self, principal: Principal, client: FlaskClient) -> None:
        """Every POST route, with refused input: an empty form (and the CSRF token) on pages, an
        empty JSON object on the API (by bearer, and by session without a CSRF token); the page a
        refusal redirects to is fetched too (it shows the flash message)."""
        token = csrf_token(client, "/account")
        bearer = self.client(principal)
        headers = {"Authorization": f"Bearer {principal.token}"}
        for rule in self.rules:
            if "POST" not in (rule.methods or set()) or rule.endpoint in SKIPPED_POSTS:
                continue
            denied: set[str | None] = set()  # the trials whose route refused the role
            for args, via in self.resolver.expand(rule):
                if via == "seed" and (
                    args.get("trial") in denied
                    or ("subject" not in args and _repeats(rule, args, self.resolver))
                ):
                    continue
                url = self.build(rule, args)
                if rule.rule.startswith("/api/"):
                    key = self._pair_key(principal, "bearer", "POST", url, via)
                    posted = self.record(
                        principal,
                        "bearer",
                        "POST",
                        url,
                        "post-empty",
                        bearer.post(url, json={}, headers=headers),
                        pair_key=key,
                    )
                    key = self._pair_key(principal, "session", "POST", url, via)
                    self.record(
                        principal,
                        "session",
                        "POST",
                        url,
                        "post-empty",
                        client.post(url, json={}),
                        pair_key=key,
                    )
                else:
                    key = self._pair_key(principal, "session", "POST", url, via)
                    posted = self.record(
                        principal,
                        "session",
                        "POST",
                        url,
                        "post-empty",
                        client.post(url, data={"csrf_token": token}),
                        pair_key=key,
                    )
                    self.follow(principal, client, posted)
                if _refused_by_role(posted.response):
                    denied.add(args.get("trial"))

    def follow(self, principal: Principal, client: FlaskClient, origin: Fetched, hops: int = 3) -> Fetched:
        """Follow redirects at once, as a browser does (the target shows the flash messages of the
        request that redirected); returns the last answer."""
        current = origin
        for _ in range(hops):
            location = _same_origin(current.response.headers.get("Location", ""), current.url)
            if current.status not in (301, 302, 303, 307, 308) or not location:
                break
            if not self._allowed(location, "GET"):
                break
            key = f"{current.pair_key}|follow" if current.pair_key else None
            via = "follow" if origin.method == "POST" else "redirect"
            response = client.get(location)
            current = self.record(
                principal, "session", "GET", location, via, response, pair_key=key, subject=origin.subject
            )
        return current

    def realistic(self, principal: Principal, client: FlaskClient) -> None:
        """Refusals a user can really meet, for both twins alike: another subject's kits and labels,
        an ineligible patient, a field that tries to choose the arm, a replacement without a
        reason; and kit labels printed for both twins' kits."""
        world, token = self.world, csrf_token(client, "/account")
        base, api = f"/trials/{TRIAL}", f"/api/v1/trials/{TRIAL}"
        bearer = self.client(principal)
        headers = {"Authorization": f"Bearer {principal.token}"}
        number = 8000 + 10 * sorted(self.world.principals).index(principal.role)
        if self._allowed(f"{base}/randomize", "POST"):
            form = {
                "csrf_token": token,
                "site": "P1",
                "screening_number": f"P1-{number:04d}",
                **{f"eligibility.{k}": str(v) for k, v in ELIGIBLE.items()},
                "strata.admission_cause": "septic",
            }
            for step, extra in (("preview", {}), ("confirm", {"eligibility.sofa_24h": "3"})):
                response = client.post(f"{base}/randomize", data={**form, **extra, "step": step})
                self.record(
                    principal, "session", "POST", f"{base}/randomize", f"post-realistic {step}", response
                )
        if self._allowed(f"{api}/subjects", "POST"):
            body = {
                "site": "P1",
                "screening_number": f"P1-{number + 1:04d}",
                "eligibility": ELIGIBLE,
                "strata": {"admission_cause": "septic"},
                "arm": ARMS[0],
            }
            self.record(
                principal,
                "bearer",
                "POST",
                f"{api}/subjects",
                "post-realistic arm field",
                bearer.post(f"{api}/subjects", json=body, headers=headers),
            )

        def twins(state: str) -> list[tuple[Subject, Subject]]:
            if state not in world.twins:  # a smaller world
                return []
            a, b = world.twins[state]
            return [(a, b), (b, a)]

        def post(url: str, data: dict[str, str], what: str, own: Subject, *, api_json: bool = False) -> None:
            if not self._allowed(url, "POST"):
                return
            key = f"{principal.role}|{what}|{self._twin_state(own.subject_number)}"
            if api_json:
                response = bearer.post(url, json=data, headers=headers)
                self.record(
                    principal,
                    "bearer",
                    "POST",
                    url,
                    f"post-realistic {what}",
                    response,
                    pair_key=key,
                    subject=own.subject_number,
                )
                return
            posted = self.record(
                principal,
                "session",
                "POST",
                url,
                f"post-realistic {what}",
                client.post(url, data={**data, "csrf_token": token}),
                pair_key=key,
                subject=own.subject_number,
            )
            self.follow(principal, client, posted)

        for own, partner in twins("allocated"):
            scans = {f"scan.{day}": f"{n[:4]}-{n[4:]}" for day, n in partner.kits.items()}
            post(
                f"{base}/subjects/{own.subject_number}/dispense",
                {**scans, "password": GOOD_PASSWORD, "otp": ""},
                "dispense another subject's kits",
                own,
            )
            kit_lines = "\n".join(own.kits.values())
            post(f"{base}/kits/labels", {"kits": kit_lines, "kind": "outer"}, "kit labels", own)
        for own, partner in twins("administered"):
            for what, payload, day in (
                ("another patient's label", partner.payloads["D1"], "D1"),
                ("the D2 label as D1", own.payloads["D2"], "D1"),
            ):
                data = {"subject_number": own.subject_number, "day": day, "payload": payload}
                post(f"{base}/bedside", data, f"bedside: {what}", own)
                post(f"{api}/scans", data, f"API scan: {what}", own, api_json=True)
        for own, _partner in twins("corrected"):
            post(
                f"{base}/subjects/{own.subject_number}/replace",
                {"day": "D2", "cause": "lost", "reason": ""},
                "replace without a reason",
                own,
            )
        unblind = f"{api}/subjects/{{}}/unblind"
        if self.endpoint_of("POST", unblind.format("P1-001"))[0] is not None:
            for own, _partner in twins("allocated"):
                body = {
                    "reason_category": "serious_adverse_event",
                    "reason": "suspected anaphylaxis on the ward",
                    "password": "not the password",
                    "confirm": True,
                }
                post(
                    unblind.format(own.subject_number),
                    body,
                    "emergency unblinding, wrong password",
                    own,
                    api_json=True,
                )

    def _allowed(self, url: str, method: str) -> bool:
        endpoint, _ = self.endpoint_of(method, url)
        return endpoint is not None and (self.only is None or endpoint in self.only)


def _refused_by_role(response: TestResponse) -> bool:
    """A 403 of the route guard (the role lacks the route's permission), not of a service."""
    return response.status_code == 403 and b"your roles do not allow this" in response.get_data()


def _csrf(page: Fetched) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.response.get_data(as_text=True))
    assert match, f"no CSRF token on {page.url}"
    return match.group(1)


def _repeats(rule: Rule, args: dict[str, str], resolver: Resolver) -> bool:
    """POST routes are submitted once per principal and trial with the first real value of each
    other parameter (subject routes: for every subject, so that twins can be compared)."""
    names = sorted(rule.arguments)
    trial = args.get("trial")
    first = {n: trial if n == "trial" else resolver.values(rule, n, trial)[0] for n in names}
    return args != first


def _same_origin(href: str, current: str) -> str | None:
    """A path (with query) on this application, or None for another origin, a fragment, data:..."""
    if not href or href.startswith(("#", "data:", "mailto:", "javascript:", "tel:")):
        return None
    parts = urlsplit(href)
    if parts.netloc not in ("localhost", ""):
        return None
    path = parts.path or urlsplit(current).path
    if not path.startswith("/"):
        path = urlsplit(current).path.rsplit("/", 1)[0] + "/" + path
    return path + (f"?{parts.query}" if parts.query else "")
