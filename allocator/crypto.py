"""The only module that imports `cryptography` (and the password hasher).

Intent-named functions with fixed algorithms (architecture.md):

* `seal` / `open_sealed` — AES-256-GCM. The associated data binds every ciphertext to its trial,
  table, row and column, so a ciphertext copied onto another row does not open (BLD-05).
* `seal_arm` / `open_arm` — the same, for arm codes. `open_arm` must only be called by the
  audited arm accessor (BLD-08); a static test enforces that.
* `label_mac` — HMAC-SHA256 for QR payloads on labels and sheets (LBL-08/09).
* `sign_checkpoint` / `verify_checkpoint` — Ed25519 over audit-chain checkpoints (AUD-04).
* `hash_password` / `verify_password` — Argon2id (ACC-03).
* TOTP (RFC 6238) for second factors (ACC-04).

Keys are handed in explicitly as a `KeyRing`; nothing here reads application globals. One key
file per purpose lives in the key directory (0700; files 0600). Each key has an id that includes
a fingerprint of its material, so that a ciphertext names the key it needs and a wrong key is told
apart from a tampered ciphertext. Rotation adds a key and makes it active; old keys stay to open
old ciphertexts. Nothing in this module logs.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP


class Purpose(enum.StrEnum):
    """One key per purpose (architecture.md: never one key for everything)."""

    SESSION = "session"  # Flask session and CSRF signing
    LISTS = "lists"  # sealing arms, kit -> arm maps, seeds, minimization records
    LABELS = "labels"  # MACs in QR payloads
    AUDIT = "audit"  # Ed25519 signatures over audit checkpoints
    ACCOUNTS = "accounts"  # sealing TOTP secrets


_SYMMETRIC = {Purpose.SESSION, Purpose.LISTS, Purpose.LABELS, Purpose.ACCOUNTS}
_FORMAT = "allocator-key/1"
_SEAL_VERSION = b"\x01"


class KeyError_(Exception):
    """Base class of key-ring problems."""


class KeyMissingError(KeyError_):
    """A key file is absent, or a ciphertext names a key the ring does not hold."""


class KeyFileError(KeyError_):
    """A key file exists but is malformed or has unsafe permissions."""


class SealError(Exception):
    """A sealed value does not open: altered, moved to another row, or sealed for another purpose."""


@dataclass(frozen=True, slots=True)
class Binding:
    """What a sealed value belongs to. Part of the GCM associated data (BLD-05)."""

    trial: str
    table: str
    row: str
    column: str

    def associated_data(self, purpose: Purpose) -> bytes:
        # Length-prefixed fields: no two different bindings can encode to the same bytes.
        return _frame(["allocator/seal/v1", purpose.value, self.trial, self.table, self.row, self.column])


@dataclass(frozen=True, slots=True)
class Key:
    key_id: str
    material: bytes
    created: str


@dataclass(frozen=True, slots=True)
class KeySet:
    purpose: Purpose
    active_id: str
    keys: Mapping[str, Key]

    @property
    def active(self) -> Key:
        return self.keys[self.active_id]

    def get(self, key_id: str) -> Key:
        try:
            return self.keys[key_id]
        except KeyError:
            raise KeyMissingError(
                f"the {self.purpose.value} key ring does not hold key {key_id!r} "
                "(wrong key directory, or the key was removed)"
            ) from None


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys of one instance, loaded once at start-up and passed explicitly."""

    key_dir: Path
    sets: Mapping[Purpose, KeySet] = field(default_factory=dict)

    def keyset(self, purpose: Purpose) -> KeySet:
        try:
            return self.sets[purpose]
        except KeyError:
            raise KeyMissingError(
                f"no {purpose.value} key: {self.key_dir / _file_name(purpose)} is missing "
                "(run `allocator init` to create missing keys)"
            ) from None

    @classmethod
    def load(
        cls, key_dir: Path, *, require: Iterable[Purpose] = tuple(Purpose), strict_modes: bool = False
    ) -> KeyRing:
        """Read every key file in `key_dir`.

        Raises KeyMissingError if a required purpose has no file, KeyFileError if a file is malformed
        or (with `strict_modes`, as in production) readable by group or others.
        """
        if strict_modes:
            _check_mode(key_dir, 0o700)
        sets: dict[Purpose, KeySet] = {}
        for purpose in Purpose:
            path = key_dir / _file_name(purpose)
            if not path.exists():
                continue
            if strict_modes:
                _check_mode(path, 0o600)
            sets[purpose] = _read_keyset(path, purpose)
        ring = cls(key_dir=key_dir, sets=sets)
        for purpose in require:
            ring.keyset(purpose)
        return ring

    @classmethod
    def create_missing(cls, key_dir: Path) -> list[Purpose]:
        """Create the key directory (0700) and any missing key file (0600). Returns what was created."""
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(key_dir, 0o700)
        created = []
        for purpose in Purpose:
            path = key_dir / _file_name(purpose)
            if path.exists():
                continue
            key = _new_key(purpose)
            _write_keyset(path, purpose, key.key_id, [key])
            created.append(purpose)
        return created

    def rotate(self, purpose: Purpose) -> str:
        """Add a new key for `purpose` and make it active; old keys keep opening old values."""
        current = self.keyset(purpose)
        key = _new_key(purpose)
        _write_keyset(self.key_dir / _file_name(purpose), purpose, key.key_id, [*current.keys.values(), key])
        return key.key_id


def _file_name(purpose: Purpose) -> str:
    return f"{purpose.value}.key"


def _check_mode(path: Path, wanted: int) -> None:
    if not path.exists():
        raise KeyMissingError(f"{path} does not exist (run `allocator init`)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{path} has mode {mode:o}; it must not be accessible to group or others ({wanted:o})"
        )


def _fingerprint(material: bytes) -> str:
    return hashlib.sha256(b"allocator/key-id/v1" + material).hexdigest()[:16]


def _new_key(purpose: Purpose) -> Key:
    if purpose in _SYMMETRIC:
        material = secrets.token_bytes(32)  # AES-256 / HMAC-SHA256 key
    else:
        material = Ed25519PrivateKey.generate().private_bytes_raw()
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Key(key_id=f"{purpose.value}-{_fingerprint(material)}", material=material, created=created)


def _write_keyset(path: Path, purpose: Purpose, active_id: str, keys: list[Key]) -> None:
    document = {
        "format": _FORMAT,
        "purpose": purpose.value,
        "active": active_id,
        "keys": [
            {"id": k.key_id, "created": k.created, "material": base64.b64encode(k.material).decode("ascii")}
            for k in keys
        ],
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _read_keyset(path: Path, purpose: Purpose) -> KeySet:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != _FORMAT or document.get("purpose") != purpose.value:
            raise KeyFileError(f"{path}: not an allocator {purpose.value} key file")
        keys: dict[str, Key] = {}
        for entry in document["keys"]:
            material = base64.b64decode(entry["material"], validate=True)
            expected = 32
            if len(material) != expected:
                raise KeyFileError(f"{path}: key {entry['id']!r} is not {expected} bytes long")
            key_id = str(entry["id"])
            if key_id != f"{purpose.value}-{_fingerprint(material)}":
                raise KeyFileError(f"{path}: key {key_id!r} does not match its material (edited by hand?)")
            keys[key_id] = Key(key_id=key_id, material=material, created=str(entry.get("created", "")))
        active = str(document["active"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path}: malformed key file ({exc.__class__.__name__})") from None
    if active not in keys:
        raise KeyFileError(f"{path}: the active key {active!r} is not in the file")
    return KeySet(purpose=purpose, active_id=active, keys=keys)


# --- sealing (AES-256-GCM) -------------------------------------------------------------------


def seal(ring: KeyRing, purpose: Purpose, plaintext: bytes, binding: Binding) -> bytes:
    """Encrypt `plaintext` for `binding` with the active key of `purpose`.

    Layout: version (1 byte) | key-id length (1) | key id | nonce (12) | ciphertext and tag.
    """
    if purpose not in _SYMMETRIC:
        raise ValueError(f"{purpose.value} keys do not seal")
    key = ring.keyset(purpose).active
    nonce = secrets.token_bytes(12)
    body = AESGCM(key.material).encrypt(nonce, plaintext, binding.associated_data(purpose))
    key_id = key.key_id.encode("ascii")
    return _SEAL_VERSION + bytes([len(key_id)]) + key_id + nonce + body


def open_sealed(ring: KeyRing, purpose: Purpose, sealed: bytes, binding: Binding) -> bytes:
    """Decrypt a value sealed by `seal`. Raises KeyMissingError or SealError with a clear message."""
    if len(sealed) < 2 or sealed[:1] != _SEAL_VERSION:
        raise SealError(f"{binding.table}.{binding.column} of row {binding.row}: not a sealed value")
    id_len = sealed[1]
    key_id = sealed[2 : 2 + id_len].decode("ascii", errors="replace")
    nonce = sealed[2 + id_len : 14 + id_len]
    body = sealed[14 + id_len :]
    key = ring.keyset(purpose).get(key_id)
    try:
        return AESGCM(key.material).decrypt(nonce, body, binding.associated_data(purpose))
    except InvalidTag:
        raise SealError(
            f"{binding.table}.{binding.column} of row {binding.row} (trial {binding.trial}) does not open: "
            "the value was altered or belongs to another row"
        ) from None


class BulkSealer:
    """Seals many values with the active key of one purpose (list generation seals up to millions
    of slots): the same format and associated data as `seal`, without rebuilding the cipher and the
    constant parts of the associated data for every value."""

    def __init__(self, ring: KeyRing, purpose: Purpose) -> None:
        if purpose not in _SYMMETRIC:
            raise ValueError(f"{purpose.value} keys do not seal")
        key = ring.keyset(purpose).active
        self._purpose = purpose
        self._cipher = AESGCM(key.material)
        key_id = key.key_id.encode("ascii")
        self._prefix = _SEAL_VERSION + bytes([len(key_id)]) + key_id
        self._frames: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}

    def seal_text(self, text: str, binding: Binding) -> bytes:
        """Seal UTF-8 text (for example a JSON document the caller already serialised)."""
        frame = self._frames.get((binding.trial, binding.table, binding.column))
        if frame is None:
            head = _frame(["allocator/seal/v1", self._purpose.value, binding.trial, binding.table])
            frame = (head, _frame([binding.column]))
            self._frames[(binding.trial, binding.table, binding.column)] = frame
        row = binding.row.encode("utf-8")
        associated = frame[0] + len(row).to_bytes(4, "big") + row + frame[1]
        nonce = secrets.token_bytes(12)
        return (
            self._prefix
            + nonce
            + self._cipher.encrypt(nonce, _pad(text.encode("utf-8"), step=64), associated)
        )

    def seal_json(self, value: object, binding: Binding) -> bytes:
        return self.seal_text(
            json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False), binding
        )


def _frame(parts: list[str]) -> bytes:
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8")
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def seal_arm(ring: KeyRing, arm_code: str, binding: Binding) -> bytes:
    """Seal an arm code (BLD-05). Fixed-length padding keeps ciphertext length independent of the arm."""
    return seal(ring, Purpose.LISTS, _pad(arm_code.encode("utf-8")), binding)


def open_arm(ring: KeyRing, sealed: bytes, binding: Binding) -> str:
    """Open an arm code. BLD-08: only `allocator.unblinding.read_arm*` may call this (audited)."""
    return _unpad(open_sealed(ring, Purpose.LISTS, sealed, binding)).decode("utf-8")


def seal_json(ring: KeyRing, purpose: Purpose, value: object, binding: Binding) -> bytes:
    """Seal a JSON-serialisable value (e.g. a minimization decision record), padded to 64-byte steps."""
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return seal(ring, purpose, _pad(raw, step=64), binding)


def open_json(ring: KeyRing, purpose: Purpose, sealed: bytes, binding: Binding) -> object:
    return json.loads(_unpad(open_sealed(ring, purpose, sealed, binding)))


_PAD_STEP = 32


def _pad(raw: bytes, step: int = _PAD_STEP) -> bytes:
    # BLD-02: ciphertext lengths must not differ between arms ("A" vs "PLACEBO"). Length-prefixed,
    # zero-filled to the next multiple of `step`.
    body = len(raw).to_bytes(2, "big") + raw
    return body + b"\x00" * (-len(body) % step)


def _unpad(padded: bytes) -> bytes:
    length = int.from_bytes(padded[:2], "big")
    return padded[2 : 2 + length]


# --- MACs and signatures ---------------------------------------------------------------------


def label_mac(ring: KeyRing, message: bytes) -> bytes:
    """HMAC-SHA256 of a label payload with the active labels key (LBL-08)."""
    key = ring.keyset(Purpose.LABELS).active
    return hmac.new(key.material, b"allocator/label/v1|" + message, hashlib.sha256).digest()


class SlotMacer:
    """Per-slot MACs of a randomization list (issue 16): HMAC-SHA256, under a key derived from the
    lists key, over the slot's trial, list, stratum, position, randomization number and the SHA-256
    of its sealed record. An allocation checks the one slot it uses in O(1) instead of re-hashing
    the whole stratum; the stratum digest still covers every slot in the full integrity check.

    Layout: key-id length (1 byte) | key id | MAC (32). The key id names the lists key the MAC was
    made with, so that a rotated lists key still verifies older slots."""

    _DOMAIN = b"allocator/slot-mac/v1"

    def __init__(self, ring: KeyRing) -> None:
        self._keys = ring.keyset(Purpose.LISTS)
        self._derived: dict[str, bytes] = {}

    def _key(self, key_id: str) -> bytes:
        derived = self._derived.get(key_id)
        if derived is None:
            material = self._keys.get(key_id).material
            derived = hmac.new(material, self._DOMAIN, hashlib.sha256).digest()
            self._derived[key_id] = derived
        return derived

    @staticmethod
    def _message(trial: str, label: str, stratum: str, position: int, number: str, sealed: bytes) -> bytes:
        return _frame([trial, label, stratum, str(position), number, hashlib.sha256(sealed).hexdigest()])

    def mac(self, trial: str, label: str, stratum: str, position: int, number: str, sealed: bytes) -> bytes:
        key_id = self._keys.active_id
        tag = hmac.new(
            self._key(key_id), self._message(trial, label, stratum, position, number, sealed), hashlib.sha256
        ).digest()
        encoded = key_id.encode("ascii")
        return bytes([len(encoded)]) + encoded + tag

    def verify(
        self, mac: bytes, trial: str, label: str, stratum: str, position: int, number: str, sealed: bytes
    ) -> bool:
        """Whether `mac` was made for exactly this slot. False (never an exception) for a MAC that is
        malformed, altered, made for another slot, or names a key the ring does not hold."""
        if len(mac) < 2 or len(mac) != 1 + mac[0] + 32:
            return False
        key_id = mac[1 : 1 + mac[0]].decode("ascii", errors="replace")
        try:
            key = self._key(key_id)
        except KeyMissingError:
            return False
        expected = hmac.new(
            key, self._message(trial, label, stratum, position, number, sealed), hashlib.sha256
        ).digest()
        return hmac.compare_digest(expected, mac[1 + mac[0] :])


def device_cookie(ring: KeyRing, username: str, nonce: str | None = None) -> str:
    """A cookie naming a browser in which `username` has signed in (issue 15, ACC-05): `v1.key.nonce.mac`,
    the MAC binding the user name, which the cookie itself does not reveal."""
    key = ring.keyset(Purpose.SESSION).active
    nonce = nonce or secrets.token_urlsafe(18)
    return f"v1.{key.key_id}.{nonce}.{_device_mac(key.material, username, nonce)}"


def device_nonce(ring: KeyRing, username: str, cookie: str | None) -> str | None:
    """The nonce of a genuine device cookie of `username`, or None (absent, forged, another user's,
    or made with a key no longer in the ring)."""
    parts = (cookie or "").split(".")
    if len(parts) != 4 or parts[0] != "v1" or len(cookie or "") > 200:
        return None
    _, key_id, nonce, mac = parts
    try:
        key = ring.keyset(Purpose.SESSION).get(key_id)
    except KeyMissingError:
        return None
    return nonce if hmac.compare_digest(mac, _device_mac(key.material, username, nonce)) else None


def _device_mac(material: bytes, username: str, nonce: str) -> str:
    message = f"allocator/device/v1|{username}|{nonce}".encode()
    return base64.urlsafe_b64encode(hmac.new(material, message, hashlib.sha256).digest()).decode().rstrip("=")


def session_secret(ring: KeyRing) -> bytes:
    """The Flask secret key, derived so the raw key file never becomes a cookie-signing key elsewhere."""
    key = ring.keyset(Purpose.SESSION).active
    return hmac.new(key.material, b"allocator/flask-session/v1", hashlib.sha256).digest()


def token_digest(token: str) -> str:
    """Digest under which an API bearer token or session id is stored. Tokens carry 256 bits of
    entropy, so a fast hash is the right tool (no password-style stretching needed)."""
    return hashlib.sha256(b"allocator/token/v1|" + token.encode("utf-8")).hexdigest()


def new_token(prefix: str) -> str:
    """A new random bearer token or session id (256 bits from the OS CSPRNG)."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True, slots=True)
class CheckpointSignature:
    key_id: str
    signature: bytes


_CHECKPOINT_DOMAIN = b"allocator/checkpoint/v1|"
_HEAD_DOMAIN = b"allocator/head/v1|"


def sign_checkpoint(ring: KeyRing, message: bytes) -> CheckpointSignature:
    """Ed25519 signature over a checkpoint of the audit chain (AUD-04)."""
    return _sign_audit(ring, _CHECKPOINT_DOMAIN + message)


def verify_checkpoint(ring: KeyRing, key_id: str, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid checkpoint signature of `message` by key `key_id`."""
    return _verify_audit(ring, key_id, _CHECKPOINT_DOMAIN + message, signature)


def sign_head(ring: KeyRing, message: bytes) -> CheckpointSignature:
    """Ed25519 signature over the head of an audit chain, renewed by every appending transaction.
    Its own domain tag: a head signature can never pass for a checkpoint, nor the reverse."""
    return _sign_audit(ring, _HEAD_DOMAIN + message)


def verify_head(ring: KeyRing, key_id: str, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid head signature of `message` by key `key_id`."""
    return _verify_audit(ring, key_id, _HEAD_DOMAIN + message, signature)


_VERIFIED_DOMAIN = b"allocator/verified/v1|"


def sign_verification(ring: KeyRing, message: bytes) -> CheckpointSignature:
    """Ed25519 signature over the kept result of an audit-chain verification (issue 21). Its own
    domain tag: it never passes for a checkpoint, a head or a manifest, nor the reverse."""
    return _sign_audit(ring, _VERIFIED_DOMAIN + message)


def verify_verification(ring: KeyRing, key_id: str, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid signature of a kept verification `message` by `key_id`."""
    return _verify_audit(ring, key_id, _VERIFIED_DOMAIN + message, signature)


_KIT_CHECK_DOMAIN = b"allocator/kit-check/v1|"


def sign_kit_check(ring: KeyRing, message: bytes) -> CheckpointSignature:
    """Ed25519 signature over the kept result of a whole check of a trial's kit histories (issue
    21). Its own domain tag: it never passes for any other signature of the audit key."""
    return _sign_audit(ring, _KIT_CHECK_DOMAIN + message)


def verify_kit_check(ring: KeyRing, key_id: str, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid signature of a kept kit check `message` by `key_id`."""
    return _verify_audit(ring, key_id, _KIT_CHECK_DOMAIN + message, signature)


_MANIFEST_DOMAIN = b"allocator/manifest/v1|"


def sign_manifest(ring: KeyRing, message: bytes) -> CheckpointSignature:
    """Ed25519 signature, with the audit key, over the manifest of an export or an archive (DIB-07).
    Its own domain tag: a manifest signature never passes for a checkpoint or a head, nor the reverse."""
    return _sign_audit(ring, _MANIFEST_DOMAIN + message)


def verify_manifest_public(public_key_pem: str, message: bytes, signature: bytes) -> bool:
    """Check a manifest signature with a public key alone (no key directory): for `export verify`
    and `archive verify` on a machine that holds no secret."""
    return _verify_public(public_key_pem, _MANIFEST_DOMAIN + message, signature)


def verify_checkpoint_public(public_key_pem: str, message: bytes, signature: bytes) -> bool:
    """`verify_checkpoint` with a public key alone (an archived audit chain, DIB-05)."""
    return _verify_public(public_key_pem, _CHECKPOINT_DOMAIN + message, signature)


def verify_head_public(public_key_pem: str, message: bytes, signature: bytes) -> bool:
    """`verify_head` with a public key alone (an archived audit chain, DIB-05)."""
    return _verify_public(public_key_pem, _HEAD_DOMAIN + message, signature)


def _verify_public(public_key_pem: str, message: bytes, signature: bytes) -> bool:
    try:
        public = load_pem_public_key(public_key_pem.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        return False
    if not isinstance(public, Ed25519PublicKey):
        return False
    return _verify_ed25519(public, message, signature)


def audit_public_keys_pem(ring: KeyRing) -> dict[str, str]:
    """Every audit key's public half by key id (old keys included: they verify old checkpoints)."""
    out = {}
    for key in ring.keyset(Purpose.AUDIT).keys.values():
        _, public = _ed25519_keys(key.material)
        out[key.key_id] = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")
    return out


@functools.lru_cache(maxsize=16)
def _ed25519_keys(material: bytes) -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    """The key objects of an audit key, derived once per process (issue 21: a verification of the
    chain checks thousands of signatures, and deriving the public half each time cost as much as
    the check). Keyed by the material the ring already holds in memory; a handful of keys at most."""
    private = Ed25519PrivateKey.from_private_bytes(material)
    return private, private.public_key()


def _sign_audit(ring: KeyRing, message: bytes) -> CheckpointSignature:
    key = ring.keyset(Purpose.AUDIT).active
    private, _ = _ed25519_keys(key.material)
    return CheckpointSignature(key_id=key.key_id, signature=private.sign(message))


def _verify_audit(ring: KeyRing, key_id: str, message: bytes, signature: bytes) -> bool:
    key = ring.keyset(Purpose.AUDIT).get(key_id)
    _, public = _ed25519_keys(key.material)
    return _verify_ed25519(public, message, signature)


def audit_public_key_pem(ring: KeyRing) -> str:
    """The public half of the active audit key, for verifiers outside the service."""
    key = ring.keyset(Purpose.AUDIT).active
    _, public = _ed25519_keys(key.material)
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def _verify_ed25519(public: Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- passwords (ACC-03) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordHashing:
    """Argon2id parameters. RFC 9106's second recommended option by default (t=3, m=64 MiB, p=4)."""

    time_cost: int = 3
    memory_cost_kib: int = 64 * 1024
    parallelism: int = 4

    def hasher(self) -> PasswordHasher:
        return PasswordHasher(
            time_cost=self.time_cost, memory_cost=self.memory_cost_kib, parallelism=self.parallelism
        )


# Cheap parameters for the test suite only; the hash records its own parameters, so verification
# works whatever profile produced it.
FAST_PASSWORD_HASHING = PasswordHashing(time_cost=1, memory_cost_kib=8, parallelism=1)


def hash_password(password: str, params: PasswordHashing) -> str:
    return params.hasher().hash(password)


def verify_password(password_hash: str, password: str, params: PasswordHashing) -> bool:
    """Constant-time verification. False for a mismatch or an unreadable hash, never an exception."""
    try:
        return params.hasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str, params: PasswordHashing) -> bool:
    try:
        return params.hasher().check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


# --- TOTP (RFC 6238; ACC-04) -----------------------------------------------------------------

TOTP_DIGITS = 6
TOTP_STEP = 30
# What may surround a typed or pasted code and is ignored: the white space `str.strip()` removes,
# less the control characters (VT, FF, U+001C-U+001F, U+0085) that the API refuses in any body
# (allocator/web/hygiene.py). The OpenAPI document states the same pattern (TOTP_CODE_PATTERN).
TOTP_SPACES = "\t\n\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TOTP_CODE_PATTERN = f"^[{TOTP_SPACES}]*([0-9]{{{TOTP_DIGITS}}})[{TOTP_SPACES}]*$"
_TOTP_CODE = re.compile(TOTP_CODE_PATTERN)


def totp_code(text: str) -> str | None:
    """The six ASCII digits of a typed code (spaces around it ignored), or None when `text` is not
    one. Only ASCII digits: `str.isdigit()` also admits "²" or Arabic-Indic digits, which the TOTP
    check cannot encode (a 500 before issue 14's longer fuzz run)."""
    match = _TOTP_CODE.fullmatch(text)
    return match.group(1) if match else None


def new_totp_secret() -> bytes:
    return secrets.token_bytes(20)  # 160 bits, RFC 4226's recommendation


def _totp(secret: bytes) -> TOTP:
    return TOTP(secret, TOTP_DIGITS, hashes.SHA1(), TOTP_STEP)  # noqa: S303 - SHA-1 is RFC 6238's default and what authenticator apps support


def totp_now(secret: bytes, at: datetime) -> str:
    return _totp(secret).generate(int(at.timestamp())).decode("ascii")


def totp_verify(secret: bytes, code: str, at: datetime, *, last_step: int | None) -> int | None:
    """Check `code` at `at`, allowing one step of clock drift either way.

    Returns the accepted time step, or None. A step at or before `last_step` is refused so that a
    code cannot be replayed (RFC 6238 §5.2).
    """
    digits = totp_code(code)
    if digits is None:
        return None
    now_step = int(at.timestamp()) // TOTP_STEP
    otp = _totp(secret)
    for step in (now_step - 1, now_step, now_step + 1):
        if last_step is not None and step <= last_step:
            continue
        try:
            otp.verify(digits.encode("ascii"), step * TOTP_STEP)
        except InvalidToken:
            continue
        return step
    return None


def totp_uri(secret: bytes, account: str, issuer: str) -> str:
    return _totp(secret).get_provisioning_uri(account, issuer)


# --- files handed to a person (OpenSSL-compatible passphrase encryption) ---------------------

OPENSSL_ITERATIONS = 600_000


def encrypt_for_download(plaintext: bytes, passphrase: str) -> bytes:
    """Encrypt a file for one person with a passphrase they chose, in the format of
    `openssl enc -aes-256-cbc -pbkdf2 -md sha256 -iter 600000` ("Salted__", 8-byte salt, AES-256-CBC
    with PKCS#7 padding, key and IV from PBKDF2-HMAC-SHA256). The recipient opens it with standard
    tools, no allocator needed:

        openssl enc -d -aes-256-cbc -pbkdf2 -md sha256 -iter 600000 -in FILE.enc -out FILE
    """
    from cryptography.hazmat.primitives import padding  # noqa: PLC0415 - only downloads need it
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC  # noqa: PLC0415

    salt = secrets.token_bytes(8)
    derived = PBKDF2HMAC(hashes.SHA256(), 48, salt, OPENSSL_ITERATIONS).derive(passphrase.encode("utf-8"))
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(derived[:32]), modes.CBC(derived[32:])).encryptor()
    return b"Salted__" + salt + encryptor.update(padded) + encryptor.finalize()


def decrypt_download(blob: bytes, passphrase: str) -> bytes:
    """The inverse of `encrypt_for_download` (for tests and for `allocator` users without openssl)."""
    from cryptography.hazmat.primitives import padding  # noqa: PLC0415
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC  # noqa: PLC0415

    if blob[:8] != b"Salted__":
        raise SealError("not an allocator download (no OpenSSL salt header)")
    derived = PBKDF2HMAC(hashes.SHA256(), 48, blob[8:16], OPENSSL_ITERATIONS).derive(
        passphrase.encode("utf-8")
    )
    decryptor = Cipher(algorithms.AES(derived[:32]), modes.CBC(derived[32:])).decryptor()
    padded = decryptor.update(blob[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise SealError("wrong passphrase, or the file was altered") from None
