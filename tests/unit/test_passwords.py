"""Password policy: length and common passwords, no composition rules (ACC-03)."""

from __future__ import annotations

import pytest

from allocator import passwords


@pytest.mark.req("ACC-03")
@pytest.mark.parametrize(
    ("candidate", "problem"),
    [
        ("short pass", "at least 12"),
        ("password1234", "commonly used"),
        ("Azertyuiop123", "commonly used"),
        ("!!motdepasse!!", "commonly used"),
        ("aaaaaaaaaaaaaa", "repeats"),
        ("abcdefghijklmnop", "simple sequence"),
        ("123456789012", "simple sequence"),
        ("mnopqrstuvwx", "simple sequence"),
        ("alice-is-on-call-7", "user name"),
        ("verstraeten on call", "your name"),
        ("placebo-Moon-42", "name of this service or trial"),
        ("x" * 129 + "yz", "at most 128"),
    ],
)
def test_weak_passwords_are_refused(candidate: str, problem: str) -> None:
    found = passwords.problems(candidate, username="alice", full_name="Dr Alice Verstraeten")
    assert any(problem in p for p in found), found


@pytest.mark.req("ACC-03")
@pytest.mark.parametrize(
    "candidate",
    [
        "correct horse battery staple",
        "ventilateur bleu 2026 nuit",
        "Ψ unicode phrase works",
        "placebo and a long phrase ok",
    ],
)
def test_long_uncommon_passwords_are_accepted(candidate: str) -> None:
    assert passwords.problems(candidate, username="alice", full_name="Dr Alice Verstraeten") == []


def test_common_list_is_loaded_and_lower_case() -> None:
    common = passwords.common_passwords()
    assert len(common) > 200
    assert "123456" in common and "motdepasse" in common
    assert all(p == p.lower() for p in common)


def test_normalisation_makes_equivalent_forms_equal() -> None:
    assert passwords.normalise("ﬁle") == passwords.normalise("file")
