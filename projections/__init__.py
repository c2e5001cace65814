"""Read models (current keys, quota usage, audit history) kept caught up with the event stream.

May import: `domain` and third-party libraries. Never `adapters`, `api`, `keyledger` or `scripts`
(checked by `lint-imports`); where the read models live is handed in (`projections.db.DatabaseSettings`).
"""

from projections.audit import AuditEntry
from projections.errors import ProjectionNotReady, RebuildInProgress, UnknownProjection
from projections.service import ProjectionStatus, ReadModels
from projections.usage import KeyUsage, UsageBucket

__all__ = [
    "AuditEntry",
    "KeyUsage",
    "ProjectionNotReady",
    "ProjectionStatus",
    "ReadModels",
    "RebuildInProgress",
    "UnknownProjection",
    "UsageBucket",
]
