"""Signed tree heads (checkpoints): Ed25519 over the C2SP tlog-checkpoint body.

    <origin>\\n<tree_size>\\n<base64 root hash>\\n<timestamp>\\n

signed with the key from KEYLEDGER_AUDIT_SIGNING_KEY (or generated beside the store).
Nothing here touches the store: `auditlog` reads and writes checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from adapters.auditchain.merkle import HASH_SIZE
from domain.errors import InvalidInput

ALGORITHM = "Ed25519"
KEY_SIZE = 32


class CheckpointError(InvalidInput):
    """A checkpoint or public key that cannot be read."""

    title = "Invalid checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: str  # RFC 3339 UTC, exactly as signed
    signature: bytes

    def body(self) -> bytes:
        return signed_body(self.origin, self.tree_size, self.root_hash, self.timestamp)

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": self.timestamp,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, document: object) -> Checkpoint:
        if not isinstance(document, dict):
            raise CheckpointError("a checkpoint is a JSON object {origin, tree_size, root_hash, timestamp, signature}")
        try:
            origin, size, timestamp = document["origin"], document["tree_size"], document["timestamp"]
            root = bytes.fromhex(document["root_hash"])
            signature = base64.b64decode(document["signature"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise CheckpointError(
                "a checkpoint needs origin, tree_size, root_hash (hex), timestamp, signature"
            ) from None
        if not isinstance(origin, str) or not isinstance(timestamp, str) or "\n" in origin + timestamp:
            raise CheckpointError("a checkpoint's origin and timestamp are one-line strings")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or len(root) != HASH_SIZE:
            raise CheckpointError("a checkpoint's tree_size is a count and its root_hash 32 bytes")
        return cls(origin, size, root, timestamp, signature)

    def verify(self, public_key: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(self.signature, self.body())
        except (InvalidSignature, ValueError):
            return False
        return True


def signed_body(origin: str, tree_size: int, root_hash: bytes, timestamp: str) -> bytes:
    root = base64.b64encode(root_hash).decode("ascii")
    return f"{origin}\n{tree_size}\n{root}\n{timestamp}\n".encode()


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of a public key given as base64 (as /v1/audit/public-key answers) or a file holding it."""
    candidate = text.strip()
    path = Path(candidate)
    if len(candidate) < 200 and path.is_file():
        candidate = path.read_text(encoding="utf-8").strip()
        with contextlib.suppress(ValueError, KeyError, TypeError):  # /v1/audit/public-key's answer, as saved
            candidate = str(json.loads(candidate)["public_key"])
    try:
        raw = base64.b64decode(candidate, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_SIZE:
        raise CheckpointError("the public key must be the base64 of 32 bytes (GET /v1/audit/public-key)")
    return raw


class Signer:
    """The log's Ed25519 key; the origin line names the log by its public key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.origin = "keyledger/" + hashlib.sha256(self.public_key).hexdigest()[:16]

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"Signer({self.origin})"

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode("ascii")

    def sign(self, tree_size: int, root_hash: bytes, timestamp: str) -> Checkpoint:
        signature = self._key.sign(signed_body(self.origin, tree_size, root_hash, timestamp))
        return Checkpoint(self.origin, tree_size, root_hash, timestamp, signature)

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_setting(cls, value: str, what: str) -> Signer:
        """`value` is the base64 of a 32-byte private key, or a file path: read, or created (mode 0600) if missing."""
        try:
            seed = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            seed = b""
        if len(seed) == KEY_SIZE:
            return cls.from_seed(seed)
        return cls.from_file(Path(value), what)

    @classmethod
    def from_file(cls, path: Path, what: str) -> Signer:
        try:
            return cls.from_seed(_read_written_key_file(path, what))
        except FileNotFoundError:
            pass
        seed = os.urandom(KEY_SIZE)
        try:
            # O_EXCL: two processes starting together keep the first one's key.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls.from_seed(_read_written_key_file(path, what))
        except OSError as error:
            raise InvalidInput(f"{what}: cannot create the audit signing key {path}: {error.strerror}") from None
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(base64.b64encode(seed).decode("ascii") + "\n")
        return cls.from_seed(seed)


def _read_written_key_file(path: Path, what: str) -> bytes:
    """The key file, which another process may have created and not yet written (both starting at once)."""
    for _ in range(50):
        if path.stat().st_size:
            break
        time.sleep(0.02)
    return _read_key_file(path, what)


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise InvalidInput(f"{what}: cannot read the audit signing key {path}: {error.strerror}") from None
    if text.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(text, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidInput(f"{what}: {path} holds no Ed25519 private key")
        return key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    try:
        seed = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != KEY_SIZE:
        raise InvalidInput(f"{what}: {path} must hold the base64 of a 32-byte Ed25519 private key, or a PEM key")
    return seed
