from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from domain.application import KeyLedger
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings

AUDIT_KEY = "audit-key-for-tests-0123456789abcdef0123456789abcdef"


@pytest.fixture
def audit_settings(settings: Settings) -> Settings:
    """The backend-parametrised store, with the audit chain switched on."""
    return settings.model_copy(update={"audit_key": SecretStr(AUDIT_KEY)})


@pytest.fixture
def audited(audit_settings: Settings) -> Iterator[KeyLedger]:
    app = open_ledger(audit_settings)
    try:
        yield app
    finally:
        app.close()
