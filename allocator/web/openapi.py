"""The OpenAPI 3.1 document of /api/v1. A test checks that it lists exactly the API's routes."""

from __future__ import annotations

from typing import Any

from allocator.version import __version__

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _PROBLEM}}}


_COMMON_ERRORS = {
    "401": _problem_response("No valid bearer token or session"),
    "403": _problem_response("The user's roles do not allow this (audited)"),
    "404": _problem_response("Unknown trial or object, or outside the user's sites"),
}

_TRIAL = {
    "name": "trial",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Z0-9-]+$"},
    "description": "Trial code, e.g. IFNG-PAIS",
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "allocator API",
            "version": __version__,
            "description": (
                "Randomization and blinded drug allocation. Every response is blinded for blinded roles: "
                "no arm, no list position, no block size. Errors are RFC 9457 problem documents whose "
                "`type` is `urn:allocator:problem:<slug>`."
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "getOpenApi",
                    "responses": {
                        "200": {"description": "The OpenAPI document"},
                        "401": _COMMON_ERRORS["401"],
                    },
                }
            },
            "/trials/{trial}": {
                "get": {
                    "summary": "Blinded trial summary",
                    "operationId": "getTrial",
                    "parameters": [_TRIAL],
                    "responses": {
                        "200": {
                            "description": "The trial summary (never an arm)",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/TrialSummary"}}
                            },
                        },
                        **_COMMON_ERRORS,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `allocator create-token USERNAME`; it acts with the user's roles.",
                }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string", "format": "uri"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string", "description": "The request's reference number"},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["field", "message"],
                                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                            },
                        },
                    },
                },
                "TrialSummary": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["code", "title", "status", "sites", "subjects", "mode"],
                    "properties": {
                        "code": {"type": "string"},
                        "title": {"type": "string"},
                        "short_title": {"type": "string"},
                        "status": {"type": "string", "enum": ["setup", "active", "locked", "unblinded"]},
                        "eu_ct_number": {"type": "string"},
                        "nct_number": {"type": "string"},
                        "sponsor_protocol_code": {"type": "string"},
                        "sponsor": {"type": "string"},
                        "phase": {"type": "string"},
                        "target_sample_size": {"type": "integer"},
                        "definition_version": {"type": "integer"},
                        "mode": {"type": "string", "enum": ["test", "production"]},
                        "subjects": {
                            "type": "integer",
                            "description": "Randomized subjects in the visible sites",
                        },
                        "sites": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "code": {"type": "string"},
                                    "name": {"type": "string"},
                                    "city": {"type": "string"},
                                    "principal_investigator": {"type": "string"},
                                    "status": {"type": "string", "enum": ["pending", "active", "closed"]},
                                    "subjects": {"type": "integer"},
                                },
                            },
                        },
                        "unconfirmed": {
                            "type": "array",
                            "description": "Fields of the definition still to be confirmed against the protocol",
                            "items": {
                                "type": "object",
                                "properties": {"field": {"type": "string"}, "note": {"type": "string"}},
                            },
                        },
                    },
                },
            },
        },
    }
