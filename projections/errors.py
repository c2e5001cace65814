"""Errors of the read models."""

from __future__ import annotations

from domain.errors import Conflict, InvalidInput


class ProjectionNotReady(Exception):
    """A read model has no generation this code can read (not built yet, or built by newer code)."""


class ProjectionFailed(Exception):
    """A read model cannot apply an event of the stream (reported in status; retried)."""


class UnknownProjection(InvalidInput):
    title = "Unknown projection"


class RebuildInProgress(Conflict):
    title = "Rebuild in progress"


class TrackingConflict(Exception):
    """A position did not advance from where this writer read it: the whole transaction rolls back.

    The read-model analogue of the library's tracking IntegrityError: it is what keeps
    a batch from being applied twice when two writers race.
    """
