"""Scopes: parsing, validation against a resource catalog, and their closure.

A scope is `read:<resource>`, `write:<resource>` or `admin`. Effective
permissions are the union of granted scopes closed under two rules:
`write:R` includes `read:R`, and `admin` includes everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from domain.errors import MalformedScope, UnknownResource
from domain.text import excerpt

ADMIN = "admin"
ACTIONS = ("read", "write")
DEFAULT_RESOURCES = ("nodes", "edges", "livedata", "events")
# keyledger's own audit endpoints need `read:events`, so the resource exists in every catalog.
AUDIT_RESOURCE = "events"
MAX_SCOPES_PER_KEY = 10

_SCOPE_RE = re.compile(r"^(read|write):([a-z][a-z0-9_-]{0,62})$")
_RESOURCE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class ScopeCatalog:
    """The resources a deployment knows. Scopes naming other resources are refused."""

    resources: tuple[str, ...] = DEFAULT_RESOURCES

    @classmethod
    def of(cls, resources: Iterable[str]) -> ScopeCatalog:
        names: list[str] = []
        for raw in resources:
            name = raw.strip()
            if not _RESOURCE_RE.match(name):
                raise UnknownResource(f"resource name {raw!r} must match {_RESOURCE_RE.pattern}")
            if name not in names:
                names.append(name)
        if AUDIT_RESOURCE not in names:
            names.append(AUDIT_RESOURCE)
        return cls(tuple(names))

    def parse(self, scope: str) -> str:
        """Return the canonical scope, or raise MalformedScope / UnknownResource."""
        if not isinstance(scope, str):
            raise MalformedScope("a scope must be a string")
        if scope == ADMIN:
            return ADMIN
        match = _SCOPE_RE.match(scope)
        if match is None:
            raise MalformedScope(
                f"scope {excerpt(scope, 80)!r} is malformed: expected 'read:<resource>', 'write:<resource>' or 'admin'"
            )
        resource = match.group(2)
        if resource not in self.resources:
            raise UnknownResource(
                f"scope {scope!r} names unknown resource {resource!r}; known resources: {', '.join(self.resources)}"
            )
        return scope

    def parse_all(self, scopes: Iterable[str]) -> list[str]:
        """Parse every scope; duplicates collapse. Order is stable (sorted)."""
        return sorted({self.parse(s) for s in scopes})

    def all_scopes(self) -> frozenset[str]:
        return frozenset([ADMIN] + [f"{action}:{resource}" for action in ACTIONS for resource in self.resources])

    def effective(self, granted: Iterable[str]) -> frozenset[str]:
        """The closure of granted scopes under `write:R => read:R` and `admin => all` (as listed: the catalog's).

        A decision uses `has_scope`, where `admin` also covers scopes outside the catalog.
        """
        result: set[str] = set()
        for scope in granted:
            if scope == ADMIN:
                return self.all_scopes()
            result.add(scope)
            action, _, resource = scope.partition(":")
            if action == "write":
                result.add(f"read:{resource}")
        return frozenset(result)


def has_scope(effective_scopes: frozenset[str], needed: str) -> bool:
    """Whether effective scopes allow `needed`. `admin` includes every scope, even one outside the
    catalog that a gateway asks about (its resource is simply not one the catalog lists)."""
    return needed in effective_scopes or ADMIN in effective_scopes
