"""What every read model provides to the runner: its tables per generation and a batch `apply`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Connection

# (notification id, decoded domain event)
Positioned = tuple[int, Any]
Tables = Mapping[str, Table]

T = TypeVar("T")


class Projection(ABC):
    """A read model: tables named `kl_<table>_g<generation>`, filled from the event stream in batches.

    Raise VERSION when the tables or the meaning of their rows change: the
    projection is then rebuilt into a new generation (see `projections.runner`).
    """

    name: ClassVar[str]
    VERSION: ClassVar[int]

    def __init__(self) -> None:
        self._tables: dict[int, Tables] = {}

    def tables(self, generation: int) -> Tables:
        if generation not in self._tables:
            self._tables[generation] = self.define_tables(MetaData(), generation)
        return self._tables[generation]

    def forget(self, generation: int) -> None:
        self._tables.pop(generation, None)

    @abstractmethod
    def define_tables(self, metadata: MetaData, generation: int) -> Tables:
        """The generation's tables, keyed by a short name."""

    @abstractmethod
    def handles(self, event: Any) -> bool:
        """Whether `apply` wants this event (every event still advances the position)."""

    @abstractmethod
    def apply(self, conn: Connection, tables: Tables, events: Sequence[Positioned]) -> None:
        """Write the rows for a batch of events, in stream order, inside the caller's transaction."""


def table_name(short: str, generation: int) -> str:
    return f"kl_{short}_g{generation}"


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Keeps `IN (...)` lists well under every backend's bound-parameter limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
