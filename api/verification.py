"""Deciding on a presented key: cached credentials, the key rules, then the quota.

Every answer about a known key is usage of that key and goes to the usage
buffer (flushed as batched events); only allowed answers consume quota.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from time import perf_counter, time
from typing import Protocol
from uuid import UUID

import msgspec
from redis import RedisError
from starlette.concurrency import run_in_threadpool

from adapters.change_feed import RedisChangeFeed
from adapters.credential_cache import CachedKey, CacheEntry, CredentialCache
from adapters.credits import CreditDecision, CreditGate
from adapters.quotas import LocalCounters, QuotaDecision, QuotaGate, policy_value
from adapters.usage_recorder import KeyIds
from api.forwarded_path import normalise
from api.guesses import GuessLimit
from api.metrics import Metrics
from domain import credentials
from domain.application import utc_now
from domain.errors import MalformedSecret
from domain.imports import importable
from domain.scopes import ADMIN
from domain.verification import VerifyCode, check_credentials

_encode = msgspec.json.Encoder().encode


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

    def count(
        self,
        ids: KeyIds,
        minute: int,
        endpoint: str,
        status: int,
        needed_scope: str | None,
        client: str | None,
    ) -> None:
        """`record` for the hot path (an answer the scope decided, the key holding it): the moment as its UTC
        minute number since the epoch, the key as its hot entry's `KeyIds`."""
        ...

    def spend(self, key_id: UUID, workspace_id: UUID, generation: int, period: str) -> None:
        """A credit spent by an allowed answer (kept with the usage, to restore in-process counters)."""
        ...

    def refilled(self, key_id: UUID, generation: int, period: str) -> None:
        """The first credit of a refilled period was spent: its refill is to be recorded as an event."""
        ...


@dataclass(slots=True)
class Answer:
    code: VerifyCode
    status: int  # the HTTP status this answer means (what /v1/auth would send)
    needed_scope: str | None
    key: CachedKey | None = None
    quota: QuotaDecision | None = None
    credits_remaining: int | None = None  # for usage-limited keys
    credits_retry_after: int | None = None  # on USAGE_EXCEEDED: seconds to the next refill, if one is due
    hot: _Hot | None = None  # the hot entry it was decided from (its answer's JSON is prepared there)

    @property
    def allowed(self) -> bool:
        return self.code is VerifyCode.VALID


Window = tuple[int, int, str, str]  # minute and day numbers since the epoch (UTC), their counters' names


class _Hot:
    """What a presented secret's digest opened at its last decision, precomputed for the next one.

    Valid while its key's cache entry is the one it was built from (`CredentialCache.entry_of`): a
    change replaces that entry, so a revoked key is never answered from here once its command returned.
    """

    __slots__ = (
        "admin",
        "entry",
        "expected",
        "ids",
        "json_limited",
        "json_tail",
        "json_valid",
        "key",
        "key_id",
        "markers",
        "metered",
        "per_day",
        "per_minute",
        "policy",
        "refused",
        "scopes",
        "valid_until",
        "window",
    )

    def __init__(self, entry: CacheEntry, key: CachedKey, previous: bool, markers: list[str]) -> None:
        creds = key.credentials
        self.entry = entry
        self.key = key
        self.key_id = creds.key_id
        self.ids = KeyIds(creds.key_id, creds.workspace_id)  # what usage is counted by
        # The rules of `check_credentials` that do not depend on the moment or the scope asked for.
        self.refused = VerifyCode.REVOKED if creds.revoked else VerifyCode.SUSPENDED if creds.suspended else None
        until = creds.expires_at.timestamp() if creds.expires_at is not None else math.inf
        if previous:
            grace = creds.previous_valid_until
            until = min(until, grace.timestamp() if grace is not None else -math.inf)
        self.valid_until = until
        self.scopes = creds.effective_scopes
        self.admin = ADMIN in creds.effective_scopes
        self.per_minute = key.requests_per_minute
        self.per_day = key.requests_per_day
        self.policy = policy_value(self.per_minute, self.per_day)  # its RateLimit-Policy header
        self.metered = creds.credits is not None  # credits are counted step by step (`_count`)
        self.markers = markers  # with Redis: the key's and workspace's marker names, and their values here
        self.expected = [entry.key_marker, entry.workspace_marker]
        self.window: Window = (-1, -1, "", "")  # the last minute and day numbers, and their counters
        # `/v1/verify`'s body around its `ratelimit` (`answer_json`), VALID and RATE_LIMITED; no credits here.
        fields = {"key_id": creds.key_id, "workspace_id": creds.workspace_id, "scopes": key.scopes}
        details = {"name": key.name, "owner_id": key.owner_id, "meta": key.meta, "credits": None}
        self.json_valid = _encode({"valid": True, "code": "VALID", **fields})[:-1] + b',"ratelimit":'
        self.json_limited = _encode({"valid": False, "code": "RATE_LIMITED", **fields})[:-1] + b',"ratelimit":'
        self.json_tail = b"," + _encode(details)[1:]


Prepared = tuple[_Hot, int, "Window"]  # the hot entry, the epoch second, its window

# Hot entries kept at most (one per secret presented lately); the table starts anew when full.
MAX_HOT = 100_000


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
        self._hot: dict[str, _Hot] = {}
        self._shared = isinstance(cache.feed, RedisChangeFeed) and quotas.shared
        self._local = quotas.storage if isinstance(quotas.storage, LocalCounters) else None
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

        A secret decided on before is looked up by its digest in `_hot` and judged from precomputed
        facts, with integer windows and one counter step; anything else (a first sight, a changed key,
        a refusal, credits) takes the step-by-step path, which also makes the hot entry.
        """
        started = perf_counter()
        prepared = self.prepare(secret, needed_scope)
        if prepared is not None:
            hot, second, window = prepared
            quota: QuotaDecision | None = None
            if self._local is not None:
                allowed, minute_used, day_used = self._local.take(window[2], window[3], hot.per_minute, hot.per_day)
                quota = QuotaDecision(allowed, hot.per_minute, hot.per_day, minute_used, day_used, second % 86_400)
            elif self._shared and self.quotas.async_ready():
                with suppress(RedisError):  # the step-by-step path knows what an outage means (SPEC 8.5)
                    quota = self.quotas.check_unchanged(
                        hot.markers, hot.expected, window[2], window[3], hot.per_minute, hot.per_day, second
                    )
            if quota is not None:
                return self.finish(prepared, quota, needed_scope, endpoint, via, record_usage, address, started)
        answer = self._verify(secret, needed_scope, endpoint, record_usage, client, address)
        self.metrics.decided(via, answer.code, perf_counter() - started)
        return answer

    async def decide(
        self,
        secret: str | None,
        needed: str | None,
        endpoint: str,
        via: str,
        record: bool,
        client: str | None,
        address: str | None = None,
    ) -> Answer:
        """`verify` for the event loop: from memory on the loop; with Redis the hot path's one round trip
        awaited on the loop; whatever may read the store (a key not cached yet) or needs the step-by-step
        Redis calls, in the thread pool."""
        return self.decide_now(secret, needed, endpoint, via, record, client, address) or await self.decide_later(
            secret, needed, endpoint, via, record, client, address
        )

    async def decide_later(
        self,
        secret: str | None,
        needed: str | None,
        endpoint: str,
        via: str,
        record: bool,
        client: str | None,
        address: str | None = None,
    ) -> Answer:
        """`decide` once `decide_now` had no answer: the Redis round trip on the loop, or the thread pool."""
        if self._shared:
            prepared = self.prepare(secret, needed) if self.quotas.async_ready() else None
            if prepared is not None:
                started = perf_counter()
                hot, second, window = prepared
                quota = None
                with suppress(RedisError):  # the step-by-step path knows what an outage means (SPEC 8.5)
                    quota = await self.quotas.check_unchanged_async(
                        hot.markers, hot.expected, window[2], window[3], hot.per_minute, hot.per_day, second
                    )
                if quota is not None:
                    return self.finish(prepared, quota, needed, endpoint, via, record, address, started)
        return await run_in_threadpool(self.verify, secret, needed, endpoint, via, record, client, address)

    def decide_now(
        self,
        secret: str | None,
        needed: str | None,
        endpoint: str,
        via: str,
        record: bool,
        client: str | None,
        address: str | None = None,
    ) -> Answer | None:
        """`decide` when it needs no await (in-process counters, nothing to read from the store), else None: the event
        loop's callers skip a coroutine per decision."""
        if self._local is None or self._shared:
            return None
        started = perf_counter()
        prepared = self.prepare(secret, needed)
        if prepared is not None:  # as `verify` does, without hashing the secret twice
            hot, second, window = prepared
            allowed, minute_used, day_used = self._local.take(window[2], window[3], hot.per_minute, hot.per_day)
            quota = QuotaDecision(allowed, hot.per_minute, hot.per_day, minute_used, day_used, second % 86_400)
            return self.finish(prepared, quota, needed, endpoint, via, record, address, started)
        if self.answers_from_memory(secret):
            return self.verify(secret, needed, endpoint, via, record, client, address)
        return None

    def prepare(self, secret: str | None, needed: str | None) -> Prepared | None:
        """The hot entry of a secret decided on before, when the key rules allow it now: only the quota is
        left to count (in process, or in Redis by `QuotaGate.check_unchanged[_async]`), then `finish`.
        None when the step-by-step path must decide: a first sight, a changed key, a refusal (rare, and
        it wants RateLimit headers from a peek), credits."""
        if not secret:
            return None
        try:
            digest = sha256(secret.encode()).hexdigest()
        except UnicodeEncodeError:  # a lone surrogate: no key has it (the step-by-step path says so)
            return None
        hot = self._hot.get(digest)
        if hot is None or not hot.entry.current or hot.refused is not None or hot.metered:
            return None
        if needed is not None and needed not in hot.scopes and not hot.admin:
            return None
        clock = self.clock
        now = time() if clock is utc_now else clock().timestamp()
        if now >= hot.valid_until:
            return None
        second = int(now)
        minute, day = second // 60, second // 86_400
        window = hot.window  # one attribute, replaced whole: a thread never sees half of a new window
        if window[0] != minute or window[1] != day:
            window = hot.window = (minute, day, *self.quotas.names(hot.key_id, minute, day))
        return hot, second, window

    def finish(
        self,
        prepared: Prepared,
        quota: QuotaDecision,
        needed: str | None,
        endpoint: str,
        via: str,
        record_usage: bool,
        address: str | None,
        started: float,
    ) -> Answer:
        """The answer of a prepared decision once its quota was counted: recorded, measured."""
        hot, _, window = prepared
        quota.policy = hot.policy
        if quota.allowed:
            answer = Answer(VerifyCode.VALID, 200, needed, hot.key, quota, hot=hot)
        else:
            answer = Answer(VerifyCode.RATE_LIMITED, 429, needed, hot.key, quota, hot=hot)
        if record_usage:
            self.usage.count(hot.ids, window[0], endpoint, answer.status, needed, address)
        self.metrics.decided(via, answer.code, perf_counter() - started)
        return answer

    def _remember(self, secret: str, answer: Answer) -> None:
        """Make the hot entry of a secret that opened a key (its current or previous secret)."""
        key = answer.key
        if key is None:
            return
        key_id = key.credentials.key_id
        entry = self.cache.entry_of(key_id)
        if entry is None or entry.value is not key:
            return
        digest = credentials.digest(secret)
        previous = digest != key.credentials.secret_digest
        markers = [] if not self._shared else self.cache.marker_names(key_id, key.credentials.workspace_id)
        if len(self._hot) >= MAX_HOT:
            self._hot = {}
        self._hot[digest] = _Hot(entry, key, previous, markers)

    def _verify(
        self,
        secret: str | None,
        needed_scope: str | None,
        endpoint: str,
        record_usage: bool,
        client: str | None,
        address: str | None,
    ) -> Answer:
        key_id, digest = self._parse(secret)  # parsed once: the throttle and the lookup share it
        guessing = client is not None and self.guesses.per_minute > 0
        guessed = key_id if guessing and key_id is not None and not self.cache.holds(key_id) else None
        unknown_digest = guessing and digest is not None and not self.cache.holds_digest(digest)
        if guessed is not None or unknown_digest:  # no key is known to have it: throttled after too many guesses
            self.guesses.check(client, time())
        if digest is not None:
            key_id = self.cache.imported(digest)
        answer = self._judge(secret, key_id, needed_scope)
        if answer.key is None and (
            (guessed is not None and not self.cache.holds(guessed)) or (unknown_digest and key_id is None)
        ):
            # It named no key at all (a wrong secret of a real key is not counted).
            self.guesses.count(client, time())
        if answer.key is not None:
            answer = self._count(answer, needed_scope)
            if record_usage:
                self.record(answer, endpoint, answer.status, address)
            if secret and answer.code is not VerifyCode.NOT_FOUND:
                self._remember(secret, answer)
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

    def answers_from_memory(self, secret: str | None) -> bool:
        """Whether deciding on `secret` needs no store read (its key, or its absence, is cached)."""
        if not secret:
            return True
        try:
            hot = self._hot.get(sha256(secret.encode()).hexdigest())
        except UnicodeEncodeError:
            return True  # a lone surrogate: malformed, decided without a lookup
        if hot is not None and hot.entry.current:
            return True
        key_id, digest = self._parse(secret)
        if digest is not None:
            return self.cache.remembers_digest(digest)
        return key_id is None or self.cache.remembers(key_id)

    @staticmethod
    def answer_json(answer: Answer) -> bytes:
        """`/v1/verify`'s body for an answer (`api.schemas.VerifyResponse`, its fields in order)."""
        hot, quota = answer.hot, answer.quota
        if hot is not None and quota is not None:  # prepared: only the numbers are written
            limit, left, reset = quota.binding_numbers()
            head = hot.json_valid if answer.code is VerifyCode.VALID else hot.json_limited
            return b'%s{"limit":%d,"remaining":%d,"reset":%d}%s' % (head, limit, left, reset, hot.json_tail)
        key = answer.key
        window = answer.quota.binding if answer.quota is not None else None
        remaining = answer.credits_remaining
        return _encode(
            {
                "valid": answer.code is VerifyCode.VALID,
                "code": answer.code.value,
                "key_id": key.credentials.key_id if key else None,
                "workspace_id": key.credentials.workspace_id if key else None,
                "scopes": key.scopes if key else None,
                "ratelimit": {"limit": window.limit, "remaining": window.remaining, "reset": window.reset}
                if window
                else None,
                "name": key.name if key else None,
                "owner_id": key.owner_id if key else None,
                "meta": key.meta if key else None,
                "credits": {"remaining": remaining} if remaining is not None else None,
            }
        )

    @staticmethod
    def auth_headers(key: CachedKey) -> list[tuple[bytes, bytes]]:
        """The headers `/v1/auth` adds to an allowed answer: which key and workspace it was."""
        return [
            (b"x-keyledger-key-id", str(key.credentials.key_id).encode()),
            (b"x-keyledger-workspace-id", str(key.credentials.workspace_id).encode()),
        ]


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
