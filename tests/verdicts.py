"""A presented secret judged from the store alone, as a process started afresh would judge it (no cache)."""

from __future__ import annotations

from domain import credentials
from domain.application import KeyLedger
from domain.errors import KeyNotFound, MalformedSecret
from domain.verification import VerifyCode, check_credentials


def store_verdict(ledger: KeyLedger, secret: str, needed_scope: str | None = None) -> VerifyCode:
    try:
        key = ledger.get_key(credentials.key_id_of(secret))
    except (MalformedSecret, KeyNotFound):
        return VerifyCode.NOT_FOUND
    needed = ledger.catalog.parse(needed_scope) if needed_scope is not None else None
    return check_credentials(key.credentials(ledger.catalog), credentials.digest(secret), needed, ledger.clock())
