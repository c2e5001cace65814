"""The ApiKey aggregate: scopes, secrets (as digests), rotation, revocation, expiry.

Public methods check the rules and raise a named error before anything
changes; event `apply` methods only assign state, so replay is deterministic.
Secrets are generated and hashed by the caller: events carry digests only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.effects import credentials
from domain.errors import (
    InvalidExpiry,
    InvalidGracePeriod,
    InvalidInput,
    InvalidReason,
    KeyAlreadyRevoked,
    TooManyScopes,
)
from domain.keycredits import Credits, Refill, check_credits
from domain.keyinfo import check_owner_id, meta_text, parse_meta
from domain.keylimits import KeyLimits, check_key_limits, effective_limits
from domain.plans import Limits
from domain.scopes import ADMIN, MAX_SCOPES_PER_KEY, ScopeCatalog
from domain.text import MAX_REASON_LENGTH, check_text
from domain.timefmt import check_time
from domain.verification import KeyCredentials
from domain.workspace import check_name

KEY_STATUSES = ("active", "suspended", "expired", "revoked")
DEFAULT_GRACE_SECONDS = 86_400
MAX_GRACE_SECONDS = 86_400
ROTATION_DUE_AFTER = timedelta(days=90)


def check_grace(grace_seconds: int) -> int:
    if (
        isinstance(grace_seconds, bool)
        or not isinstance(grace_seconds, int)
        or not 0 <= grace_seconds <= MAX_GRACE_SECONDS
    ):
        raise InvalidGracePeriod(f"grace_seconds must be an integer from 0 to {MAX_GRACE_SECONDS}")
    return grace_seconds


def check_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    try:
        expires_at = check_time(expires_at, "expires_at")
    except InvalidInput as error:
        raise InvalidExpiry(str(error)) from None
    if expires_at <= now:
        raise InvalidExpiry("expires_at must be in the future")
    return expires_at


def check_scope_count(scopes: list[str]) -> None:
    if len(scopes) > MAX_SCOPES_PER_KEY:
        raise TooManyScopes(f"a key holds at most {MAX_SCOPES_PER_KEY} scopes; this change would give it {len(scopes)}")


@dataclass(frozen=True)
class KeyState:
    """A key as a reader sees it at one moment: no digest, no secret."""

    id: UUID
    workspace_id: UUID
    name: str
    status: str
    scopes: list[str]
    effective_scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    rotated_at: datetime | None
    previous_secret_valid_until: datetime | None
    revoked_at: datetime | None
    rotation_due: bool
    suspended_at: datetime | None = None
    meta: dict[str, Any] | None = None
    owner_id: str | None = None
    limits: KeyLimits | None = None  # when the plan was known to whoever asked
    credits: CreditsState | None = None  # usage-limited keys only
    imported: bool = False  # its first secret came from another system (found by digest)


@dataclass(frozen=True)
class CreditsState:
    """What remains (the API fills it in from its counters; as set, elsewhere) and the refill."""

    remaining: int
    refill: Refill | None
    generation: int  # which count the API's counters keep (domain.keycredits)
    period: str


class ApiKey(Aggregate):
    # Snapshots (and the keys read model's rows) of v1 keys lack the attributes added since.
    class_version = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        for attribute in (
            "suspended_at",
            "suspended_reason",
            "meta_json",
            "owner_id",
            "limit_per_minute",
            "limit_per_day",
            "credits_remaining",
            "refill_amount",
            "refill_interval",
            "credits_set_at",
            "credits_generation",
            "last_refill",
            "imported_digest",
        ):
            state.setdefault(attribute, None)

    class Event(Aggregate.Event):
        """Every key event names the key's workspace (from v2), so no reader has to look it up.

        Events stored by v1 code did not (KeyIssued always did): they read as None.
        """

        class_version = 2
        workspace_id: UUID | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.setdefault("workspace_id", None)

    @credentials(changes=True)
    class KeyIssued(Aggregate.Created):
        # Carried the workspace from the start. v2: `meta` (its JSON text) and `owner_id`.
        class_version = 2
        workspace_id: UUID
        name: str
        scopes: list[str]
        expires_at: datetime | None
        secret_digest: str
        actor: str
        meta: str | None
        owner_id: str | None
        credits_remaining: int | None
        refill_amount: int | None
        refill_interval: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            for field in ("meta", "owner_id", "credits_remaining", "refill_amount", "refill_interval"):
                state.setdefault(field, None)

    @credentials(changes=True)
    class KeyImported(KeyIssued):
        """Issued with a secret from another system (its digest only): found through that digest."""

        class_version = 1
        imported: bool

    @credentials(changes=True)
    class ScopesGranted(Event):
        scopes: list[str]
        actor: str

        def apply(self, key: ApiKey) -> None:
            key.scopes = sorted(set(key.scopes) | set(self.scopes))

    @credentials(changes=True)
    class ScopesRevoked(Event):
        scopes: list[str]
        actor: str

        def apply(self, key: ApiKey) -> None:
            key.scopes = sorted(set(key.scopes) - set(self.scopes))

    @credentials(changes=True)
    class KeyRotated(Event):
        # v2 records the moment the previous secret stops working, decided once at rotation.
        # v1 held only the requested grace_seconds, so every reader (key read model, audit
        # trail and export, verification) had to recompute timestamp + grace on its own.
        # v3 names the workspace, as every key event does.
        class_version = 3

        secret_digest: str
        grace_seconds: int
        previous_valid_until: datetime
        actor: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["previous_valid_until"] = state["timestamp"] + timedelta(seconds=state["grace_seconds"])

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state.setdefault("workspace_id", None)

        def apply(self, key: ApiKey) -> None:
            # Only one previous secret is honoured: the one this rotation replaces.
            key.previous_digest = key.secret_digest
            key.previous_valid_until = self.previous_valid_until
            key.secret_digest = self.secret_digest
            key.rotated_at = self.timestamp

    @credentials(changes=True)
    class ScopesSet(Event):
        """The granted set made exactly `scopes` in one change (SPEC 8.1 `PUT .../scopes`)."""

        class_version = 1  # new: no older form to upcast
        scopes: list[str]
        actor: str

        def apply(self, key: ApiKey) -> None:
            key.scopes = sorted(self.scopes)

    @credentials(changes=True)
    class KeySuspended(Event):
        """A reversible stop (SPEC 8.1): refused as SUSPENDED until resumed; its secrets are kept."""

        class_version = 1  # new in v2 of the key events: no older form to upcast
        reason: str | None
        actor: str

        def apply(self, key: ApiKey) -> None:
            key.suspended_at = self.timestamp
            key.suspended_reason = self.reason

    @credentials(changes=True)
    class KeyResumed(Event):
        class_version = 1
        actor: str

        def apply(self, key: ApiKey) -> None:
            key.suspended_at = None
            key.suspended_reason = None

    @credentials(changes=True)  # verify answers show the name, meta and owner
    class KeyDetailsChanged(Event):
        """`PATCH .../keys/{key}`: the key's name, meta (JSON text) and owner_id after the change."""

        class_version = 1
        name: str
        meta: str | None
        owner_id: str | None
        actor: str

        def apply(self, key: ApiKey) -> None:
            key.name = self.name
            key.meta_json = self.meta
            key.owner_id = self.owner_id

    @credentials(changes=True)
    class KeyLimitsSet(Event):
        """The key's own limits below its plan's (None: the plan's for that window)."""

        class_version = 1
        requests_per_minute: int | None
        requests_per_day: int | None
        actor: str

        def apply(self, key: ApiKey) -> None:
            key.limit_per_minute = self.requests_per_minute
            key.limit_per_day = self.requests_per_day

    @credentials(changes=True)
    class KeyLimitsCleared(Event):
        """The key is back to its plan's limits."""

        class_version = 1
        actor: str

        def apply(self, key: ApiKey) -> None:
            key.limit_per_minute = None
            key.limit_per_day = None

    @credentials(changes=True)
    class CreditsSet(Event):
        """`PUT .../credits`: what remains from now (a fresh count) and the refill, if any."""

        class_version = 1
        remaining: int
        refill_amount: int | None
        refill_interval: str | None
        actor: str

        def apply(self, key: ApiKey) -> None:
            key.credits_remaining = self.remaining
            key.refill_amount = self.refill_amount
            key.refill_interval = self.refill_interval
            key.credits_set_at = self.timestamp
            key.credits_generation = self.originator_version
            key.last_refill = None

    @credentials(changes=False)  # computed by every verifier from the clock; this only records it
    class CreditsRefilled(Event):
        """The first allowed answer of a new day or month found the credits refilled (domain.keycredits)."""

        class_version = 1
        period: str
        amount: int
        actor: str

        def apply(self, key: ApiKey) -> None:
            key.last_refill = self.period

    @credentials(changes=True)
    class KeyRevoked(Event):
        reason: str | None
        actor: str

        def apply(self, key: ApiKey) -> None:
            key.revoked_at = self.timestamp
            key.revoked_reason = self.reason

    def __init__(
        self,
        workspace_id: UUID,
        name: str,
        scopes: list[str],
        expires_at: datetime | None,
        secret_digest: str,
        actor: str,
        meta: str | None = None,
        owner_id: str | None = None,
        credits_remaining: int | None = None,
        refill_amount: int | None = None,
        refill_interval: str | None = None,
        imported: bool = False,
    ) -> None:
        self.workspace_id = workspace_id
        self.name = name
        self.scopes = sorted(scopes)
        self.expires_at = expires_at
        self.secret_digest = secret_digest
        self.previous_digest: str | None = None
        self.previous_valid_until: datetime | None = None
        self.rotated_at: datetime | None = None
        self.revoked_at: datetime | None = None
        self.revoked_reason: str | None = None
        self.suspended_at: datetime | None = None
        self.suspended_reason: str | None = None
        self.issued_by = actor
        self.meta_json = meta  # text, in snapshots too (domain.keyinfo)
        self.owner_id = owner_id
        self.limit_per_minute: int | None = None
        self.limit_per_day: int | None = None
        self.credits_remaining = credits_remaining
        self.refill_amount = refill_amount
        self.refill_interval = refill_interval
        self.credits_set_at: datetime | None = None  # None: at issue (created_on)
        self.credits_generation: int | None = 1 if credits_remaining is not None else None
        self.last_refill: str | None = None
        self.imported_digest = secret_digest if imported else None  # the verifier's index (domain.imports)

    @classmethod
    def issue(
        cls,
        key_id: UUID,
        workspace_id: UUID,
        name: str,
        scopes: list[str],
        secret_digest: str,
        actor: str,
        now: datetime,
        expires_at: datetime | None = None,
        meta: dict[str, Any] | None = None,
        owner_id: str | None = None,
        credits: tuple[int, int | None, str | None] | None = None,
    ) -> ApiKey:
        """Issue a key. `scopes` must already be parsed against the catalog; `credits`: remaining, refill amount
        and interval."""
        check_scope_count(scopes)
        if credits is not None:
            check_credits(*credits)
        remaining, refill_amount, refill_interval = credits or (None, None, None)
        return cls._create(
            cls.KeyIssued,
            id=key_id,
            workspace_id=workspace_id,
            name=check_name(name, "key name"),
            scopes=sorted(scopes),
            expires_at=check_expiry(expires_at, now),
            secret_digest=secret_digest,
            actor=actor,
            meta=meta_text(meta),
            owner_id=check_owner_id(owner_id),
            credits_remaining=remaining,
            refill_amount=refill_amount,
            refill_interval=refill_interval,
        )

    @classmethod
    def import_(
        cls,
        key_id: UUID,
        workspace_id: UUID,
        name: str,
        scopes: list[str],
        secret_digest: str,
        actor: str,
        now: datetime,
        expires_at: datetime | None = None,
        meta: dict[str, Any] | None = None,
        owner_id: str | None = None,
    ) -> ApiKey:
        """A key whose secret was issued elsewhere: `secret_digest` is from `domain.imports.import_digest`."""
        check_scope_count(scopes)
        return cls._create(
            cls.KeyImported,
            id=key_id,
            workspace_id=workspace_id,
            name=check_name(name, "key name"),
            scopes=sorted(scopes),
            expires_at=check_expiry(expires_at, now),
            secret_digest=secret_digest,
            actor=actor,
            meta=meta_text(meta),
            owner_id=check_owner_id(owner_id),
            credits_remaining=None,
            refill_amount=None,
            refill_interval=None,
            imported=True,
        )

    def __repr__(self) -> str:
        # Digests stay out of reprs, so a logged aggregate never shows one.
        return f"ApiKey(id={self.id}, workspace_id={self.workspace_id}, version={self.version})"

    # --- derived state ----------------------------------------------------

    @property
    def meta(self) -> dict[str, Any] | None:
        return parse_meta(self.meta_json)

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def secret_created_at(self) -> datetime:
        return self.rotated_at or self.created_on

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.suspended_at is not None:
            return "suspended"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def is_active_admin(self, now: datetime) -> bool:
        return ADMIN in self.scopes and self.status(now) == "active"

    def rotation_due(self, now: datetime) -> bool:
        return not self.is_revoked and now - self.secret_created_at > ROTATION_DUE_AFTER

    def previous_secret_valid_until(self, now: datetime) -> datetime | None:
        """When the previous secret stops, while it still works; None otherwise."""
        if self.previous_valid_until is not None and self.previous_valid_until > now:
            return self.previous_valid_until
        return None

    @property
    def credit_plan(self) -> Credits | None:
        if self.credits_remaining is None or self.credits_generation is None:
            return None
        refill = (
            Refill(self.refill_amount, self.refill_interval) if self.refill_amount and self.refill_interval else None
        )
        return Credits(self.credits_remaining, refill, self.credits_set_at or self.created_on, self.credits_generation)

    def limits(self, plan: Limits) -> KeyLimits:
        return effective_limits(plan, self.limit_per_minute, self.limit_per_day)

    def state(self, now: datetime, catalog: ScopeCatalog, plan: Limits | None = None) -> KeyState:
        return KeyState(
            id=self.id,
            workspace_id=self.workspace_id,
            name=self.name,
            status=self.status(now),
            scopes=list(self.scopes),
            effective_scopes=sorted(catalog.effective(self.scopes)),
            created_at=self.created_on,
            expires_at=self.expires_at,
            rotated_at=self.rotated_at,
            previous_secret_valid_until=self.previous_secret_valid_until(now),
            revoked_at=self.revoked_at,
            rotation_due=self.rotation_due(now),
            suspended_at=self.suspended_at,
            meta=self.meta,
            owner_id=self.owner_id,
            limits=self.limits(plan) if plan is not None else None,
            credits=self._credits_state(now),
            imported=self.imported_digest is not None,
        )

    def _credits_state(self, now: datetime) -> CreditsState | None:
        plan = self.credit_plan
        if plan is None:
            return None
        period = plan.period(now)
        return CreditsState(plan.allowance(period), plan.refill, plan.generation, period)

    def credentials(self, catalog: ScopeCatalog) -> KeyCredentials:
        return KeyCredentials(
            key_id=self.id,
            workspace_id=self.workspace_id,
            secret_digest=self.secret_digest,
            previous_digest=self.previous_digest,
            previous_valid_until=self.previous_valid_until,
            expires_at=self.expires_at,
            revoked=self.is_revoked,
            effective_scopes=catalog.effective(self.scopes),
            suspended=self.suspended_at is not None,
            credits=self.credit_plan,
        )

    # --- commands ---------------------------------------------------------

    def _check_not_revoked(self) -> None:
        if self.is_revoked:
            raise KeyAlreadyRevoked("the key is revoked; revocation is final")

    def grant(self, scopes: list[str], actor: str) -> bool:
        """Grant parsed scopes; returns False (recording nothing) when all are already held."""
        self._check_not_revoked()
        new = sorted(set(scopes) - set(self.scopes))
        if not new:
            return False
        check_scope_count(self.scopes + new)
        self.trigger_event(self.ScopesGranted, workspace_id=self.workspace_id, scopes=new, actor=actor)
        return True

    def revoke_scopes(self, scopes: list[str], actor: str) -> bool:
        """Revoke parsed scopes; returns False (recording nothing) when none is held."""
        self._check_not_revoked()
        held = sorted(set(scopes) & set(self.scopes))
        if not held:
            return False
        self.trigger_event(self.ScopesRevoked, workspace_id=self.workspace_id, scopes=held, actor=actor)
        return True

    def set_scopes(self, scopes: list[str], actor: str) -> bool:
        """Make the granted set exactly these parsed scopes; returns False (recording nothing) when it is already."""
        self._check_not_revoked()
        wanted = sorted(set(scopes))
        check_scope_count(wanted)
        if wanted == self.scopes:
            return False
        self.trigger_event(self.ScopesSet, workspace_id=self.workspace_id, scopes=wanted, actor=actor)
        return True

    def rotate(self, new_secret_digest: str, grace_seconds: int, actor: str) -> None:
        self._check_not_revoked()
        grace = check_grace(grace_seconds)
        now = self.KeyRotated.create_timestamp()
        self.trigger_event(
            self.KeyRotated,
            workspace_id=self.workspace_id,
            timestamp=now,
            secret_digest=new_secret_digest,
            grace_seconds=grace,
            previous_valid_until=now + timedelta(seconds=grace),
            actor=actor,
        )

    def suspend(self, reason: str | None, actor: str) -> bool:
        """Suspend the key; returns False (recording nothing) when it is suspended already."""
        self._check_not_revoked()
        if reason is not None:
            check_text(reason, "reason", MAX_REASON_LENGTH, error=InvalidReason, controls=True)
        if self.suspended_at is not None:
            return False
        self.trigger_event(self.KeySuspended, workspace_id=self.workspace_id, reason=reason, actor=actor)
        return True

    def resume(self, actor: str) -> bool:
        """Resume a suspended key; returns False (recording nothing) when it is not suspended."""
        self._check_not_revoked()
        if self.suspended_at is None:
            return False
        self.trigger_event(self.KeyResumed, workspace_id=self.workspace_id, actor=actor)
        return True

    def change_details(self, changes: dict[str, Any], actor: str) -> bool:
        """Change any of `name`, `meta`, `owner_id` (None clears the last two); False when nothing changes."""
        unknown = changes.keys() - {"name", "meta", "owner_id"}
        if unknown:
            raise InvalidInput(f"only name, meta and owner_id can be changed, not {', '.join(sorted(unknown))}")
        self._check_not_revoked()
        name = check_name(changes["name"], "key name") if "name" in changes else self.name
        meta = meta_text(changes["meta"]) if "meta" in changes else self.meta_json
        owner_id = check_owner_id(changes["owner_id"]) if "owner_id" in changes else self.owner_id
        if (name, meta, owner_id) == (self.name, self.meta_json, self.owner_id):
            return False
        self.trigger_event(
            self.KeyDetailsChanged, workspace_id=self.workspace_id, name=name, meta=meta, owner_id=owner_id, actor=actor
        )
        return True

    def set_limits(
        self, requests_per_minute: int | None, requests_per_day: int | None, plan: Limits, actor: str
    ) -> bool:
        """Limit the key below its plan (each number 1 to the plan's); False when they are so already."""
        self._check_not_revoked()
        check_key_limits(requests_per_minute, requests_per_day, plan)
        if (requests_per_minute, requests_per_day) == (self.limit_per_minute, self.limit_per_day):
            return False
        self.trigger_event(
            self.KeyLimitsSet,
            workspace_id=self.workspace_id,
            requests_per_minute=requests_per_minute,
            requests_per_day=requests_per_day,
            actor=actor,
        )
        return True

    def clear_limits(self, actor: str) -> bool:
        """Back to the plan's limits; False when the key has none of its own."""
        self._check_not_revoked()
        if self.limit_per_minute is None and self.limit_per_day is None:
            return False
        self.trigger_event(self.KeyLimitsCleared, workspace_id=self.workspace_id, actor=actor)
        return True

    def set_credits(self, remaining: int, refill_amount: int | None, refill_interval: str | None, actor: str) -> None:
        """What remains from now on (a fresh count, whatever was spent) and the refill."""
        self._check_not_revoked()
        check_credits(remaining, refill_amount, refill_interval)
        self.trigger_event(
            self.CreditsSet,
            workspace_id=self.workspace_id,
            remaining=remaining,
            refill_amount=refill_amount,
            refill_interval=refill_interval,
            actor=actor,
        )

    def record_refill(self, generation: int, period: str, actor: str) -> bool:
        """Record that `period` began with the refill amount; False when recorded already or credits changed."""
        plan = self.credit_plan
        if (
            plan is None
            or plan.refill is None
            or self.is_revoked
            or plan.generation != generation
            or not plan.is_refill(period)
            or (self.last_refill is not None and self.last_refill >= period)
        ):
            return False
        self.trigger_event(
            self.CreditsRefilled, workspace_id=self.workspace_id, period=period, amount=plan.refill.amount, actor=actor
        )
        return True

    def revoke(self, reason: str | None, actor: str) -> None:
        self._check_not_revoked()
        if reason is not None:
            check_text(reason, "reason", MAX_REASON_LENGTH, error=InvalidReason, controls=True)
        self.trigger_event(self.KeyRevoked, workspace_id=self.workspace_id, reason=reason, actor=actor)
