"""What the HTTP layer needs from the process it runs in, as the composition root hands it over.

`keyledger.services.Services` provides it; the API never imports the composition root
(nor reads settings): the layers are checked by `lint-imports`.
"""

from __future__ import annotations

from typing import Any, Protocol

from adapters.auditchain.auditlog import AuditLog
from adapters.quotas import QuotaGate
from adapters.webhooks.dispatcher import Webhooks
from api.metrics import Metrics
from api.verification import VerificationService
from domain.application import KeyLedger
from projections import ReadModels


class Services(Protocol):
    ledger: KeyLedger
    read_models: ReadModels
    webhooks: Webhooks
    operator_digest: str
    ready: bool
    audit: AuditLog

    @property
    def verification(self) -> VerificationService: ...

    @property
    def quotas(self) -> QuotaGate: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def insufficient_scope_status(self) -> int: ...

    def readiness(self) -> dict[str, Any]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...
