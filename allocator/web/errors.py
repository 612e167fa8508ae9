"""One place that turns errors into responses: an HTML page or an RFC 9457 problem document.

A 500 shows a generic page with the request's reference number and never a stack trace, SQL or
key (ACC-13); the exception goes to the log under the same reference.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flask import Flask, g, jsonify, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from allocator.db import is_busy
from allocator.logs import log_event
from allocator.services.errors import DomainError, ObservationalStudy
from allocator.trialdef import NotRandomized
from allocator.web import forms, messages
from allocator.web.security import is_api_request

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    extensions: dict[str, str] | None = None,
) -> Response:
    body: dict[str, object] = {
        "type": f"urn:allocator:problem:{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": g.get("request_id", "-"),
    }
    if errors:
        body["errors"] = errors
    body.update(extensions or {})  # RFC 9457 extension members
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    return response


def _page(status: int, title: str, detail: str, errors: Sequence[str] = ()) -> Response:
    """The error page, in the reader's language: the title by status, the detail in plain words
    (the API's problem documents keep the services' English)."""
    html = render_template(
        "errors/error.html",
        status=status,
        title=title,
        detail=detail,
        errors=list(errors),
        reference=g.get("request_id", "-"),
    )
    return Response(html, status=status, mimetype="text/html")


def render_domain(error: DomainError) -> Response:
    """The response a domain error gets (for callers that store it, e.g. an idempotent request)."""
    return _domain(error)


def _titles() -> dict[int, str]:
    return {
        400: _("The request cannot be processed"),
        401: _("Sign in first"),
        403: _("Not allowed"),
        404: _("Not found"),
        405: _("Not possible this way"),
        409: _("This conflicts with what is already recorded"),
        413: _("Too large"),
        422: _("Some answers need correcting"),
        429: _("Too many attempts"),
        500: _("Internal error"),
    }


def _http_details() -> dict[int, str]:
    return {
        403: _("Your roles do not allow this."),
        404: _("There is no such page. Check the address, or go back to the home page."),
        405: _("This page cannot be used this way. Go back and use its buttons."),
        413: _("What was sent is too large."),
    }


def _domain(error: DomainError) -> Response:
    errors = [{"field": e.field, "message": e.message} for e in error.errors]
    if is_api_request():
        return problem(error.status, error.slug, error.title, error.detail, errors)
    state = forms.shown(error)
    title = messages.title(error.title) or _titles().get(error.status, error.title)
    return _page(error.status, title, state.summary, [e.line for e in state.errors])


def observational(error: NotRandomized) -> ObservationalStudy:
    """The refusal shown when arms, lists, dispensing or unblinding are asked of an observational
    study (issue 20)."""
    return ObservationalStudy(f"{error.code} is an observational study: it has no arms, lists or drug kits")


def _not_randomized(error: NotRandomized) -> Response:
    """Issue 20: a page or call about arms, lists, dispensing or unblinding, asked of an
    observational study, is a clear refusal (409), never a server error."""
    return _domain(observational(error))


def _http(error: HTTPException) -> Response:
    status = error.code or 500
    slug = (error.name or "error").lower().replace(" ", "-")
    title = error.name or "Error"
    detail = error.description or title
    if is_api_request():
        response = problem(status, slug, title, detail)
    else:
        response = _page(status, _titles().get(status, title), _http_details().get(status, detail))
    allowed = getattr(error, "valid_methods", None)
    if status == 405 and allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


def _csrf(error: CSRFError) -> Response:
    detail = "The form expired or was not sent from this site. Reload the page and try again."
    if is_api_request():
        return problem(400, "csrf", "Missing or invalid CSRF token", detail)
    return _page(
        400,
        _("The form could not be accepted"),
        _("The form expired or was not sent from this site. Reload the page and try again."),
    )


def _unexpected(error: Exception) -> Response:
    log_event(
        "unhandled error",
        level=logging.ERROR,
        exc_info=True,
        request_id=g.get("request_id", "-"),
        endpoint=request.endpoint,
        method=request.method,
        exception=type(error).__name__,
    )
    detail = "Something went wrong on the server. Nothing was changed. Give this reference to support."
    if is_api_request():
        return problem(500, "internal-error", "Internal error", detail)
    return _page(
        500,
        _("Internal error"),  # the title
        _("Something went wrong on the server. Nothing was changed. Give this reference to support."),
    )


RETRY_AFTER_SECONDS = 2


def _database(error: Exception) -> Response:
    """Issue 14: a wait that ran out (lock or statement timeout, no pooled connection, SQLite busy)
    is a 503 with Retry-After; the unit of work has rolled back, so nothing was written. Any other
    database error is a bug: a 500."""
    if not is_busy(error):
        return _unexpected(error)
    log_event(
        "database busy",
        level=logging.WARNING,
        request_id=g.get("request_id", "-"),
        endpoint=request.endpoint,
        exception=type(error).__name__,
    )
    title = "The database is busy"
    detail = "The request waited too long for the database. Nothing was changed. Try again shortly."
    if is_api_request():
        response = problem(503, "database-busy", title, detail)
    else:
        response = _page(503, title, detail)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def install(app: Flask) -> None:
    app.register_error_handler(DomainError, _domain)
    app.register_error_handler(NotRandomized, _not_randomized)
    app.register_error_handler(CSRFError, _csrf)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(sa_exc.DBAPIError, _database)
    app.register_error_handler(sa_exc.TimeoutError, _database)
    app.register_error_handler(Exception, _unexpected)
