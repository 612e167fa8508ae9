"""The audit trail in plain words (issue 13 point 9)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from flask import Flask
from flask_babel import Babel

from allocator import audit_labels, notices
from allocator.audit import Action
from allocator.web import audit_words


def test_every_audited_action_has_a_label() -> None:
    assert set(audit_labels.ACTION_LABELS) == set(Action)
    assert len(set(audit_labels.ACTION_LABELS.values())) == len(Action)  # no two alike


@pytest.mark.req("AUD-05")
def test_values_read_as_key_value_lines_without_json() -> None:
    app = Flask(__name__)
    Babel(app)  # type: ignore[no-untyped-call]
    with app.test_request_context():
        lines = audit_words.detail_lines(
            {
                "screening_number": "P1-0001",
                "strata": {"admission_cause": "septic"},
                "kits": ["K-1", "K-2"],
                "name": "Pr Dépret",
                "ok": True,
                "ends_at": None,
                "role": "unblinded_pharmacist",
                "kind": "consent_withdrawn",
                "endpoint": "admin.trial_roles",
            }
        )
        assert audit_words.action_label("site.created") == "Site created"
        assert audit_words.action_label("not.a.code") == "not.a.code"
    Line = audit_words.Line
    assert lines == [
        Line("screening number", "P1-0001"),
        Line("strata", "admission cause: septic"),
        Line("kits", "K-1, K-2"),
        Line("name", "Pr Dépret"),
        Line("correct", "yes"),
        Line("ends at", "—"),
        Line("role", "Unblinded pharmacist"),  # a code with words is shown in words
        Line("kind", "consent_withdrawn", code=True),  # one without is shown as code, on purpose
        Line("page", "admin.trial_roles", code=True),
    ]


def _literal_keys(node: ast.AST) -> set[str]:
    return {
        key.value
        for found in ast.walk(node)
        if isinstance(found, ast.Dict)
        for key in found.keys
        if isinstance(key, ast.Constant) and isinstance(key.value, str)
    }


def _recorded_keys() -> set[str]:
    """The literal keys of the values the code records in audit entries (`new=`, `old=`, `sealed=`),
    and of the dicts a module builds under a name it spreads into them (`new={**values, ...}`: the
    site's name, city and principal investigator were recorded so, without words)."""
    keys: set[str] = set()
    for path in (Path(__file__).resolve().parents[2] / "allocator").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        spread: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg in ("new", "old", "sealed"):
                        keys |= _literal_keys(keyword.value)
                        spread |= {
                            value.id
                            for found in ast.walk(keyword.value)
                            if isinstance(found, ast.Dict)
                            for key, value in zip(found.keys, found.values, strict=True)
                            if key is None and isinstance(value, ast.Name)
                        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id in spread for target in node.targets
            ):
                keys |= _literal_keys(node.value)
    return keys


@pytest.mark.req("AUD-05")
def test_every_recorded_key_has_words_in_both_languages() -> None:
    """Issue 13: the keys shown under an audit entry are words, in French and English; the records
    keep their codes. A key added to a record without a label fails here."""
    keys = _recorded_keys()
    assert {"screening_number", "reason_category", "confirmed_despite_warnings"} <= keys  # the scan works
    assert sorted(keys - set(audit_labels.KEY_LABELS)) == []
    french = notices.catalogue_gettext("fr")
    assert audit_labels.key_label("screening_number", french) == "numéro de sélection"
    assert audit_labels.key_label("reason_category", french) == "catégorie de motif"
    assert audit_labels.action_label("role.granted", french) == "Rôle attribué"
    # An unknown key is still shown, as words, never as a code name.
    assert audit_labels.key_label("some_new_key", french) == "some new key"
