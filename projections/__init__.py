"""Read models (current keys, quota usage, audit history) kept caught up with the event stream."""

from projections.audit import AuditEntry
from projections.errors import ProjectionNotReady, RebuildInProgress, UnknownProjection
from projections.service import ProjectionStatus, ReadModels
from projections.usage import KeyUsage, UsageBucket
from projections.usage_buffer import UsageRecorder

__all__ = [
    "AuditEntry",
    "KeyUsage",
    "ProjectionNotReady",
    "ProjectionStatus",
    "ReadModels",
    "RebuildInProgress",
    "UnknownProjection",
    "UsageBucket",
    "UsageRecorder",
]
