"""Every domain event says whether it changes cached credentials: a new event cannot silently skip
the invalidation that keeps a revoked key refused everywhere (SPEC section 3)."""

from __future__ import annotations

import importlib
import pkgutil

from eventsourcing.domain import CanMutateAggregate

import domain
from domain.application import CREDENTIAL_EVENTS, EVENT_CLASSES
from domain.effects import LIBRARY_BASES, declared
from domain.imports import SecretClaim
from domain.keys import ApiKey
from domain.workspace import Workspace


def all_domain_event_classes() -> set[type]:
    """Every event class defined in the domain package, found by walking subclasses (not a list kept by hand)."""
    for module in pkgutil.iter_modules(domain.__path__):
        importlib.import_module(f"domain.{module.name}")
    found: set[type] = set()
    pending: list[type] = [CanMutateAggregate]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith("domain.") and "." in sub.__qualname__ and sub.__name__ not in LIBRARY_BASES:
                found.add(sub)
    return found


def test_every_domain_event_declares_whether_it_changes_credentials():
    events = all_domain_event_classes()

    undeclared = sorted(c.__qualname__ for c in events if declared(c) is None)

    assert len(events) >= 10
    assert undeclared == [], f"declare @credentials(changes=...) on {undeclared} (domain/effects.py)"


def test_the_applications_event_list_is_every_domain_event():
    assert {c.__qualname__ for c in EVENT_CLASSES} == {c.__qualname__ for c in all_domain_event_classes()}


def test_the_credential_changing_events_are_the_lifecycle_and_plan_changes():  # update when events are added
    assert set(CREDENTIAL_EVENTS) == {
        ApiKey.KeyIssued,
        ApiKey.ScopesGranted,
        ApiKey.ScopesRevoked,
        ApiKey.KeyRotated,
        ApiKey.KeyRevoked,
        ApiKey.ScopesSet,
        ApiKey.KeySuspended,
        ApiKey.KeyResumed,
        ApiKey.KeyDetailsChanged,
        ApiKey.KeyLimitsSet,
        ApiKey.KeyLimitsCleared,
        ApiKey.CreditsSet,
        ApiKey.KeyImported,
        SecretClaim.SecretClaimed,
        Workspace.PlanChanged,
    }
