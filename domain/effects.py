"""What a saved event changes outside its aggregate, declared on the event class itself.

A verifier caches each key's credentials and its workspace's limits; an event that changes
either must make every process drop that cache entry before the command answers (SPEC 3).
Every event class says whether it does, explicitly (`tests/unit/test_event_declarations.py`
fails for one that says nothing), and everything that needs the answer (the application's
after-save effects, the follower of other writers' changes) reads it from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

E = TypeVar("E", bound=type)

DECLARATION = "changes_credentials"


def credentials(*, changes: bool) -> Callable[[E], E]:
    """Class decorator: whether events of this class change cached credentials or limits."""

    def declare(cls: E) -> E:
        setattr(cls, DECLARATION, changes)
        return cls

    return declare


def declared(event_class: type) -> bool | None:
    """The class's declaration, or None when it has none.

    Looked up through the class's bases: the library redefines a nested event class as a
    subclass of the one written (adding the aggregate's `Event` base), keeping its attributes.
    """
    value = getattr(event_class, DECLARATION, None)
    return value if isinstance(value, bool) else None


def changes_credentials(event: Any) -> bool:
    return bool(getattr(type(event), DECLARATION, False))


# The bases the library gives every aggregate; no event of ours is stored as one of them.
LIBRARY_BASES = frozenset({"Event", "Created"})


def event_classes(aggregates: Iterable[type]) -> list[type]:
    """The event classes nested in these aggregate classes (those the store can hold)."""
    found: list[type] = []
    for aggregate in aggregates:
        event_base = aggregate.Event  # type: ignore[attr-defined]
        for name, value in vars(aggregate).items():
            if isinstance(value, type) and issubclass(value, event_base) and name not in LIBRARY_BASES:
                found.append(value)
    return found
