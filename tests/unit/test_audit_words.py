"""The audit trail in plain words (issue 13 point 9)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask_babel import Babel

from allocator import audit_labels
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
