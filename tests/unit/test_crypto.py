"""Key ring and sealing: AES-256-GCM bound to its row, clear errors, key files (BLD-05)."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from allocator import crypto
from allocator.crypto import Binding, KeyRing, Purpose

ROW = Binding(trial="IFNG-PAIS", table="slot", row="7", column="sealed")


@pytest.fixture
def fresh_ring(tmp_path: Path) -> KeyRing:
    KeyRing.create_missing(tmp_path / "keys")
    return KeyRing.load(tmp_path / "keys")


@pytest.mark.req("BLD-05")
def test_sealed_arm_opens_only_on_its_own_row(fresh_ring: KeyRing) -> None:
    sealed = crypto.seal_arm(fresh_ring, "A", ROW)
    assert b"A" not in sealed[-40:] or crypto.open_arm(fresh_ring, sealed, ROW) == "A"
    assert crypto.open_arm(fresh_ring, sealed, ROW) == "A"
    for moved in (
        Binding("IFNG-PAIS", "slot", "8", "sealed"),  # copied onto another row
        Binding("OTHER", "slot", "7", "sealed"),  # another trial
        Binding("IFNG-PAIS", "kit", "7", "sealed"),  # another table
        Binding("IFNG-PAIS", "slot", "7", "other"),  # another column
    ):
        with pytest.raises(crypto.SealError, match="does not open"):
            crypto.open_arm(fresh_ring, sealed, moved)


@pytest.mark.req("BLD-05")
def test_tampered_ciphertext_is_refused(fresh_ring: KeyRing) -> None:
    sealed = bytearray(crypto.seal_arm(fresh_ring, "B", ROW))
    sealed[-1] ^= 0x01
    with pytest.raises(crypto.SealError):
        crypto.open_arm(fresh_ring, bytes(sealed), ROW)
    with pytest.raises(crypto.SealError, match="not a sealed value"):
        crypto.open_arm(fresh_ring, b"\x02garbage", ROW)


@pytest.mark.req("BLD-05")
def test_missing_key_file_gives_a_clear_error(tmp_path: Path) -> None:
    KeyRing.create_missing(tmp_path / "keys")
    (tmp_path / "keys" / "lists.key").unlink()
    with pytest.raises(crypto.KeyMissingError, match=r"lists\.key is missing.*allocator init"):
        KeyRing.load(tmp_path / "keys")
    partial = KeyRing.load(tmp_path / "keys", require=())
    with pytest.raises(crypto.KeyMissingError, match="no lists key"):
        crypto.seal_arm(partial, "A", ROW)


@pytest.mark.req("BLD-05")
def test_wrong_key_names_the_key_it_needs(fresh_ring: KeyRing, tmp_path: Path) -> None:
    sealed = crypto.seal_arm(fresh_ring, "A", ROW)
    KeyRing.create_missing(tmp_path / "other")
    other = KeyRing.load(tmp_path / "other")
    with pytest.raises(crypto.KeyMissingError, match=r"does not hold key 'lists-[0-9a-f]{16}'"):
        crypto.open_arm(other, sealed, ROW)


@pytest.mark.req("BLD-05")
def test_a_key_file_edited_by_hand_is_refused(tmp_path: Path) -> None:
    KeyRing.create_missing(tmp_path / "keys")
    path = tmp_path / "keys" / "lists.key"
    document = json.loads(path.read_text())
    document["keys"][0]["material"] = "A" * 43 + "="  # other 32 bytes, same key id
    path.write_text(json.dumps(document))
    with pytest.raises(crypto.KeyFileError, match="does not match its material"):
        KeyRing.load(tmp_path / "keys")


@pytest.mark.req("BLD-05")
def test_rotation_keeps_old_values_readable(fresh_ring: KeyRing) -> None:
    old = crypto.seal_arm(fresh_ring, "A", ROW)
    new_id = fresh_ring.rotate(Purpose.LISTS)
    rotated = KeyRing.load(fresh_ring.key_dir)
    assert rotated.keyset(Purpose.LISTS).active_id == new_id
    assert crypto.open_arm(rotated, old, ROW) == "A"
    new = crypto.seal_arm(rotated, "A", ROW)
    assert new_id.encode() in new and new_id.encode() not in old


@pytest.mark.req("ACC-13")
def test_key_files_are_private_and_strict_mode_refuses_loose_ones(tmp_path: Path) -> None:
    created = KeyRing.create_missing(tmp_path / "keys")
    assert set(created) == set(Purpose)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for purpose in Purpose:
        assert stat.S_IMODE((tmp_path / "keys" / f"{purpose.value}.key").stat().st_mode) == 0o600
    KeyRing.load(tmp_path / "keys", strict_modes=True)
    os.chmod(tmp_path / "keys" / "audit.key", 0o644)
    with pytest.raises(crypto.KeyFileError, match="must not be accessible"):
        KeyRing.load(tmp_path / "keys", strict_modes=True)
    assert KeyRing.create_missing(tmp_path / "keys") == []  # nothing overwritten


@pytest.mark.req("BLD-02")
def test_ciphertext_length_does_not_depend_on_the_arm(fresh_ring: KeyRing) -> None:
    lengths = {
        len(crypto.seal_arm(fresh_ring, code, ROW)) for code in ("A", "B", "PLACEBO", "ACTIVE_LONG_CODE")
    }
    assert len(lengths) == 1


@pytest.mark.req("AUD-04")
def test_checkpoint_signatures_verify_and_detect_changes(fresh_ring: KeyRing) -> None:
    signed = crypto.sign_checkpoint(fresh_ring, b"chain|0|10|abc")
    assert crypto.verify_checkpoint(fresh_ring, signed.key_id, b"chain|0|10|abc", signed.signature)
    assert not crypto.verify_checkpoint(fresh_ring, signed.key_id, b"chain|0|10|abd", signed.signature)
    assert "BEGIN PUBLIC KEY" in crypto.audit_public_key_pem(fresh_ring)


@pytest.mark.req("ACC-03")
def test_password_hashing_is_argon2id_and_verifies() -> None:
    params = crypto.FAST_PASSWORD_HASHING
    hashed = crypto.hash_password("a long enough passphrase", params)
    assert hashed.startswith("$argon2id$")
    assert crypto.verify_password(hashed, "a long enough passphrase", params)
    assert not crypto.verify_password(hashed, "a long enough passphrasE", params)
    assert not crypto.verify_password("not-a-hash", "x", params)
    assert crypto.password_needs_rehash(hashed, crypto.PasswordHashing())


@pytest.mark.req("ACC-04")
def test_totp_codes_verify_within_one_step_and_are_not_replayed() -> None:
    secret = crypto.new_totp_secret()
    now = datetime(2026, 3, 2, 9, 30, 10, tzinfo=UTC)
    code = crypto.totp_now(secret, now)
    step = crypto.totp_verify(secret, code, now, last_step=None)
    assert step == int(now.timestamp()) // 30
    assert (
        crypto.totp_verify(secret, code, now + timedelta(seconds=30), last_step=None) == step
    )  # drift allowed
    assert crypto.totp_verify(secret, code, now + timedelta(seconds=95), last_step=None) is None  # too late
    assert crypto.totp_verify(secret, code, now, last_step=step) is None  # replay refused
    assert crypto.totp_verify(secret, "12345", now, last_step=None) is None
    assert crypto.totp_uri(secret, "alice", "allocator").startswith("otpauth://totp/allocator:alice?")


def test_rfc6238_reference_vector() -> None:
    # RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (8 digits); the 6-digit code is its last six.
    secret = b"12345678901234567890"
    assert crypto.totp_now(secret, datetime.fromtimestamp(59, UTC)) == "287082"
