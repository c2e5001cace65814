"""Read models (current keys, quota usage, audit history) kept caught up with the event stream.

May import: `domain`, the database adapters (`adapters.database`, `adapters.rows`) and third-party libraries.
Never `api`, `keyledger` or `scripts` (checked by `lint-imports`); where the read models live is handed in
(`adapters.database.DatabaseSettings`).
"""

from projections.audit import AuditEntry as AuditEntry
from projections.errors import ProjectionNotReady as ProjectionNotReady
from projections.errors import RebuildInProgress as RebuildInProgress
from projections.errors import UnknownProjection as UnknownProjection
from projections.service import ProjectionStatus as ProjectionStatus
from projections.service import ReadModels as ReadModels
