"""Outgoing e-mail as hospital relays and attackers see it (issue 15, point 9): STARTTLS or implicit
TLS with a login whose password comes from a file and never reaches a log; one address per
account, never a list or a header break; the unusual-activity alert stays with the people who
may see its site; a relay failure part-way through a row does not write twice to anyone."""

from __future__ import annotations

import base64
import datetime
import logging
import socketserver
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from allocator.cli import main
from allocator.models import Notification
from allocator.permissions import Scope
from allocator.services import notifications, signatures, unblinding
from allocator.services.accounts import users
from allocator.services.context import ServiceContext
from allocator.services.errors import ValidationFailed
from allocator.services.subjects import randomize
from allocator.settings import Settings, SettingsError
from tests.conftest import FreshDatabase
from tests.support import ELIGIBLE, GOOD_PASSWORD, Clock, make_user, ready_trial

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SECRET = "relay-pass-7f3a9c"


# --- one address, nothing else ------------------------------------------------------------------

REFUSED = [
    "x,leak2@evil.test",  # a list: every message would also go to leak2
    "ph1@p1.example\n",  # a trailing newline ends the headers early
    "ph1@p1.example\r\nBcc: leak@evil.test",
    "Pharmacy <ph1@p1.example>",
    "ph1@p1.example; leak@evil.test",
    "ph1@p1",
    "ph1 @p1.example",
    "",
]


@pytest.mark.req("ACC-15")
@pytest.mark.parametrize("address", REFUSED)
def test_an_account_takes_one_plain_address_only(ctx: ServiceContext, address: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        make_user(ctx, "ph-refused", "pharmacist", site="P1", email=address)
    assert [p.field for p in refused.value.errors] == ["email"]
    assert users.single_address("pharmacie.p1@aphp.fr") == "pharmacie.p1@aphp.fr"


def test_create_user_refuses_a_list_of_addresses(fresh_database: FreshDatabase, tmp_path: Path) -> None:
    env = {
        "ALLOCATOR_DATABASE_URL": fresh_database.url,
        "ALLOCATOR_KEY_DIR": str(tmp_path / "keys"),
        "ALLOCATOR_ENV": "test",
    }
    runner = CliRunner()
    assert runner.invoke(main, ["init"], env=env).exit_code == 0
    result = runner.invoke(
        main, ["create-user", "mon1", "--role", "admin", "--email", "x,leak2@evil.test"], env=env
    )
    assert result.exit_code == 1 and "email" in result.output
    result = runner.invoke(
        main, ["create-user", "mon1", "--role", "admin", "--email", "mon@cro.example"], env=env
    )
    assert result.exit_code == 0, result.output


# --- the unusual-activity alert stays within its site ---------------------------------------------


@pytest.mark.req("BLD-10", "UNB-02")
def test_the_unblinding_alert_reaches_monitors_of_its_site_only(ctx: ServiceContext, clock: Clock) -> None:
    ready = ready_trial(ctx, kits_per_site=40)
    make_user(ctx, "mon-all", "monitor", email="all@cro.example")
    make_user(ctx, "mon-p1", "monitor", site="P1", email="p1@cro.example")
    make_user(ctx, "mon-p2", "monitor", site="P2", email="p2@cro.example")
    make_user(ctx, "tm-one", "trial_manager", email="tm@sponsor.example")
    for n in range(1, unblinding.ALERT_FROM_PER_HOUR + 1):
        request = randomize.RandomizationRequest(
            site="P1",
            screening_number=f"P1-{n:04d}",
            eligibility=dict(ELIGIBLE),
            strata={"admission_cause": "septic"},
        )
        number = randomize.randomize(ctx, ready.investigator, TRIAL, request, ALL).subject_number
        clock.advance(minutes=2)
        unblinding.emergency_unblind(
            ctx,
            ready.investigator,
            TRIAL,
            number,
            reason_category="serious_adverse_event",
            reason="Anaphylaxis after D2; the choice of treatment depends on the product.",
            confirmed=True,
            signature=signatures.SignatureRequest(password=GOOD_PASSWORD),
            scope=ALL,
        )
    with ctx.db.reading() as s:
        alerts = list(
            s.execute(select(Notification).where(Notification.kind == "unblinding_alert")).scalars()
        )
        assert len(alerts) == 2
        reached = {a.audience: notifications.recipients(s, a, ctx.now()) for a in alerts}
    assert reached == {
        "monitor": ["all@cro.example", "p1@cro.example"],
        "trial_manager": ["tm@sponsor.example"],
    }


# --- a failure part-way writes to nobody twice -----------------------------------------------------


class FlakyRelay:
    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.calls = 0
        self.delivered: list[str] = []

    def __call__(self, message: EmailMessage) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise ConnectionResetError("relay went away")
        self.delivered.append(str(message["To"]))


@pytest.mark.req("BLD-10", "ACC-15")
def test_a_relay_failure_part_way_does_not_write_twice_to_anyone(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx)
    for name in ("a", "b", "c"):
        make_user(ctx, f"ph1-{name}", "pharmacist", site="P1", email=f"{name}@p1.example")
    request = randomize.RandomizationRequest(
        site="P1",
        screening_number="P1-0001",
        eligibility=dict(ELIGIBLE),
        strata={"admission_cause": "septic"},
    )
    randomize.randomize(ctx, ready.investigator, TRIAL, request, ALL)
    relay = FlakyRelay(fail_at=2)
    assert notifications.send_pending(ctx, transport=relay).failed == 1
    with ctx.db.reading() as s:
        row = s.execute(select(Notification)).scalar_one()
    assert (
        row.emailed_at is None
        and row.email_to == "a@p1.example"
        and "relay went away" in (row.email_error or "")
    )
    assert notifications.send_pending(ctx, transport=relay).notifications == 1
    assert relay.delivered == ["a@p1.example", "b@p1.example", "c@p1.example"]  # each once
    with ctx.db.reading() as s:
        row = s.execute(select(Notification)).scalar_one()
    assert row.emailed_at is not None and row.email_to == "a@p1.example, b@p1.example, c@p1.example"


# --- TLS and a login -------------------------------------------------------------------------------


def certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "relay.pem", directory / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


class TlsRelay(socketserver.StreamRequestHandler):
    """Enough of SMTP for smtplib: EHLO advertising STARTTLS and AUTH PLAIN, the TLS upgrade (or
    TLS from the first byte), the login, MAIL, RCPT, DATA. Records what it saw."""

    tls_context: ssl.SSLContext
    implicit: bool
    seen: list[dict[str, object]]

    def setup(self) -> None:
        if self.implicit:
            self.request = self.tls_context.wrap_socket(self.request, server_side=True)
        super().setup()

    def handle(self) -> None:
        session: dict[str, object] = {"tls": self.implicit, "login": None, "rcpt": []}
        type(self).seen.append(session)
        self.wfile.write(b"220 relay ESMTP\r\n")
        while line := self.rfile.readline():
            words = line.decode().strip().split(" ")
            verb = words[0].upper()
            if verb == "EHLO":
                extensions = b"250-relay\r\n" + (
                    b"250 AUTH PLAIN\r\n" if session["tls"] else b"250 STARTTLS\r\n"
                )
                self.wfile.write(extensions)
            elif verb == "STARTTLS":
                self.wfile.write(b"220 go ahead\r\n")
                self.wfile.flush()
                self.request = self.tls_context.wrap_socket(self.request, server_side=True)
                self.rfile = self.request.makefile("rb")
                self.wfile = self.request.makefile("wb", buffering=0)
                session["tls"] = True
            elif verb == "AUTH":
                _, user, password = base64.b64decode(words[2]).split(b"\0")
                session["login"] = (user.decode(), password.decode())
                self.wfile.write(b"235 ok\r\n")
            elif verb == "RCPT":
                session["rcpt"].append(line.decode().split(":", 1)[1].strip())  # type: ignore[attr-defined]
                self.wfile.write(b"250 ok\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go\r\n")
                data = b""
                while (chunk := self.rfile.readline()) != b".\r\n":
                    data += chunk
                session["message"] = message_from_bytes(data)
                self.wfile.write(b"250 queued\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture(params=["starttls", "tls"])
def relay(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, int, Path, list[dict[str, object]]]]:
    cert_file, key_file = certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    seen: list[dict[str, object]] = []
    handler = type(
        "Handler", (TlsRelay,), {"tls_context": context, "implicit": request.param == "tls", "seen": seen}
    )
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield request.param, server.server_address[1], cert_file, seen
    server.shutdown()
    server.server_close()


def message() -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = (
        "allocator@hospital.example",
        "ph1@p1.example",
        "[IFNG-PAIS] test",
    )
    mail.set_content("body")
    return mail


@pytest.mark.req("BLD-10")
def test_mail_goes_over_tls_with_a_login_read_from_a_file(
    relay: tuple[str, int, Path, list[dict[str, object]]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    security, port, ca_file, seen = relay
    password_file = tmp_path / "smtp-password"
    password_file.write_text(SECRET + "\n")
    settings = replace(
        Settings(),
        smtp_host="localhost",
        smtp_port=port,
        smtp_security=security,
        smtp_user="allocator",
        smtp_password_file=password_file,
        smtp_ca_file=ca_file,
    )
    caplog.set_level(logging.DEBUG)
    notifications.smtp_transport(settings)(message())
    [session] = seen
    assert session["tls"] is True and session["login"] == ("allocator", SECRET)
    assert session["rcpt"] == ["<ph1@p1.example>"]
    assert SECRET not in caplog.text


@pytest.mark.req("BLD-10")
def test_a_relay_whose_certificate_is_not_trusted_gets_nothing(
    relay: tuple[str, int, Path, list[dict[str, object]]], tmp_path: Path
) -> None:
    security, port, _, seen = relay
    settings = replace(Settings(), smtp_host="localhost", smtp_port=port, smtp_security=security)
    with pytest.raises(ssl.SSLError):
        notifications.smtp_transport(settings)(message())
    assert all(session.get("login") is None and "message" not in session for session in seen)


def test_smtp_settings_are_checked() -> None:
    assert Settings.from_env({"ALLOCATOR_SMTP_SECURITY": "TLS"}).smtp_security == "tls"
    assert Settings.from_env({}).smtp_security == "starttls"
    with pytest.raises(SettingsError, match="ALLOCATOR_SMTP_SECURITY"):
        Settings.from_env({"ALLOCATOR_SMTP_SECURITY": "ssl3"})
