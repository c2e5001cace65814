"""Secrets: generation, format and checksum, and the one-way digest kept instead.

A secret reads `kl_<key id><random><checksum>`, all base62:
- the key id (22 chars) makes finding the key a direct lookup, never a scan;
- 32 random bytes (43 chars) give 256 bits of randomness;
- a CRC32 of everything before it (6 chars) lets a mistyped or truncated
  secret be refused without touching any store, and lets secret scanners
  recognise leaked keys with few false positives.

Only `digest(secret)` (SHA-256) is ever stored. Because a secret carries 256
bits of randomness, a fast hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets as _random
import zlib
from uuid import UUID

from domain.errors import MalformedSecret

PREFIX = "kl_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_ID_LEN = 22  # 62**22 > 2**128
_RANDOM_BYTES = 32
_RANDOM_LEN = 43  # 62**43 > 2**256
_CHECK_LEN = 6  # 62**6 > 2**32
SECRET_LENGTH = len(PREFIX) + _ID_LEN + _RANDOM_LEN + _CHECK_LEN
_SECRET_RE = re.compile(PREFIX + "[0-9A-Za-z]{%d}" % (SECRET_LENGTH - len(PREFIX)))  # noqa: UP031


def _encode(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    if number:
        raise ValueError("number does not fit the width")
    return "".join(reversed(chars))


def _decode(text: str) -> int:
    number = 0
    for char in text:
        number = number * 62 + _INDEX[char]
    return number


def _checksum(body: str) -> str:
    return _encode(zlib.crc32(body.encode("ascii")), _CHECK_LEN)


def generate_secret(key_id: UUID) -> str:
    """A new secret for the key. Call outside event bodies: it is random."""
    randomness = int.from_bytes(_random.token_bytes(_RANDOM_BYTES), "big")
    body = PREFIX + _encode(key_id.int, _ID_LEN) + _encode(randomness, _RANDOM_LEN)
    return body + _checksum(body)


def key_id_of(secret: str) -> UUID:
    """The key id a well-formed secret names; MalformedSecret without any lookup otherwise."""
    if not isinstance(secret, str) or _SECRET_RE.fullmatch(secret) is None:
        raise MalformedSecret("the presented key is not a keyledger secret")
    rest = secret[len(PREFIX) :]
    body, check = secret[:-_CHECK_LEN], secret[-_CHECK_LEN:]
    if not hmac.compare_digest(_checksum(body), check):
        raise MalformedSecret("the presented key fails its checksum")
    key_int = _decode(rest[:_ID_LEN])
    if key_int >= 1 << 128:
        raise MalformedSecret("the presented key is not a keyledger secret")
    return UUID(int=key_int)


def digest(secret: str) -> str:
    """The one-way digest stored in place of a secret (hex SHA-256)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def fingerprint(secret_digest: str) -> str:
    """A short public label for a secret, derived from its digest but not revealing it.

    Auditors see which secret was valid when without ever seeing a digest.
    """
    return "fp_" + hashlib.sha256(b"keyledger-fingerprint:" + secret_digest.encode()).hexdigest()[:16]


def digests_match(a: str, b: str | None) -> bool:
    return b is not None and hmac.compare_digest(a, b)
