"""Two interface languages, French and English, chosen per person (issue 13).

The language of a page is, in order: the one stored on the signed-in user's account, the one chosen
with the switch before signing in (kept in the session cookie), the browser's `Accept-Language`,
English. Dates and times are shown in the site's time zone first (the trial's, Europe/Paris when the
page belongs to no trial), with UTC beside them where the record needs it; numbers in the page's
language. The catalogues are in `allocator/translations/` (see README, "Languages").
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_time
from babel.numbers import format_decimal
from flask import Blueprint, Flask, current_app, g, redirect, request, session, url_for
from flask_babel import Babel, get_locale, gettext
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from allocator import notices, wording
from allocator.permissions import Permission, Role, public
from allocator.services import auth as auth_service
from allocator.services import signatures
from allocator.services.accounts import users
from allocator.services.accounts.users import LANGUAGES
from allocator.services.lookups import trial_definition
from allocator.trialdef import Text
from allocator.web import audit_words, forms, messages
from allocator.web.security import SESSION_KEY, actor, ctx, safe_path

TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"
LANGUAGE_KEY = "lang"  # the session cookie's record of a choice made before signing in
DEFAULT_LANGUAGE = "en"
DEFAULT_ZONE = "Europe/Paris"  # the trials' sites are in France; a trial's own zone wins on its pages
NAMES = {"fr": "Français", "en": "English"}

bp = Blueprint("language", __name__)


def select_locale() -> str:
    auth = g.get("auth")
    if auth is not None and auth.language in LANGUAGES:
        return str(auth.language)
    chosen = session.get(LANGUAGE_KEY)
    if chosen in LANGUAGES:
        return str(chosen)
    return request.accept_languages.best_match(LANGUAGES, default=DEFAULT_LANGUAGE) or DEFAULT_LANGUAGE


def site_zone() -> str:
    """The time zone of the page: the trial's when the page belongs to one, else the default."""
    zone: str | None = g.get("site_zone")
    if zone is None:
        trial = g.get("trial")
        zone = trial_definition(ctx(), trial.code).timezone if trial is not None else DEFAULT_ZONE
        g.site_zone = zone
    return zone


def language() -> str:
    """The language of the current page ("fr" or "en")."""
    locale = get_locale()
    return locale.language if locale is not None else DEFAULT_LANGUAGE


def words() -> wording.Words:
    """The page's language as a value for the services that build text (reports and their files)."""
    return wording.Words.of(language())


def _locale() -> Locale:
    return get_locale() or Locale.parse(DEFAULT_LANGUAGE)


def when(value: datetime | None, zone: str | None = None, *, with_utc: bool = True) -> str:
    """A moment in the site's time zone and the page's language, UTC beside it:
    `5 déc. 2026, 13:09 (12:09 UTC)`. Naive values are UTC (how the database stores them)."""
    if value is None:
        return ""
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    local = moment.astimezone(ZoneInfo(zone or site_zone()))
    text = _date_and_time(local, "yMMMd")
    if not with_utc:
        return text
    universal = moment.astimezone(UTC)
    shown = format_time(universal, "HH:mm", tzinfo=UTC, locale=_locale())
    if universal.date() != local.date():
        shown = _date_and_time(universal, "MMMd")
    return f"{text} ({shown} UTC)"


def _date_and_time(moment: datetime, date_skeleton: str) -> str:
    return wording.date_and_time(moment, date_skeleton, _locale())


def day(value: date | None) -> str:
    """A calendar date in the page's language: `5 déc. 2026` / `Dec 5, 2026`."""
    return "" if value is None else format_date(value, "medium", locale=_locale())


def number(value: int | float | Decimal | None) -> str:
    """A number in the page's language: `4 200,5` / `4,200.5`."""
    return "" if value is None else format_decimal(value, locale=_locale())


_SPACES = re.compile(r"[\s\u00a0\u202f\u2009']")
_PLAIN = re.compile(r"^[+-]?\d+(\.\d+)?$")


def plain_number(raw: str) -> str:
    """A number as typed by a French or English user, in the plain form the services parse:
    "4 200" -> "4200", "2,5" -> "2.5", "4 200,5" -> "4200.5", "4,200.5" -> "4200.5".
    Anything that is not a number comes back unchanged, for the service to name the field."""
    text = _SPACES.sub("", raw.strip())
    if "," in text and "." in text:
        # The last separator is the decimal one; the other groups thousands.
        decimal_mark = "," if text.rfind(",") > text.rfind(".") else "."
        text = text.replace("." if decimal_mark == "," else ",", "").replace(",", ".")
    elif text.count(",") == 1:
        text = text.replace(",", ".")
    return text if _PLAIN.match(text) else raw.strip()


def tr(text: Text) -> str:
    """A text of the trial definition (English and French) in the page's language."""
    return text.fr if language() == "fr" else text.en


def role_name(code: str) -> str:
    """A role's title in the page's language (the titles are in web/messages.py's catalogue list)."""
    try:
        return gettext(Role(code).display_name)
    except ValueError:
        return code


def signed(manifestation: signatures.Manifestation) -> str:
    """An electronic signature's manifestation in the page's language (ACC-12): who, when (UTC, as
    signed), what it means."""
    return gettext(
        "Signed electronically by %(name)s (%(username)s) on %(when)s, meaning: %(meaning)s "
        "[signature #%(number)s]",
        name=manifestation.printed_name,
        username=manifestation.username,
        when=manifestation.signed_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        meaning=gettext(manifestation.meaning),
        number=manifestation.signature_id,
    )


def _back_to() -> str:
    """Where the language switch returns: this page when it can be fetched again, else home."""
    if request.method == "GET":
        return request.full_path.rstrip("?")
    try:
        current_app.url_map.bind("localhost").match(request.path, method="GET")
    except HTTPException:
        return url_for("main.home")
    return request.path


@bp.route("/language", methods=["POST"])
@public
def choose() -> Response:
    """Switch the interface language: kept in the session, and on the account when signed in.
    Public, so that the sign-in page can be read in French before anyone signs in."""
    chosen = request.form.get("language", "")
    if chosen in LANGUAGES:
        session[LANGUAGE_KEY] = chosen
        token = session.get(SESSION_KEY)
        auth = auth_service.resolve_session(ctx(), token) if isinstance(token, str) else None
        if auth is not None and not auth.mfa_pending:
            g.auth = auth
            users.set_language(ctx(), actor(Permission.ACCOUNT_SELF), auth.user_id, chosen)
    return redirect(safe_path(request.form.get("next"), url_for("main.home")), code=303)


def install(app: Flask) -> None:
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    app.config["BABEL_DEFAULT_LOCALE"] = DEFAULT_LANGUAGE
    app.config["BABEL_DEFAULT_TIMEZONE"] = DEFAULT_ZONE
    Babel(app, locale_selector=select_locale, timezone_selector=site_zone)  # type: ignore[no-untyped-call]
    app.register_blueprint(bp)
    app.add_template_filter(when, "when")
    app.add_template_filter(day, "day")
    app.add_template_filter(number, "number")
    app.add_template_filter(role_name, "role_name")
    app.add_template_filter(tr, "tr")
    app.add_template_filter(forms.plain, "plain")
    app.add_template_filter(messages.word, "status_name")
    app.add_template_filter(messages.word, "choice_label")
    app.add_template_filter(audit_words.action_label, "action_label")
    app.add_template_filter(lambda text: notices.translate(text, gettext), "notice")
    # A reason in the audit trail: one the service wrote itself in the reader's language, one a
    # person typed as typed.
    app.add_template_filter(lambda text: messages.translate(text, {}) or text, "reason")
    app.add_template_filter(audit_words.key_label, "key_label")
    app.add_template_filter(audit_words.detail_lines, "detail_lines")
    app.add_template_filter(audit_words.looks_like_code, "looks_like_code")
    app.add_template_filter(audit_words.code_marked, "code_marked")
    app.add_template_filter(signed, "signed")

    @app.context_processor
    def _language() -> dict[str, object]:
        return {"lang": language(), "language_names": NAMES, "languages": LANGUAGES, "back_to": _back_to}
