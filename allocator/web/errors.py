"""One place that turns errors into responses: an HTML page or an RFC 9457 problem document.

A 500 shows a generic page with the request's reference number and never a stack trace, SQL or
key (ACC-13); the exception goes to the log under the same reference.
"""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from allocator.db import is_busy
from allocator.logs import log_event
from allocator.services.errors import DomainError
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


def _page(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> Response:
    html = render_template(
        "errors/error.html",
        status=status,
        title=title,
        detail=detail,
        errors=errors or [],
        reference=g.get("request_id", "-"),
    )
    return Response(html, status=status, mimetype="text/html")


def render_domain(error: DomainError) -> Response:
    """The response a domain error gets (for callers that store it, e.g. an idempotent request)."""
    return _domain(error)


def _domain(error: DomainError) -> Response:
    errors = [{"field": e.field, "message": e.message} for e in error.errors]
    if is_api_request():
        return problem(error.status, error.slug, error.title, error.detail, errors)
    return _page(error.status, error.title, error.detail, errors)


def _http(error: HTTPException) -> Response:
    status = error.code or 500
    slug = (error.name or "error").lower().replace(" ", "-")
    title = error.name or "Error"
    detail = error.description or title
    response = problem(status, slug, title, detail) if is_api_request() else _page(status, title, detail)
    allowed = getattr(error, "valid_methods", None)
    if status == 405 and allowed:
        response.headers["Allow"] = ", ".join(allowed)
    return response


def _csrf(error: CSRFError) -> Response:
    detail = "The form expired or was not sent from this site. Reload the page and try again."
    if is_api_request():
        return problem(400, "csrf", "Missing or invalid CSRF token", detail)
    return _page(400, "The form could not be accepted", detail)


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
    return _page(500, "Internal error", detail)


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
    app.register_error_handler(CSRFError, _csrf)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(sa_exc.DBAPIError, _database)
    app.register_error_handler(sa_exc.TimeoutError, _database)
    app.register_error_handler(Exception, _unexpected)
