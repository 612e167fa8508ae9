"""The OpenAPI 3.1 document of /api/v1. A test checks that it lists exactly the API's routes."""

from __future__ import annotations

from typing import Any

from allocator.audit import Action
from allocator.services import periods, signatures
from allocator.services.audit_trail import MAX_FILTER_TEXT
from allocator.services.subjects.withdrawal import WITHDRAWAL_KINDS
from allocator.services.unblinding import EMERGENCY_REASONS
from allocator.version import __version__

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _PROBLEM}}}


_COMMON_ERRORS = {
    "401": _problem_response("No valid bearer token or session"),
    "403": _problem_response("The user's roles do not allow this (audited)"),
    "404": _problem_response("Unknown trial or object, or outside the user's sites"),
    "414": _problem_response("The path and query exceed 4096 bytes"),
    "503": {
        **_problem_response("database-busy: a lock or statement timed out; nothing was changed, retry later"),
        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    },
}
_BODY_ERRORS = {
    "413": _problem_response("The body exceeds 64 KiB"),
}

_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
    "description": "The same key, user and body get the original answer again (Idempotent-Replayed: "
    "true) without doing anything twice; the same key with another body is a 422",
}

# What an identifier (a subject number, a document id) may hold: no control character, surrogate,
# slash or non-character (allocator/web/hygiene.py answers 404 for those).
_IDENTIFIER = "^[^\\x00-\\x1f\\x7f-\\x9f/]+$"
_TEXT = {"type": "string", "minLength": 1}
_NOT_BLANK = "\\S"  # white space alone is refused as missing
# A query value holds no control character (tab, line feed and carriage return aside) and no
# non-character (allocator/web/hygiene.py answers 422 naming the parameter).
_QUERY_TEXT = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\ufdd0-\\ufdef\\ufffe\\uffff]*$"


def _audit_text(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "schema": {"type": "string", "maxLength": MAX_FILTER_TEXT, "pattern": _QUERY_TEXT},
        "description": f"{description}; exact match, at most {MAX_FILTER_TEXT} characters",
    }


def _audit_date(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "schema": {"type": "string", "format": "date", "pattern": periods.DATE_PATTERN},
        "description": f"{description} (YYYY-MM-DD, years {periods.FIRST_YEAR} to {periods.LAST_YEAR})",
    }


_TIME = {"type": "string", "format": "date-time"}

_SUBJECT = {
    "name": "subject",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": _IDENTIFIER},
    "description": "Subject number, e.g. P1-001",
}
_TRIAL = {
    "name": "trial",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Z0-9-]+$"},
    "description": "Trial code, e.g. IFNG-PAIS",
}


def _printed_document(
    collection: str, prefix: str, *, operation: str, what: str, conflict: str
) -> dict[str, Any]:
    """A printed document's two paths: POST prints (an action, recorded and audited), GET serves
    the printed bytes and creates nothing (issue 15 point 5, and the confirmation since)."""
    base = f"/trials/{{trial}}/subjects/{{subject}}/{collection}"
    return {
        base: {
            "post": {
                "summary": f"Print {what}",
                "description": (
                    "Printing is an action: each call records a printed document and an audit entry; "
                    "a reprint is marked DUPLICATA and counted (at most 999 reprints: the next is a "
                    "409 reprint-limit problem and prints nothing). Download the printed document from "
                    "the Location of the answer."
                ),
                "operationId": f"print{operation}",
                "parameters": [_TRIAL, _SUBJECT],
                "responses": {
                    "201": {
                        "description": "The printed document's id and where to download it",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["document_id", "href"],
                                    "properties": {
                                        "document_id": {
                                            "type": "string",
                                            "pattern": f"^{prefix}-[A-Z0-9-]+-[0-9]+$",
                                        },
                                        "href": {"type": "string", "pattern": "^/api/v1/trials/.+\\.pdf$"},
                                    },
                                }
                            }
                        },
                    },
                    "409": _problem_response(conflict),
                    **_COMMON_ERRORS,
                },
            }
        },
        f"{base}/{{document}}.pdf": {
            "get": {
                "summary": f"{what[0].upper()}{what[1:]}, exactly as printed (creates nothing)",
                "operationId": f"get{operation}",
                "parameters": [
                    _TRIAL,
                    _SUBJECT,
                    {
                        "name": "document",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 100,
                            "pattern": _IDENTIFIER,
                        },
                        "description": f"Printed document id, e.g. {prefix}-IFNG-PAIS-000003",
                    },
                ],
                "responses": {
                    "200": {"description": "PDF", "content": {"application/pdf": {}}},
                    **_COMMON_ERRORS,
                },
            }
        },
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
                        "200": {
                            "description": "The OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
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
            "/trials/{trial}/audit": {
                "get": {
                    "summary": "Blinded audit entries in sequence order (monitors, auditors)",
                    "operationId": "listAuditEntries",
                    "parameters": [
                        _TRIAL,
                        {
                            "name": "after",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                            "description": "Return entries with a sequence number above this one "
                            "(ASCII digits, given once)",
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        },
                        _audit_text("user", "The actor's user name"),
                        {
                            "name": "action",
                            "in": "query",
                            "schema": {"type": "string", "enum": sorted(a.value for a in Action)},
                            "description": "One audited action",
                        },
                        _audit_text("object_type", "e.g. subject, kit, printed_document"),
                        _audit_text("object_id", "e.g. a subject number"),
                        _audit_date("since", "From this UTC date"),
                        _audit_date("until", "To this UTC date, inclusive"),
                    ],
                    "responses": {
                        "200": {
                            "description": "A page of entries; sealed (arm-revealing) values are never included",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/AuditPage"}}
                            },
                        },
                        "422": _problem_response("Invalid filter or cursor"),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/trials/{trial}/audit/verify": {
                "get": {
                    "summary": "Verify the trial's audit chain and its signed checkpoints",
                    "operationId": "verifyAudit",
                    "parameters": [_TRIAL],
                    "responses": {
                        "200": {
                            "description": "Verification result; first_bad names the first altered, missing, inserted or "
                            "reordered entry",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/AuditVerification"}
                                }
                            },
                        },
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/trials/{trial}/exports/odm": {
                "get": {
                    "summary": "Blinded CDISC ODM 1.3.2 snapshot of the trial, for an EDC to pull (audited)",
                    "description": "Every subject with its randomization number and time, strata as used and as "
                    "corrected, kits per day, dispensing and administration times, withdrawal and blind broken; "
                    "never an arm, a block or a list position. `Repr-Digest` (RFC 9530) carries the SHA-256 "
                    "recorded in the audit trail.",
                    "operationId": "exportOdm",
                    "parameters": [_TRIAL],
                    "responses": {
                        "200": {
                            "description": "The ODM document (validates against the ODM 1.3.2 schema)",
                            "headers": {
                                "Repr-Digest": {
                                    "description": "sha-256 of the body",
                                    "schema": {"type": "string"},
                                }
                            },
                            "content": {"application/xml": {"schema": {"type": "string"}}},
                        },
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/trials/{trial}/subjects": {
                "post": {
                    "summary": "Screen and randomize a patient (investigator of the site); in an "
                    "observational study, screen and register",
                    "description": "A randomized trial takes a RandomizationRequest and answers a "
                    "RandomizationResult. An observational study (`kind` observational in the trial "
                    "summary, issue 20) takes a RegistrationRequest (no strata) and answers a "
                    "RegistrationResult: the subject number, the registration time and the sample "
                    "schedule with the tube set assigned to each sample (`kit_number`), and no "
                    "randomization field. A site without an available tube set of a sample's type "
                    "refuses the registration (409 no-tube-set, the type named; nothing recorded).",
                    "operationId": "randomizeSubject",
                    "parameters": [_TRIAL, _IDEMPOTENCY_KEY],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/RandomizationRequest"},
                                        {"$ref": "#/components/schemas/RegistrationRequest"},
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "Randomized (never an arm), or registered in an observational study",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": "#/components/schemas/RandomizationResult"},
                                            {"$ref": "#/components/schemas/RegistrationResult"},
                                        ]
                                    }
                                }
                            },
                        },
                        "409": _problem_response(
                            "already-randomized (with subject_number when the caller randomized it), "
                            "kits-unavailable, stratum-exhausted, no-active-list or "
                            "list-integrity-failure (each its own problem type); already-registered or "
                            "no-tube-set (no available tube set of a sample's type at the site) in an "
                            "observational study"
                        ),
                        "422": _problem_response(
                            "validation-error (nothing recorded) or ineligible (recorded in the "
                            "screening log, with the failed criteria in errors)"
                        ),
                        **_COMMON_ERRORS,
                        **_BODY_ERRORS,
                    },
                },
                "get": {
                    "summary": "Blinded subject records of the sites within reach, a page at a time",
                    "description": "In an observational study (issue 20), its registered participants "
                    "(Participant: the samples with their planned dates and status, no randomization "
                    "field), in registration order.",
                    "operationId": "listSubjects",
                    "parameters": [
                        _TRIAL,
                        {
                            "name": "after",
                            "in": "query",
                            "schema": {"type": "string", "maxLength": 64},
                            "description": "Return the subjects randomized after this subject number "
                            "(the previous page's next_after)",
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        },
                        {
                            "name": "site",
                            "in": "query",
                            "schema": {"type": "string", "maxLength": 10},
                            "description": "Only the subjects of this site",
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": '{"subjects": [Subject], "next_after": subject number or null}, '
                            "in randomization order; [Participant] in registration order in an observational "
                            "study",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["subjects", "next_after"],
                                        "properties": {
                                            "subjects": {
                                                "type": "array",
                                                "items": {
                                                    "oneOf": [
                                                        {"$ref": "#/components/schemas/Subject"},
                                                        {"$ref": "#/components/schemas/Participant"},
                                                    ]
                                                },
                                            },
                                            "next_after": {"type": ["string", "null"]},
                                        },
                                    }
                                }
                            },
                        },
                        "422": _problem_response("Invalid cursor, limit or site"),
                        **_COMMON_ERRORS,
                    },
                },
            },
            "/trials/{trial}/subjects/{subject}": {
                "get": {
                    "summary": "One blinded subject record (a Participant in an observational study)",
                    "operationId": "getSubject",
                    "parameters": [_TRIAL, _SUBJECT],
                    "responses": {
                        "200": {
                            "description": "The subject",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": "#/components/schemas/Subject"},
                                            {"$ref": "#/components/schemas/Participant"},
                                        ]
                                    }
                                }
                            },
                        },
                        **_COMMON_ERRORS,
                    },
                }
            },
            **_printed_document(
                "dispensation-sheets",
                "DISP",
                operation="DispensationSheet",
                what="the QR-labelled dispensation sheet (pharmacist of the site; after dispensing)",
                conflict="Nothing dispensed yet; or reprint-limit: the sheet was already reprinted 999 "
                "times, the most a document may be",
            ),
            **_printed_document(
                "confirmations",
                "RAND",
                operation="Confirmation",
                what="the randomization confirmation (no arm; whoever may see the subject)",
                conflict="reprint-limit: the confirmation was already reprinted 999 times, the most a "
                "document may be",
            ),
            "/trials/{trial}/subjects/{subject}/unblind": {
                "post": {
                    "summary": "Emergency unblinding of one subject (investigator of its site)",
                    "description": (
                        "No approval step. One subject per call; the call is the explicit confirmation "
                        "and the password (and authenticator code when enrolled) sign it with the meaning "
                        "'emergency unblinding'. The arm is returned in this answer only; the subject is "
                        "marked blind broken and the sponsor and monitors are notified without the arm. "
                        "A drill subject (number DRILL-<site>-<n>, UNB-11) runs an unblinding drill "
                        "instead: the same checks and signature (meaning 'emergency unblinding drill'), "
                        "'drill': true and a value drawn at random for the drill, nobody's treatment; it is "
                        "recorded in the drill log only and the notifications say DRILL."
                    ),
                    "operationId": "emergencyUnblind",
                    "parameters": [
                        _TRIAL,
                        _SUBJECT,
                        {
                            **_IDEMPOTENCY_KEY,
                            "description": "A replay by the same user with the same body (the password "
                            "and code aside) gets the original 200 answer again (Idempotent-Replayed: true) "
                            "once the password is checked again, audited as an arm.read: nothing is "
                            "unblinded, signed or notified twice. Only the 200 answer is stored, sealed; a "
                            "refusal's retry runs afresh. The same key with another body is a 422",
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["reason_category", "reason", "password"],
                                    "properties": {
                                        "reason_category": {
                                            "type": "string",
                                            "enum": list(EMERGENCY_REASONS),
                                        },
                                        "reason": {"type": "string", "minLength": 10},
                                        "password": {"type": "string", "minLength": 1, "format": "password"},
                                        "otp": {
                                            "type": ["string", "null"],
                                            "pattern": signatures.CODE_PATTERN,
                                            "description": "When a second factor is enrolled: the six "
                                            "digits (ASCII) of the authenticator app; white space around "
                                            "them is ignored; null or an empty string is no code",
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Unblinded (recorded, signed, notified)",
                            "headers": {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}},
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": [
                                            "drill",
                                            "unblinding_id",
                                            "subject_number",
                                            "site",
                                            "arm",
                                            "arm_label",
                                            "product",
                                            "unblinded_at",
                                            "signature",
                                        ],
                                        "properties": {
                                            "drill": {
                                                "type": "boolean",
                                                "description": "true for an unblinding drill on a drill "
                                                "subject (UNB-11): unblinding_id is then the drill's id",
                                            },
                                            "arm": _TEXT,
                                            "arm_label": _TEXT,
                                            "product": {"type": "string"},
                                            "subject_number": _TEXT,
                                            "site": _TEXT,
                                            "unblinding_id": {"type": "integer", "minimum": 1},
                                            "unblinded_at": _TIME,
                                            "signature": _TEXT,
                                        },
                                    }
                                }
                            },
                        },
                        "400": _problem_response(
                            "More than one subject, a wildcard, or a field not a string"
                        ),
                        "401": _problem_response("Wrong password or code (audited, counts toward lockout)"),
                        "403": _problem_response("The subject is not at your site (audited)"),
                        "422": _problem_response(
                            "Missing or unknown reason category, too short a reason, or an Idempotency-Key "
                            "already used with another body"
                        ),
                        "429": _problem_response("Account locked, or an evident runaway of unblindings"),
                        **_COMMON_ERRORS,
                        **_BODY_ERRORS,
                    },
                }
            },
            "/trials/{trial}/scans": {
                "post": {
                    "summary": "Verify a scanned label at the bedside and record the administration",
                    "operationId": "recordScan",
                    "parameters": [_TRIAL, _IDEMPOTENCY_KEY],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["payload", "subject_number", "day"],
                                    "properties": {
                                        "payload": {
                                            "type": "string",
                                            "minLength": 1,
                                            "pattern": _NOT_BLANK,
                                            "description": "The QR text of the syringe or kit label",
                                        },
                                        "subject_number": {
                                            "type": "string",
                                            "minLength": 1,
                                            "pattern": _NOT_BLANK,
                                        },
                                        "day": {
                                            "type": "string",
                                            "minLength": 1,
                                            "pattern": _NOT_BLANK,
                                            "examples": ["D1"],
                                        },
                                        "administered_at": {
                                            "type": "string",
                                            "format": "date-time",
                                            "maxLength": 64,
                                            "description": "When given, if not now; with a zone, "
                                            "the year from 2000 to 9998",
                                        },
                                        "late_reason": {
                                            "type": "string",
                                            "maxLength": 1000,
                                            "description": "Required when recorded over 1 h late",
                                        },
                                        "confirmation": {
                                            "type": "string",
                                            "maxLength": 1000,
                                            "description": "Why this dose is given although the "
                                            "check warned (outside its planned day, or before an "
                                            "earlier dose). Without it such a scan is a 409 "
                                            "confirmation-needed and nothing is recorded",
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": {
                            "description": "Recorded",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": [
                                            "ok",
                                            "subject_number",
                                            "day",
                                            "kit_number",
                                            "administered_at",
                                            "warnings",
                                        ],
                                        "properties": {
                                            "ok": {"type": "boolean", "const": True},
                                            "subject_number": _TEXT,
                                            "day": _TEXT,
                                            "kit_number": _TEXT,
                                            "administered_at": _TIME,
                                            "warnings": {"type": "array", "items": {"type": "string"}},
                                        },
                                    }
                                }
                            },
                        },
                        "409": _problem_response(
                            "wrong-patient, wrong-day, already-administered or scan-refused "
                            "(audited); confirmation-needed when the check warned and no "
                            "`confirmation` was given (nothing recorded)"
                        ),
                        "422": _problem_response("Unreadable or forged label, or an invalid time"),
                        **_COMMON_ERRORS,
                        **_BODY_ERRORS,
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
                    "additionalProperties": False,
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {
                            "type": "string",
                            "format": "uri",
                            "pattern": "^urn:allocator:problem:[a-z0-9-]+$",
                        },
                        "title": _TEXT,
                        "status": {"type": "integer", "minimum": 400, "maximum": 599},
                        "detail": {"type": "string"},
                        "subject_number": {
                            "type": "string",
                            "description": "already-randomized: the subject number the caller was given",
                        },
                        "instance": {"type": "string", "description": "The request's reference number"},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["field", "message"],
                                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                            },
                        },
                    },
                },
                "RandomizationRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["site", "screening_number", "eligibility", "strata"],
                    "description": "Nothing else is accepted: no slot, arm or kit can be chosen (RND-05).",
                    "properties": {
                        "site": {"type": "string", "minLength": 1, "maxLength": 32, "examples": ["P1"]},
                        "screening_number": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 64,
                            "description": "The site's pseudonymous number",
                        },
                        "eligibility": {
                            "type": "object",
                            "minProperties": 1,
                            "description": "One answer per criterion id of the trial (its definition lists "
                            'them): a number criterion takes a JSON number, never text (`"age": "64"` is '
                            'a 422 naming `eligibility.age`); a yes/no criterion true/false or "yes"/"no"; '
                            'a date criterion "YYYY-MM-DD"',
                            "additionalProperties": {"$ref": "#/components/schemas/EligibilityAnswer"},
                        },
                        "strata": {
                            "type": "object",
                            "description": "One level code per entered stratification factor",
                            "additionalProperties": {"type": "string", "minLength": 1},
                        },
                    },
                },
                "RegistrationRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["site", "screening_number", "eligibility"],
                    "description": "An observational study's registration (issue 20): the screening "
                    "answers only; there is no stratum, arm or kit to give.",
                    "properties": {
                        "site": {"type": "string", "minLength": 1, "maxLength": 32, "examples": ["L1"]},
                        "screening_number": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 64,
                            "description": "The site's pseudonymous number",
                        },
                        "eligibility": {
                            "type": "object",
                            "minProperties": 1,
                            "description": "One answer per criterion id of the study, as for a randomization",
                            "additionalProperties": {"$ref": "#/components/schemas/EligibilityAnswer"},
                        },
                    },
                },
                "RegistrationResult": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["subject_number", "registered_at", "samples"],
                    "description": "No randomization number, drug kit or arm: an observational study has "
                    "none. Each sample carries the tube set assigned to it at registration.",
                    "properties": {
                        "subject_number": _TEXT,
                        "registered_at": {"type": "string", "format": "date-time"},
                        "samples": {
                            "type": "array",
                            "description": "The sample schedule, planned on the central lab's working days",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": [
                                    "label",
                                    "kit_type",
                                    "due_date",
                                    "window_end",
                                    "planned_date",
                                    "kit_number",
                                    "status",
                                    "collected_at",
                                ],
                                "properties": {
                                    "label": _TEXT,
                                    "kit_type": _TEXT,
                                    "due_date": {"type": "string", "format": "date"},
                                    "window_end": {"type": "string", "format": "date"},
                                    "planned_date": {"type": "string", "format": "date"},
                                    "kit_number": {
                                        "type": ["string", "null"],
                                        "pattern": "^[0-9]{8}$",
                                        "description": "The tube set assigned to the sample (8 digits, "
                                        "Damm check digit); null only for a participant registered "
                                        "before tube sets existed",
                                    },
                                    "status": {
                                        "type": ["string", "null"],
                                        "description": "The tube set's status: assigned, collected, "
                                        "missed, shipped, received, unusable",
                                    },
                                    "collected_at": {"type": ["string", "null"], "format": "date-time"},
                                },
                            },
                        },
                    },
                },
                "Participant": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": [
                        "subject_number",
                        "screening_number",
                        "site",
                        "registered_at",
                        "anchor_date",
                        "samples",
                    ],
                    "description": "A participant of an observational study (issue 20): registered, "
                    "never randomized; no randomization field exists.",
                    "properties": {
                        "subject_number": _TEXT,
                        "screening_number": _TEXT,
                        "site": _TEXT,
                        "registered_at": {"type": "string", "format": "date-time"},
                        "anchor_date": {
                            "type": "string",
                            "format": "date",
                            "description": "Day 0 of the sample schedule (the definition's anchor criterion)",
                        },
                        "samples": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": [
                                    "label",
                                    "kit_type",
                                    "due_date",
                                    "window_end",
                                    "planned_date",
                                    "status",
                                    "kit_number",
                                    "collected_at",
                                    "received_at",
                                ],
                                "properties": {
                                    "label": _TEXT,
                                    "kit_type": _TEXT,
                                    "due_date": {"type": "string", "format": "date"},
                                    "window_end": {"type": "string", "format": "date"},
                                    "planned_date": {"type": "string", "format": "date"},
                                    "status": {
                                        "type": "string",
                                        "enum": [
                                            "planned",
                                            "collected",
                                            "shipped",
                                            "received",
                                            "unusable",
                                            "missed",
                                        ],
                                        "description": "planned until its tube set is collected (or the "
                                        "sample missed); then the tube set's status",
                                    },
                                    "kit_number": {
                                        "type": ["string", "null"],
                                        "description": "The tube set assigned to the sample, if any",
                                    },
                                    "collected_at": {"type": ["string", "null"], "format": "date-time"},
                                    "received_at": {
                                        "type": ["string", "null"],
                                        "format": "date-time",
                                        "description": "Receipt at the central lab",
                                    },
                                },
                            },
                        },
                    },
                },
                "EligibilityAnswer": {
                    "description": "A number (number criteria), a boolean or yes/no text (yes/no criteria), "
                    "or a YYYY-MM-DD date (date criteria)",
                    "oneOf": [
                        {"type": "number"},
                        {"type": "boolean"},
                        {"type": "string", "minLength": 1},
                    ],
                },
                "RandomizationResult": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["subject_number", "randomization_number", "kits", "randomized_at"],
                    "properties": {
                        "subject_number": _TEXT,
                        "randomization_number": _TEXT,
                        "kits": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["kit_number", "day"],
                                "properties": {"kit_number": _TEXT, "day": _TEXT},
                            },
                        },
                        "randomized_at": {"type": "string", "format": "date-time"},
                    },
                },
                "Subject": {
                    "type": "object",
                    "description": "Blinded: no arm field exists (BLD-06).",
                    "additionalProperties": False,
                    "required": [
                        "subject_number",
                        "screening_number",
                        "randomization_number",
                        "site",
                        "randomized_at",
                        "strata",
                        "strata_corrected",
                        "randomized_in_error",
                        "blind_broken",
                        "withdrawal",
                        "kits",
                    ],
                    "properties": {
                        "subject_number": _TEXT,
                        "screening_number": _TEXT,
                        "randomization_number": _TEXT,
                        "site": _TEXT,
                        "randomized_at": _TIME,
                        "strata": {"type": "object", "additionalProperties": {"type": "string"}},
                        "strata_corrected": {
                            "type": ["object", "null"],
                            "additionalProperties": {"type": "string"},
                        },
                        "randomized_in_error": {"type": "boolean"},
                        "blind_broken": {"type": "boolean"},
                        "withdrawal": {
                            "description": "kind and effective_date once withdrawn (REP-04)",
                            "oneOf": [
                                {"type": "null"},
                                {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["kind", "effective_date"],
                                    "properties": {
                                        "kind": {"type": "string", "enum": list(WITHDRAWAL_KINDS)},
                                        "effective_date": {"type": "string", "format": "date"},
                                    },
                                },
                            ],
                        },
                        "kits": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["day", "kit_number", "status", "administered_at"],
                                "properties": {
                                    "day": _TEXT,
                                    "kit_number": _TEXT,
                                    "status": {
                                        "type": "string",
                                        "enum": ["allocated", "dispensed", "administered", "replaced"],
                                    },
                                    "administered_at": {"type": ["string", "null"], "format": "date-time"},
                                },
                            },
                        },
                    },
                },
                "AuditEntry": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["seq", "at", "actor", "action", "object", "hash", "prev_hash"],
                    "properties": {
                        "seq": {"type": "integer", "minimum": 1},
                        "at": {
                            "type": "string",
                            "minLength": 1,
                            "description": "UTC, ISO 8601 with microseconds",
                        },
                        "actor": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "username": {"type": "string"},
                                "name": {"type": "string"},
                                "role": {"type": "string"},
                                "site": {"type": ["string", "null"]},
                            },
                        },
                        "action": {"type": "string"},
                        "object": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "id": {"type": "string"},
                                "site": {"type": ["string", "null"]},
                            },
                        },
                        "old": {"type": ["object", "null"]},
                        "new": {"type": ["object", "null"]},
                        "reason": {"type": ["string", "null"]},
                        "request_id": {"type": "string"},
                        "software_version": {"type": "string"},
                        "sealed_value": {
                            "type": ["string", "null"],
                            "enum": ["present", None],
                            "description": "Says that a sealed (unblinded) value exists, never what it is",
                        },
                        "sealed": {
                            "type": "object",
                            "description": "The sealed value itself: only for unblinded readers",
                        },
                        "prev_hash": {"type": "string"},
                        "hash": {"type": "string"},
                    },
                },
                "AuditPage": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["entries", "next_after"],
                    "properties": {
                        "entries": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
                        "next_after": {
                            "type": ["integer", "null"],
                            "description": "Pass as `after` for the next page",
                        },
                    },
                },
                "AuditVerification": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": [
                        "ok",
                        "entries",
                        "first_bad",
                        "problems",
                        "checkpoints",
                        "unsigned_tail",
                        "witness_configured",
                        "witnessed_upto",
                        "unwitnessed",
                    ],
                    "properties": {
                        "ok": {"type": "boolean"},
                        "entries": {"type": "integer"},
                        "first_bad": {"type": ["integer", "null"]},
                        "problems": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["seq", "message"],
                                "properties": {"seq": {"type": "integer"}, "message": {"type": "string"}},
                            },
                        },
                        "checkpoints": {"type": "integer"},
                        "unsigned_tail": {
                            "type": "integer",
                            "description": "Entries after the last checkpoint; the signed head covers them",
                        },
                        "witness_configured": {
                            "type": "boolean",
                            "description": "False: truncation of the newest entries cannot be detected",
                        },
                        "witnessed_upto": {"type": "integer", "description": "Highest entry the witness saw"},
                        "unwitnessed": {"type": "integer", "description": "Entries newer than the witness"},
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
                        "kind": {
                            "type": "string",
                            "enum": ["randomized", "observational"],
                            "description": "observational: a cohort with registration and samples, no arms",
                        },
                        "eu_ct_number": {
                            "type": ["string", "null"],
                            "description": "null for a study outside the EU CTR (an observational cohort)",
                        },
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
                            "description": "Fields of the definition still to be confirmed against the protocol; "
                            "only for users who may manage the lists or the sites",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"field": {"type": "string"}, "note": {"type": "string"}},
                            },
                        },
                    },
                },
            },
        },
    }
