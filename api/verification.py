"""Deciding on a presented key: cached credentials, the key rules, then the quota.

Every answer about a known key is usage of that key and goes to the usage
buffer (flushed as batched events); only allowed answers consume quota.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from adapters.credential_cache import CachedKey, CredentialCache
from adapters.credits import CreditDecision, CreditGate
from adapters.quotas import QuotaDecision, QuotaGate
from api.forwarded_path import normalise
from api.guesses import GuessLimit
from api.metrics import Metrics
from domain import credentials
from domain.errors import MalformedSecret
from domain.imports import importable
from domain.verification import VerifyCode, check_credentials


class UsageSink(Protocol):
    def record(
        self,
        key_id: UUID,
        workspace_id: UUID,
        endpoint: str,
        status: int,
        at: datetime,
        *,
        needed_scope: str | None = None,
        client: str | None = None,
        scope_refused: bool = False,
    ) -> None:
        """One answer to a key: the scope it needed (`scope_refused`: the key lacked it) and the client's address."""
        ...

    def spend(self, key_id: UUID, workspace_id: UUID, generation: int, period: str) -> None:
        """A credit spent by an allowed answer (kept with the usage, to restore in-process counters)."""
        ...

    def refilled(self, key_id: UUID, generation: int, period: str) -> None:
        """The first credit of a refilled period was spent: its refill is to be recorded as an event."""
        ...


@dataclass(frozen=True)
class Answer:
    code: VerifyCode
    status: int  # the HTTP status this answer means (what /v1/auth would send)
    needed_scope: str | None
    key: CachedKey | None = None
    quota: QuotaDecision | None = None
    credits_remaining: int | None = None  # for usage-limited keys
    credits_retry_after: int | None = None  # on USAGE_EXCEEDED: seconds to the next refill, if one is due

    @property
    def allowed(self) -> bool:
        return self.code is VerifyCode.VALID


class VerificationService:
    def __init__(
        self,
        cache: CredentialCache,
        quotas: QuotaGate,
        usage: UsageSink,
        metrics: Metrics,
        clock: Callable[[], datetime],
        insufficient_scope_status: int = 403,
        guesses: GuessLimit | None = None,
        credits: CreditGate | None = None,
    ) -> None:
        self.guesses = guesses or GuessLimit(0)
        self.credits = credits or CreditGate(quotas.storage)
        self.cache = cache
        self.quotas = quotas
        self.usage = usage
        self.metrics = metrics
        self.clock = clock
        self.statuses = {
            VerifyCode.VALID: 200,
            VerifyCode.NOT_FOUND: 401,
            VerifyCode.REVOKED: 401,
            VerifyCode.SUSPENDED: 401,
            VerifyCode.EXPIRED: 401,
            VerifyCode.INSUFFICIENT_SCOPE: insufficient_scope_status,
            VerifyCode.RATE_LIMITED: 429,
            VerifyCode.USAGE_EXCEEDED: 429,
        }

    @staticmethod
    def _parse(secret: str | None) -> tuple[UUID | None, str | None]:
        """The key id a keyledger secret names, or the digest to look an imported key up by; (None, None) when
        the secret is missing or can be neither (no lookup needed)."""
        if not secret:
            return None, None
        try:
            return credentials.key_id_of(secret), None
        except MalformedSecret:
            pass
        return None, (credentials.digest(secret) if importable(secret) else None)

    def _key_id(self, secret: str | None) -> UUID | None:
        key_id, digest = self._parse(secret)
        return self.cache.imported(digest) if digest is not None else key_id

    def judge(self, secret: str | None, needed_scope: str | None) -> Answer:
        """The key rules alone: no quota, no usage (for management endpoints)."""
        return self._judge(secret, self._key_id(secret), needed_scope)

    def _judge(self, secret: str | None, key_id: UUID | None, needed_scope: str | None) -> Answer:
        key = self.cache.get(key_id) if key_id is not None and secret else None
        if key is None or not secret:
            return Answer(VerifyCode.NOT_FOUND, 401, needed_scope)
        code = check_credentials(key.credentials, credentials.digest(secret), needed_scope, self.clock())
        return Answer(code, self.statuses[code], needed_scope, key if code is not VerifyCode.NOT_FOUND else None)

    def verify(
        self,
        secret: str | None,
        needed_scope: str | None,
        endpoint: str,
        via: str = "verify",
        record_usage: bool = True,
        client: str | None = None,
        address: str | None = None,
    ) -> Answer:
        """Rules, then quota for allowed keys; records the answer as usage unless the caller will.

        `client` (the caller's address) is throttled after too many NOT_FOUND answers
        (GuessingThrottled) for ids no key is known to have. `address`: the client address usage
        records (SPEC 8.2: verify's `client_ip`, a gateway's forwarded address, the guard's connection).
        """
        started = time.perf_counter()
        key_id, digest = self._parse(secret)  # parsed once: the throttle and the lookup share it
        guessing = client is not None and self.guesses.per_minute > 0
        guessed = key_id if guessing and key_id is not None and not self.cache.holds(key_id) else None
        unknown_digest = guessing and digest is not None and not self.cache.holds_digest(digest)
        if guessed is not None or unknown_digest:  # no key is known to have it: throttled after too many guesses
            self.guesses.check(client, time.time())
        if digest is not None:
            key_id = self.cache.imported(digest)
        answer = self._judge(secret, key_id, needed_scope)
        if answer.key is None and (
            (guessed is not None and not self.cache.holds(guessed)) or (unknown_digest and key_id is None)
        ):
            # It named no key at all (a wrong secret of a real key is not counted).
            self.guesses.count(client, time.time())
        if answer.key is not None:
            answer = self._count(answer, needed_scope)
            if record_usage:
                self.record(answer, endpoint, answer.status, address)
        self.metrics.verify_latency.observe(time.perf_counter() - started)
        self.metrics.answer(via, answer.code.value)
        return answer

    def _count(self, answer: Answer, needed_scope: str | None) -> Answer:
        """An answer about a found key with its quota and credits: an allowed one spends a credit, then quota.

        A credit is spent first and given back when the quota refuses, so a refused answer spends neither.
        """
        now = self.clock()
        key = answer.key
        assert key is not None
        rpm, rpd, key_id = key.requests_per_minute, key.requests_per_day, key.credentials.key_id
        credits = key.credentials.credits
        if not answer.allowed:
            remaining = self.credits.remaining(key_id, credits, now) if credits is not None else None
            quota = self.quotas.peek(key_id, rpm, rpd, now)
            return Answer(answer.code, answer.status, needed_scope, key, quota, remaining)
        spent: CreditDecision | None = None
        if credits is not None:
            spent = self.credits.spend(key_id, credits, now)
            if not spent.allowed:
                code = VerifyCode.USAGE_EXCEEDED
                quota = self.quotas.peek(key_id, rpm, rpd, now)
                return Answer(code, self.statuses[code], needed_scope, key, quota, 0, spent.retry_after)
        decision = self.quotas.check(key_id, rpm, rpd, now)
        if not decision.allowed:
            remaining = None
            if spent is not None and credits is not None:
                self.credits.refund(key_id, credits, spent.period)
                remaining = spent.remaining + 1
            code = VerifyCode.RATE_LIMITED
            return Answer(code, self.statuses[code], needed_scope, key, decision, remaining)
        if spent is not None and credits is not None:
            self.usage.spend(key_id, key.credentials.workspace_id, credits.generation, spent.period)
            if spent.refilled:
                self.usage.refilled(key_id, credits.generation, spent.period)
        remaining = spent.remaining if spent is not None else None
        return Answer(VerifyCode.VALID, self.statuses[VerifyCode.VALID], needed_scope, key, decision, remaining)

    def record(self, answer: Answer, endpoint: str, status: int, client: str | None = None) -> None:
        if answer.key is not None:
            creds = answer.key.credentials
            # The scope counts as needed when the key's scopes decided the answer: allowed, limited after the
            # scope check, or refused for lacking it; a revoked, expired or suspended key's answer says nothing.
            scoped = answer.code in _SCOPE_DECIDED
            self.usage.record(
                creds.key_id,
                creds.workspace_id,
                endpoint,
                status,
                self.clock(),
                needed_scope=answer.needed_scope if scoped else None,
                client=client,
                scope_refused=answer.code is VerifyCode.INSUFFICIENT_SCOPE,
            )


_SCOPE_DECIDED = frozenset(
    {VerifyCode.VALID, VerifyCode.RATE_LIMITED, VerifyCode.USAGE_EXCEEDED, VerifyCode.INSUFFICIENT_SCOPE}
)


def needed_scope(method: str, uri: str) -> tuple[str | None, str]:
    """The scope a request needs by method and first path segment, and its path without query.

    GET and HEAD read, other methods write; a path without a segment needs no derivable scope.
    The path is judged as the backend will serve it (`api.forwarded_path`).
    """
    path, resource = normalise(uri)
    if not resource:
        return None, path
    action = "read" if method.upper() in ("GET", "HEAD") else "write"
    return f"{action}:{resource}", path
