"""E-mail delivery of the blinded notifications (BLD-10).

A notification row is written in the same transaction as the event it reports (randomization,
emergency unblinding...), so it is the outbox: a rolled-back event never sends a message and a crash
never loses one. `send_pending` delivers the rows not yet e-mailed to the people who hold the
notification's role at its site when it is sent, one message per recipient (so colleagues' addresses
are not disclosed), and records who it went to, when, or why it failed. A failed row is tried again at
the next run. The message is the notification's title and body, which never carry an arm.

`allocator send-mail` runs it once (for a cron job or a systemd timer); when SMTP is configured the
web application also starts it in the background after each successful change (`Outbox.wake`).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid

from sqlalchemy import select
from sqlalchemy.orm import Session

from allocator import notices
from allocator.models import Notification, RoleAssignment, RoleRevocation, Trial, User
from allocator.services.context import ServiceContext
from allocator.services.errors import Conflict
from allocator.settings import Settings

log = logging.getLogger(__name__)

# Rows older than this are no longer tried (an e-mail days late is noise); they stay unsent, visible.
GIVE_UP_AFTER = timedelta(days=3)

Transport = Callable[[EmailMessage], None]


def smtp_transport(settings: Settings) -> Transport:
    """Send through the configured SMTP relay: STARTTLS (the default) or implicit TLS with the
    relay's certificate checked, or plain SMTP for a relay on the same host; a login when
    `ALLOCATOR_SMTP_USER` is set, with the password read from its file at each connection."""
    host = settings.smtp_host
    if host is None:
        raise Conflict("no SMTP relay is configured (ALLOCATOR_SMTP_HOST)")
    if settings.smtp_user and settings.smtp_password_file is None:
        raise Conflict("ALLOCATOR_SMTP_USER is set but ALLOCATOR_SMTP_PASSWORD_FILE is not")
    context = None
    if settings.smtp_security != "none":
        context = ssl.create_default_context(
            cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None
        )

    def send(message: EmailMessage) -> None:
        smtp: smtplib.SMTP
        if settings.smtp_security == "tls":
            smtp = smtplib.SMTP_SSL(host, settings.smtp_port, timeout=20, context=context)
        else:
            smtp = smtplib.SMTP(host, settings.smtp_port, timeout=20)
        with smtp:
            if settings.smtp_security == "starttls":
                smtp.starttls(context=context)
            if settings.smtp_user and settings.smtp_password_file is not None:
                password = settings.smtp_password_file.read_text(encoding="utf-8").strip()
                smtp.login(settings.smtp_user, password)
            smtp.send_message(message)

    return send


@dataclass(frozen=True, slots=True)
class MailReport:
    sent: int  # messages handed to the relay
    notifications: int  # notifications completed (including those nobody could receive)
    failed: int  # notifications left for the next run


def recipients(session: Session, notification: Notification, now: datetime) -> list[str]:
    """The addresses of the active accounts holding the notification's role, in force now, for its
    trial and (for a site notification) its site or every site."""
    rows = session.execute(
        select(User.email, RoleAssignment.site_id)
        .join(RoleAssignment, RoleAssignment.user_id == User.id)
        .outerjoin(RoleRevocation, RoleRevocation.assignment_id == RoleAssignment.id)
        .where(
            User.is_active.is_(True),
            User.email.is_not(None),
            RoleAssignment.role == notification.audience,
            RoleAssignment.trial_id == notification.trial_id,
            RoleRevocation.id.is_(None),
            RoleAssignment.starts_at <= now,
            (RoleAssignment.ends_at.is_(None)) | (RoleAssignment.ends_at > now),
        )
    ).all()
    wanted = {
        email
        for email, site_id in rows
        if email and (notification.site_id is None or site_id in (None, notification.site_id))
    }
    return sorted(wanted)


def languages(session: Session, addresses: list[str]) -> dict[str, str | None]:
    """The language each address's account chose ("fr", "en"; None: never chose, English)."""
    if not addresses:
        return {}
    rows = session.execute(
        select(User.email, User.language).where(User.email.in_(addresses), User.is_active.is_(True))
    ).all()
    chosen: dict[str, str | None] = {}
    for email, language in rows:
        if email is not None:
            chosen[email] = chosen.get(email) or language
    return chosen


def message_for(
    settings: Settings, trial_code: str, notification: Notification, to: str, language: str | None = None
) -> EmailMessage:
    """The e-mail of `notification` to `to`, in the recipient's language (issue 13)."""
    gettext = notices.catalogue_gettext(language)
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = f"[{trial_code}] {notices.translate(notification.title, gettext)}"
    message["Message-ID"] = make_msgid(domain=settings.mail_from.rpartition("@")[2] or "localhost")
    footer = gettext(notices.MAIL_FOOTER) % {
        "trial": trial_code,
        "when": f"{notification.created_at:%Y-%m-%d %H:%M}",
    }
    message.set_content(f"{notices.translate(notification.body, gettext)}\n\n{footer}\n")
    return message


def send_pending(ctx: ServiceContext, *, transport: Transport | None = None, limit: int = 200) -> MailReport:
    """Deliver up to `limit` notifications not yet e-mailed. Each notification is its own unit of
    work, locked while it is sent, so two senders never deliver the same one."""
    send = transport or smtp_transport(ctx.settings)
    now = ctx.now()
    with ctx.db.reading() as session:
        pending = list(
            session.execute(
                select(Notification.id)
                .where(Notification.emailed_at.is_(None), Notification.created_at >= now - GIVE_UP_AFTER)
                .order_by(Notification.id)
                .limit(limit)
            ).scalars()
        )
    sent = done = failed = 0
    for notification_id in pending:
        with ctx.db.unit_of_work() as session:
            row = session.execute(
                select(Notification)
                .where(Notification.id == notification_id, Notification.emailed_at.is_(None))
                .with_for_update(skip_locked=True)
            ).scalar_one_or_none()
            if row is None:  # another sender has it
                continue
            trial_code = session.execute(select(Trial.code).where(Trial.id == row.trial_id)).scalar_one()
            to = recipients(session, row, now)
            language = languages(session, to)
            # Recipients already written to by an earlier, interrupted run are not written to again.
            delivered = [a for a in (row.email_to or "").split(", ") if a]
            try:
                for address in to:
                    if address not in delivered:
                        send(message_for(ctx.settings, trial_code, row, address, language.get(address)))
                        delivered.append(address)
                        sent += 1
            except (OSError, smtplib.SMTPException) as exc:
                failed += 1
                row.email_to = ", ".join(delivered) or None
                row.email_error = f"{ctx.now():%Y-%m-%d %H:%M:%S} UTC: {type(exc).__name__}: {exc}"[:1000]
                log.warning("notification %s: e-mail failed (%s)", row.id, type(exc).__name__)
                continue
            done += 1
            row.email_to = ", ".join(delivered)
            row.emailed_at = ctx.now()
            row.email_error = None if to else "nobody holding this role has an e-mail address"
    return MailReport(sent=sent, notifications=done, failed=failed)


class Outbox:
    """Runs `send_pending` in one background thread at a time, when woken after a change."""

    def __init__(self, ctx: ServiceContext, transport: Transport | None = None) -> None:
        self._ctx = ctx
        self._transport = transport
        self._lock = threading.Lock()
        self._again = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        with self._lock:
            self._again.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="allocator-outbox", daemon=True)
                self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._again.is_set():
                    self._thread = None
                    return
                self._again.clear()
            try:
                send_pending(self._ctx, transport=self._transport)
            except Exception:  # the web request already succeeded; the next wake retries
                log.exception("the e-mail outbox failed")
