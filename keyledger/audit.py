"""The verifiable audit log of this process: its signing key from settings, over the opened store."""

from __future__ import annotations

import base64
import binascii
import logging
import os
from pathlib import Path

from adapters.auditchain.auditlog import AuditLog, TreeReader
from adapters.auditchain.checkpoints import Signer
from domain.application import KeyLedger
from domain.errors import InvalidInput
from keyledger.settings import Settings

log = logging.getLogger(__name__)

SETTING = "KEYLEDGER_AUDIT_SIGNING_KEY"
POSTGRES_DEFAULT_KEY = Path("keyledger-audit-signing.key")


def default_key_path(settings: Settings) -> Path | None:
    """Where the key is kept when the setting is unset: beside the SQLite file (None: in memory only)."""
    if settings.is_postgres:
        return POSTGRES_DEFAULT_KEY
    database = settings.url.database or ""
    if database in ("", ":memory:"):
        return None
    return Path(database).with_name(Path(database).name + ".audit-signing.key")


def load_signer(settings: Settings) -> Signer:
    if settings.audit_signing_key is not None:
        return Signer.from_setting(settings.audit_signing_key.get_secret_value(), SETTING)
    path = default_key_path(settings)
    if path is None:
        return Signer.from_seed(os.urandom(32))  # an in-memory store: its checkpoints live as long as it
    if settings.is_postgres and not path.exists():
        log.warning("%s is not set: keeping the audit signing key in %s", SETTING, path.resolve())
    return Signer.from_file(path, SETTING)


def configured_public_key(settings: Settings) -> bytes | None:
    """The public half of the configured signing key, if it exists (never creates one)."""
    value = settings.audit_signing_key.get_secret_value() if settings.audit_signing_key else None
    path = default_key_path(settings) if value is None else None
    if value is not None:
        try:
            return Signer.from_seed(base64.b64decode(value.strip(), validate=True)).public_key
        except (binascii.Error, ValueError):
            path = Path(value)
    if path is None or not path.is_file():
        return None
    return Signer.from_file(path, SETTING).public_key


def open_audit_log(settings: Settings, ledger: KeyLedger, signing: bool = True) -> AuditLog:
    """The audit log over the ledger's store; `signing=False` for readers (no key is read or made)."""
    recorder = ledger.recorder
    if not isinstance(recorder, TreeReader):
        raise InvalidInput("this store's recorder keeps no audit tree")
    return AuditLog(recorder, load_signer(settings) if signing else None, ledger.clock)
