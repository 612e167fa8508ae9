"""Settings come from the environment, validated, with no secret defaults (ACC-13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from allocator.settings import Environment, Settings, SettingsError


def test_defaults_match_the_contract() -> None:
    s = Settings.from_env({})
    assert s.env is Environment.DEVELOPMENT
    assert s.database_url == "sqlite:///instance/allocator.db"
    assert s.key_dir == Path("instance/keys")
    assert not s.secure_cookies


def test_environment_values() -> None:
    s = Settings.from_env(
        {
            "ALLOCATOR_ENV": "Production",
            "ALLOCATOR_DATABASE_URL": "postgresql://u@h/db",
            "ALLOCATOR_KEY_DIR": "/k",
        }
    )
    assert s.is_production and s.secure_cookies
    assert s.database_url == "postgresql+psycopg://u@h/db"
    assert s.key_dir == Path("/k")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ALLOCATOR_ENV": "staging"}, "ALLOCATOR_ENV"),
        ({"ALLOCATOR_DATABASE_URL": "mysql://x"}, "ALLOCATOR_DATABASE_URL"),
        ({"ALLOCATOR_SESSION_IDLE_MINUTES": "ten"}, "ALLOCATOR_SESSION_IDLE_MINUTES"),
        ({"ALLOCATOR_SESSION_IDLE_MINUTES": "0"}, "outside"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
