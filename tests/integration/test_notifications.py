"""E-mail delivery of the blinded notifications (BLD-10): who receives them, what they say, and that a
failure is recorded and retried, through a fake transport and through a real SMTP conversation."""

from __future__ import annotations

import re
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import replace
from email import message_from_bytes
from email.message import EmailMessage

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from allocator import crypto
from allocator.app import create_app
from allocator.cli import main
from allocator.models import Kit, Notification, RoleAssignment, User
from allocator.permissions import Scope
from allocator.services import notifications
from allocator.services.accounts import user_admin, users
from allocator.services.context import ServiceContext
from allocator.services.subjects import randomize as subjects_randomize
from kits import format_kit_number
from tests.support import CLI_ACTOR, ELIGIBLE, make_user, randomization, ready_trial

ALL = Scope(all_sites=True, site_ids=frozenset())
TRIAL = "IFNG-PAIS"


def arm_of_subject(ctx: ServiceContext, result: subjects_randomize.RandomizationResult) -> str:
    number = result.kits[0].kit_number
    with ctx.db.reading() as s:
        kit = s.execute(select(Kit).where(Kit.kit_number == number)).scalar_one()
    return crypto.open_arm(ctx.ring, kit.sealed_arm, crypto.Binding(TRIAL, "kit", number, "sealed_arm"))


class Outbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.fail = False

    def __call__(self, message: EmailMessage) -> None:
        if self.fail:
            raise ConnectionRefusedError("relay down")
        self.messages.append(message)


def people(ctx: ServiceContext) -> None:
    """Pharmacists of P1 (two, one deactivated later), of P2, one without an address, a monitor."""
    make_user(ctx, "ph1-mail", "pharmacist", site="P1", email="ph1@p1.example")
    make_user(ctx, "ph1-other", "pharmacist", site="P1", email="other@p1.example")
    make_user(ctx, "ph2-mail", "pharmacist", site="P2", email="ph2@p2.example")
    make_user(ctx, "ph1-nomail", "pharmacist", site="P1")
    make_user(ctx, "mon-mail", "monitor", email="monitor@cro.example")


@pytest.mark.req("BLD-10")
def test_a_dispensation_request_is_mailed_to_the_sites_pharmacists_only(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx)
    people(ctx)
    user_admin.set_active(ctx, CLI_ACTOR, "ph1-other", False, "left the unit")
    result = randomization(ctx, ready.investigator, "P1-0001")
    outbox = Outbox()

    report = notifications.send_pending(ctx, transport=outbox)
    assert report == notifications.MailReport(sent=1, notifications=1, failed=0)
    [message] = outbox.messages
    assert message["To"] == "ph1@p1.example" and message["From"] == ctx.settings.mail_from
    assert message["Subject"] == f"[{TRIAL}] Dispensation request for {result.subject_number}"
    body = message.get_content()
    # The kit numbers as printed on their labels, with the dash (issue 13 point 9).
    assert result.subject_number in body and all(format_kit_number(k.kit_number) in body for k in result.kits)
    with ctx.db.reading() as s:
        row = s.execute(select(Notification)).scalar_one()
    assert (row.email_to, row.emailed_at, row.email_error) == ("ph1@p1.example", ctx.now(), None)

    # Sent once: a second run has nothing to do.
    assert notifications.send_pending(ctx, transport=outbox) == notifications.MailReport(0, 0, 0)
    assert len(outbox.messages) == 1


@pytest.mark.req("BLD-10")
def test_each_recipient_reads_the_mail_in_the_language_of_their_account(ctx: ServiceContext) -> None:
    """Issue 13: the e-mail speaks the language the recipient chose (English when none)."""
    ready = ready_trial(ctx)
    french = make_user(ctx, "ph1-mail", "pharmacist", site="P1", email="ph1@p1.example")
    make_user(ctx, "ph1-other", "pharmacist", site="P1", email="other@p1.example")
    users.set_language(ctx, CLI_ACTOR, french.user_id, "fr")
    result = randomization(ctx, ready.investigator, "P1-0001")
    outbox = Outbox()
    notifications.send_pending(ctx, transport=outbox)
    by_address = {m["To"]: m for m in outbox.messages}
    fr, en = by_address["ph1@p1.example"], by_address["other@p1.example"]
    number = result.subject_number
    assert fr["Subject"] == f"[{TRIAL}] Demande de dispensation pour {number}"
    assert en["Subject"] == f"[{TRIAL}] Dispensation request for {number}"
    fr_body, en_body = fr.get_content(), en.get_content()
    assert f"Le patient {number} (numéro de randomisation" in fr_body and "Kits à dispenser : D1 " in fr_body
    assert "Ce message n'indique jamais une allocation de traitement." in fr_body
    assert f"Subject {number} (randomization number" in en_body and "never states a treatment" in en_body
    assert all(format_kit_number(k.kit_number) in fr_body for k in result.kits)


@pytest.mark.req("BLD-10", "BLD-11")
def test_recipients_are_those_holding_the_role_when_the_mail_is_sent(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx)
    people(ctx)
    randomization(ctx, ready.investigator, "P1-0001")
    with ctx.db.reading() as s:
        notification = s.execute(select(Notification)).scalar_one()
        assert notifications.recipients(s, notification, ctx.now()) == ["other@p1.example", "ph1@p1.example"]
        [assignment_id] = s.execute(
            select(RoleAssignment.id)
            .join(User, User.id == RoleAssignment.user_id)
            .where(User.username == "ph1-mail")
        ).scalars()
    # One P1 pharmacist loses the role before the outbox runs: only the other is written to.
    users.revoke_role(ctx, CLI_ACTOR, assignment_id, "moved to another hospital")
    outbox = Outbox()
    notifications.send_pending(ctx, transport=outbox)
    assert [m["To"] for m in outbox.messages] == ["other@p1.example"]


@pytest.mark.req("BLD-10", "ACC-15")
def test_a_failed_delivery_is_recorded_and_tried_again(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx)
    people(ctx)
    randomization(ctx, ready.investigator, "P1-0001")
    outbox = Outbox()
    outbox.fail = True
    assert notifications.send_pending(ctx, transport=outbox) == notifications.MailReport(0, 0, 1)
    with ctx.db.reading() as s:
        row = s.execute(select(Notification)).scalar_one()
    assert row.emailed_at is None and row.email_to is None
    assert row.email_error is not None and "ConnectionRefusedError: relay down" in row.email_error

    outbox.fail = False
    assert notifications.send_pending(ctx, transport=outbox).notifications == 1
    with ctx.db.reading() as s:
        row = s.execute(select(Notification)).scalar_one()
    assert row.emailed_at is not None and row.email_error is None and len(outbox.messages) == 2


@pytest.mark.req("BLD-10")
def test_a_notification_nobody_can_receive_is_closed_with_a_reason(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx)
    randomization(ctx, ready.investigator, "P1-0001")  # pharm-p1 has no e-mail address
    outbox = Outbox()
    assert notifications.send_pending(ctx, transport=outbox) == notifications.MailReport(0, 1, 0)
    with ctx.db.reading() as s:
        row = s.execute(select(Notification)).scalar_one()
    assert row.email_to == "" and row.email_error == "nobody holding this role has an e-mail address"


@pytest.mark.req("BLD-01", "BLD-02", "BLD-10")
def test_mails_for_subjects_of_either_arm_are_identical_but_for_their_identifiers(
    ctx: ServiceContext,
) -> None:
    ready = ready_trial(ctx, kits_per_site=48)
    make_user(ctx, "ph1-mail", "pharmacist", site="P1", email="ph1@p1.example")
    by_arm: dict[str, subjects_randomize.RandomizationResult] = {}
    n = 0
    while len(by_arm) < 2:
        n += 1
        result = randomization(ctx, ready.investigator, f"P1-{n:04d}")
        by_arm.setdefault(arm_of_subject(ctx, result), result)
    outbox = Outbox()
    notifications.send_pending(ctx, transport=outbox)
    mails = {m["Subject"].split()[-1]: m for m in outbox.messages}

    def masked(result: subjects_randomize.RandomizationResult) -> tuple[str, list[tuple[str, str]]]:
        mail = mails[result.subject_number]
        text = mail.as_string()
        for value in (
            result.subject_number,
            result.randomization_number,
            *(format_kit_number(k.kit_number) for k in result.kits),
        ):
            text = text.replace(value, "<id>")
        text = re.sub(r"Message-ID: <[^>]+>", "Message-ID: <id>", text)
        return text, [(k, v if k != "Message-ID" else "<id>") for k, v in mail.items()]

    a, b = (masked(by_arm[arm]) for arm in ("A", "B"))
    assert a[0] == b[0] and len(a[0]) == len(b[0])
    assert [k for k, _ in a[1]] == [k for k, _ in b[1]]
    for words in ("placebo", "interferon", "imukin", "arm"):
        assert words not in a[0].lower()


# --- a real SMTP conversation -------------------------------------------------------------------


class _Smtp(socketserver.StreamRequestHandler):
    """Just enough of RFC 5321 for smtplib.send_message: greeting, EHLO, MAIL, RCPT, DATA, QUIT."""

    received: list[tuple[str, list[str], bytes]]

    def handle(self) -> None:
        self.wfile.write(b"220 test ESMTP\r\n")
        sender, rcpts = "", []
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                self.wfile.write(b"250 test\r\n")
            elif verb == "MAIL":
                sender = line.decode().split(":", 1)[1].strip()
                self.wfile.write(b"250 ok\r\n")
            elif verb == "RCPT":
                rcpts.append(line.decode().split(":", 1)[1].strip())
                self.wfile.write(b"250 ok\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go\r\n")
                data = b""
                while (chunk := self.rfile.readline()) != b".\r\n":
                    data += chunk
                type(self).received.append((sender, rcpts, data))
                self.wfile.write(b"250 queued\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def relay() -> Iterator[tuple[int, list[tuple[str, list[str], bytes]]]]:
    received: list[tuple[str, list[str], bytes]] = []
    handler = type("Handler", (_Smtp,), {"received": received})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


@pytest.mark.req("BLD-10")
def test_the_outbox_delivers_through_smtp_in_the_background(
    ctx: ServiceContext, relay: tuple[int, list[tuple[str, list[str], bytes]]]
) -> None:
    port, received = relay
    mailing = replace(
        ctx, settings=replace(ctx.settings, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none")
    )
    ready = ready_trial(mailing)
    make_user(mailing, "ph1-mail", "pharmacist", site="P1", email="ph1@p1.example")
    result = randomization(mailing, ready.investigator, "P1-0001")
    outbox = notifications.Outbox(mailing)
    outbox.wake()
    outbox.join(timeout=30)
    [(sender, rcpts, data)] = received
    assert sender == f"<{mailing.settings.mail_from}>" and rcpts == ["<ph1@p1.example>"]
    parsed = message_from_bytes(data)
    assert parsed["Subject"] == f"[{TRIAL}] Dispensation request for {result.subject_number}"


@pytest.mark.req("BLD-10")
def test_send_mail_refuses_without_a_relay() -> None:
    result = CliRunner().invoke(main, ["send-mail"], env={"ALLOCATOR_SMTP_HOST": ""})
    assert result.exit_code == 1 and "ALLOCATOR_SMTP_HOST" in result.output + result.stderr


@pytest.mark.req("BLD-10")
def test_the_web_application_mails_after_a_randomization_when_smtp_is_configured(
    ctx: ServiceContext, relay: tuple[int, list[tuple[str, list[str], bytes]]]
) -> None:
    port, received = relay
    settings = replace(ctx.settings, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none")
    app = create_app(settings, db=ctx.db, ring=ctx.ring, clock=ctx.clock, passwords=ctx.passwords)
    mailing = app.extensions["allocator"]
    ready_trial(mailing)
    make_user(mailing, "ph1-mail", "pharmacist", site="P1", email="ph1@p1.example")
    token = users.create_token(mailing, CLI_ACTOR, "inv-p1", "edc").token
    response = app.test_client().post(
        f"/api/v1/trials/{TRIAL}/subjects",
        json={
            "site": "P1",
            "screening_number": "P1-0001",
            "eligibility": ELIGIBLE,
            "strata": {"admission_cause": "septic"},
        },
        headers={"Authorization": f"Bearer {token}"},
        base_url="https://localhost",
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    app.extensions["allocator.outbox"].join(timeout=30)
    [(_sender, rcpts, _data)] = received
    assert rcpts == ["<ph1@p1.example>"]
    # Without a relay configured there is no outbox at all.
    assert (
        "allocator.outbox"
        not in create_app(
            ctx.settings, db=ctx.db, ring=ctx.ring, clock=ctx.clock, passwords=ctx.passwords
        ).extensions
    )
