"""Errors of the read models."""

from domain.errors import Conflict, InvalidInput


class ProjectionNotReady(Exception):
    """A read model has no generation this code can read (not built yet, or built by newer code)."""


class ProjectionFailed(Exception):
    """A read model cannot apply an event of the stream (reported in status; retried)."""


class TrackingConflict(Exception):
    """A position moved since its writer read it: the transaction rolls back, so no batch is applied twice."""


class UnknownProjection(InvalidInput):
    title = "Unknown projection"


class RebuildInProgress(Conflict):
    title = "Rebuild in progress"
