"""What a read model gives the runner: its tables per generation, and `fold` + `write` for events."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Connection

Positioned = tuple[int, Any]  # (notification id, decoded domain event)
Tables = Mapping[str, Table]
T = TypeVar("T")
P = TypeVar("P")


class Projection(ABC, Generic[P]):
    """A read model: tables named `kl_<table>_g<generation>`, filled by folding events into pending changes
    that `write` stores. Raise VERSION when the tables or their rows' meaning change: it is then rebuilt."""

    name: ClassVar[str]
    VERSION: ClassVar[int]
    event_types: ClassVar[tuple[type, ...]]  # what `fold` is given (subclasses too); a rebuild decodes only those

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
        """The generation's tables, keyed by a short name (secondary indexes are built after a rebuild's load)."""

    @abstractmethod
    def fold(self, conn: Connection, tables: Tables, pending: P | None, events: Sequence[Positioned]) -> P:
        """Add events (in stream order) to the pending changes (None: new ones); `conn` reads what is written."""

    @abstractmethod
    def pending_size(self, pending: P) -> int:
        """About how many rows `write` would write: bounds the memory a bulk rebuild holds."""

    @abstractmethod
    def write(self, conn: Connection, tables: Tables, pending: P) -> None:
        """Write the pending changes, inside the caller's transaction."""


class Queries:
    """Queries of a read model, next to it; `ReadModels` inherits them and runs each on the active generation."""

    def _read(self, name: str, query: Callable[[Connection, Tables], T]) -> T:
        raise NotImplementedError
