"""Webhook signing secrets: derived, never stored (SPEC 8.3 shows each once, at creation).

secret = `whsec_` + base64(HMAC-SHA256(master key, webhook id)). The master key comes from
`KEYLEDGER_WEBHOOK_KEY`, or else from a file generated once with mode 0600
(`KEYLEDGER_WEBHOOK_KEY_FILE`); every process delivering for a database must use the same one.
Neither events nor read models hold anything that gives the secret back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from uuid import UUID

from domain.errors import InvalidInput

PREFIX = "whsec_"
MIN_KEY_LENGTH = 32


def load_master_key(configured: str | None, path: Path) -> bytes:
    """The configured key, else the file's (created, 0600, by whichever process comes first)."""
    if configured:
        return configured.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32) + "\n")
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    for _ in range(50):  # another process may have created it and not written it yet
        key = path.read_text().strip()
        if key:
            if len(key) < MIN_KEY_LENGTH:
                raise InvalidInput(f"the webhook key file {path} holds fewer than {MIN_KEY_LENGTH} characters")
            return key.encode()
        time.sleep(0.02)
    raise InvalidInput(f"the webhook key file {path} is empty")


def webhook_secret(master_key: bytes, webhook_id: UUID) -> str:
    digest = hmac.new(master_key, b"keyledger-webhook:" + webhook_id.bytes, hashlib.sha256).digest()
    return PREFIX + base64.b64encode(digest).decode()
