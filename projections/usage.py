"""The quota-usage read model: answers per key per UTC minute and per UTC day, and per endpoint per day.

Fed only by `UsageRecorded` events (batched usage counts, see `domain.usage`).
Each batch of events is summed in memory first and then added to the stored
counters with one upsert per table, so a batch costs a few statements however
many answers it counts.

Counters: `requests` (every answer), `successes` (2xx), `client_errors` (4xx
other than 429), `rate_limited` (429). A refused (429) answer consumes no quota.
Endpoint counts are kept per UTC day, not per minute: per minute they would be
the largest table by far (keys x endpoints x 1,440 a day) for little use.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar, cast
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Uuid,
    delete,
    func,
    select,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from adapters.rows import StorableText, UTCDateTime, insert_rows
from domain.addresses import MAX_ADDRESS_LENGTH
from domain.text import MAX_ENDPOINT_LENGTH, storable_text
from domain.timefmt import floor_minute
from domain.usage import UsageBatch
from projections.base import Positioned, Projection, Queries, Tables
from projections.schema import CLUSTERED, chunks, table_name

B = TypeVar("B")
COUNTERS = ("requests", "successes", "client_errors", "rate_limited")
TOP_ENDPOINTS = 5
TOP_ADDRESSES = 100  # client addresses kept per key and UTC day (SPEC 8.2)
MAX_SCOPE_LENGTH = 200


class UsageBucket(NamedTuple):
    """One UTC minute (a datetime) or one UTC day (a date) of a key's answers."""

    start: datetime | date
    requests: int
    successes: int
    client_errors: int
    rate_limited: int


@dataclass(frozen=True)
class KeyUsage:
    key_id: UUID
    total: int
    successes: int
    success_rate: float | None  # share of 2xx answers; None when there were none
    client_errors: int
    rate_limited: int
    top_endpoints: list[tuple[str, int]]
    per_minute: list[UsageBucket]
    per_day: list[UsageBucket]
    last_used: datetime | None  # start of the last minute with an answer
    scopes: list[ScopeUsage] = field(default_factory=list)  # per needed scope, most answers first


@dataclass(frozen=True)
class ScopeUsage:
    """Answers that needed one scope: allowed ones (the key held it) and refused ones (it did not)."""

    scope: str
    allowed: int
    refused: int
    last_allowed: datetime | None  # UTC minutes
    last_refused: datetime | None

    @property
    def last_seen(self) -> datetime | None:
        return max((t for t in (self.last_allowed, self.last_refused) if t is not None), default=None)


def _counter_columns() -> list[Column[int]]:
    return [Column(name, BigInteger, nullable=False) for name in COUNTERS]


def _counter(status: int) -> int:
    """Which counter besides `requests` an answer with this status adds to (0: none)."""
    if 200 <= status < 300:
        return 1  # successes
    if status == 429:
        return 3  # rate_limited
    if 400 <= status < 500:
        return 2  # client_errors
    return 0


@dataclass
class UsageSums:
    """Usage entries summed in memory, not yet added to the tables."""

    minutes: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (key, minute text) -> counts
    # (key, day, endpoint) -> [answers, 2xx answers]
    endpoints: dict[tuple[str, date, str], list[int]] = field(default_factory=dict)
    # (key, day, needed scope) -> [allowed, refused, last allowed minute, last refused minute]
    scopes: dict[tuple[str, date, str], list[Any]] = field(default_factory=dict)
    # (key, day, client address) -> [answers, 2xx answers, first minute, last minute]
    addresses: dict[tuple[str, date, str], list[Any]] = field(default_factory=dict)
    workspace_of: dict[str, str] = field(default_factory=dict)  # key -> its workspace (ids as text)
    times: _Moments = field(default_factory=lambda: _Moments())
    spends: defaultdict[tuple[str, int, str], int] = field(default_factory=lambda: defaultdict(int))


class UsageProjection(Projection[UsageSums]):
    name = "usage"
    # 2: credits spent per key, credits generation and period; 3 (SPEC 8.2): answers per needed scope and per
    # client address per key and day, and each endpoint's 2xx answers
    VERSION = 3
    event_types = (UsageBatch.UsageRecorded,)

    def define_tables(self, metadata: MetaData, generation: int) -> Tables:
        minute = Table(
            table_name("usage_minute", generation),
            metadata,
            Column("key_id", Uuid, primary_key=True),
            Column("minute", UTCDateTime, primary_key=True, index=True),
            Column("workspace_id", Uuid, nullable=False, index=True),
            *_counter_columns(),
            **CLUSTERED,
        )
        day = Table(
            table_name("usage_day", generation),
            metadata,
            Column("key_id", Uuid, primary_key=True),
            Column("day", Date, primary_key=True, index=True),
            Column("workspace_id", Uuid, nullable=False, index=True),
            *_counter_columns(),
            **CLUSTERED,
        )
        endpoint = Table(
            table_name("usage_endpoint", generation),
            metadata,
            Column("key_id", Uuid, primary_key=True),
            Column("day", Date, primary_key=True),
            Column("endpoint", StorableText(MAX_ENDPOINT_LENGTH), primary_key=True),
            Column("workspace_id", Uuid, nullable=False, index=True),
            Column("requests", BigInteger, nullable=False),
            Column("successes", BigInteger, nullable=False),
            **CLUSTERED,
        )
        scope = Table(
            table_name("usage_scope", generation),
            metadata,
            Column("key_id", Uuid, nullable=False),
            Column("day", Date, nullable=False),
            Column("scope", String(MAX_SCOPE_LENGTH), nullable=False),
            Column("workspace_id", Uuid, nullable=False, index=True),
            Column("allowed", BigInteger, nullable=False),
            Column("refused", BigInteger, nullable=False),
            Column("last_allowed", UTCDateTime, nullable=True),  # the UTC minute
            Column("last_refused", UTCDateTime, nullable=True),
            # Key, then scope, then day: insights sum each key's scopes over a window of days (one range each).
            PrimaryKeyConstraint("key_id", "scope", "day"),
            **CLUSTERED,
        )
        address = Table(
            table_name("usage_address", generation),
            metadata,
            Column("key_id", Uuid, primary_key=True),
            Column("day", Date, primary_key=True),
            Column("address", String(MAX_ADDRESS_LENGTH), primary_key=True),
            Column("workspace_id", Uuid, nullable=False),
            Column("requests", BigInteger, nullable=False),
            Column("successes", BigInteger, nullable=False),
            Column("first_seen", UTCDateTime, nullable=False),  # UTC minutes
            Column("last_seen", UTCDateTime, nullable=False),
            **CLUSTERED,
        )
        credits = Table(
            table_name("usage_credits", generation),
            metadata,
            Column("key_id", Uuid, primary_key=True),
            Column("generation", BigInteger, primary_key=True),
            Column("period", String(16), primary_key=True, index=True),
            Column("spent", BigInteger, nullable=False),
            **CLUSTERED,
        )
        return {
            "minute": minute,
            "day": day,
            "endpoint": endpoint,
            "credits": credits,
            "scope": scope,
            "address": address,
        }

    def fold(
        self, conn: Connection, tables: Tables, pending: UsageSums | None, events: Sequence[Positioned]
    ) -> UsageSums:
        # A rebuild passes every entry through here, so the loop over entries does only what
        # must be done per entry: sum per (key, minute text) and per (key, day, endpoint).
        # Everything else (parsing, flooring, day totals) is done once per bucket in `write`,
        # which has far fewer buckets than entries.
        sums = pending or UsageSums()
        minutes, endpoints, workspace_of = sums.minutes, sums.endpoints, sums.workspace_of
        scopes, addresses = sums.scopes, sums.addresses
        times, counter_of = sums.times, _COUNTER_OF
        for _, event in events:
            for key, minute_text, count, status, endpoint, workspace, scope, refused, client in map(
                _ENTRY_FIELDS, event.entries
            ):
                counts = minutes.get((key, minute_text))
                if counts is None:
                    counts = minutes[key, minute_text] = [0, 0, 0, 0, 0]
                    workspace_of[key] = workspace
                counter = counter_of[status]
                counts[0] += count
                counts[counter] += count
                floored, day = times[minute_text]
                success = count if counter == 1 else 0
                slot = endpoints.get((key, day, endpoint))
                if slot is None:
                    endpoints[key, day, endpoint] = [count, success]
                else:
                    slot[0] += count
                    slot[1] += success
                if scope is not None:
                    _add_scope(scopes, (key, day, scope), count, refused, floored)
                if client is not None:
                    _add_address(addresses, (key, day, client), count, success, floored)
            for spend in event.credits:
                sums.spends[spend["key_id"], int(spend["generation"]), spend["period"]] += int(spend["count"])
        return sums

    def pending_size(self, pending: UsageSums) -> int:
        return (
            len(pending.minutes)
            + len(pending.endpoints)
            + len(pending.spends)
            + len(pending.scopes)
            + len(pending.addresses)
        )

    def write(self, conn: Connection, tables: Tables, pending: UsageSums) -> None:
        minutes, endpoints, workspace_of, times = (
            pending.minutes,
            pending.endpoints,
            pending.workspace_of,
            pending.times,
        )
        by_minute: dict[tuple[str, datetime], list[int]] = {}
        by_day: dict[tuple[str, date], list[int]] = {}
        for (key, minute_text), counts in minutes.items():
            floored, day = times[minute_text]
            _add(by_minute, (key, floored), counts)
            _add(by_day, (key, day), counts)
        by_endpoint: dict[tuple[str, date, str], list[int]] = {}
        for (key, day, endpoint), endpoint_counts in endpoints.items():
            _add(by_endpoint, (key, day, storable_text(endpoint[:MAX_ENDPOINT_LENGTH])), endpoint_counts, 2)
        # Scope and address entries name the same keys as minute entries (one entry holds all three).
        ids = {text: UUID(text) for text in workspace_of.keys() | workspace_of.values()}
        # Value tuples in each table's column order (see define_tables).
        insert_rows(
            conn,
            tables["minute"],
            [(ids[k], m, ids[workspace_of[k]], *c) for (k, m), c in by_minute.items()],
            add=COUNTERS,
        )
        insert_rows(
            conn,
            tables["day"],
            [(ids[k], d, ids[workspace_of[k]], *c) for (k, d), c in by_day.items()],
            add=COUNTERS,
        )
        # The endpoint, scope and address tables: sums per key, day and one more key column.
        per_day = functools.partial(_upsert_per_day, conn, ids=ids, workspace_of=workspace_of)
        per_day(tables["endpoint"], by_endpoint, add=["requests", "successes"])
        per_day(tables["scope"], pending.scopes, add=["allowed", "refused"], latest=["last_allowed", "last_refused"])
        per_day(
            tables["address"],
            pending.addresses,
            add=["requests", "successes"],
            latest=["last_seen"],
            earliest=["first_seen"],
        )
        _keep_top_addresses(conn, tables["address"], {(ids[k], d) for k, d, _ in pending.addresses})
        insert_rows(
            conn,
            tables["credits"],
            [(UUID(k), g, p, n) for (k, g, p), n in pending.spends.items()],
            add=["spent"],
        )


def _upsert_per_day(
    conn: Connection,
    table: Table,
    sums: Mapping[tuple[str, date, str], Sequence[Any]],
    *,
    ids: Mapping[str, UUID],
    workspace_of: Mapping[str, str],
    add: Sequence[str],
    latest: Sequence[str] = (),
    earliest: Sequence[str] = (),
) -> None:
    """Add sums per (key, day, <the table's third key column>) to the endpoint, scope or address table."""
    rows = [(ids[k], d, x, ids[workspace_of[k]], *counts) for (k, d, x), counts in sums.items()]
    insert_rows(conn, table, rows, add=add, latest=latest, earliest=earliest)


def _add(buckets: dict[B, list[int]], bucket: B, counts: list[int], width: int = 4) -> None:
    total = buckets.get(bucket)
    if total is None:
        buckets[bucket] = counts[:width]  # minutes: the fifth slot sums answers no counter besides `requests` takes
    else:
        for i in range(width):
            total[i] += counts[i]


def _add_scope(
    scopes: dict[tuple[str, date, str], list[Any]], slot: tuple[str, date, str], count: int, refused: bool, at: datetime
) -> None:
    sums = scopes.get(slot)
    if sums is None:
        sums = scopes[slot] = [0, 0, None, None]
    index = 1 if refused else 0
    sums[index] += count
    if sums[index + 2] is None or sums[index + 2] < at:
        sums[index + 2] = at


def _add_address(
    addresses: dict[tuple[str, date, str], list[Any]], slot: tuple[str, date, str], count: int, ok: int, at: datetime
) -> None:
    sums = addresses.get(slot)
    if sums is None:
        addresses[slot] = [count, ok, at, at]
        return
    sums[0] += count
    sums[1] += ok
    if at < sums[2]:
        sums[2] = at
    if at > sums[3]:
        sums[3] = at


def _keep_top_addresses(conn: Connection, table: Table, touched: set[tuple[UUID, date]]) -> None:
    """Keep at most TOP_ADDRESSES addresses per key and day: those with the most answers (then the latest).

    An address dropped here and seen again later that day starts counting anew, as in any top-k sketch.
    """
    if not touched:
        return
    # Only the touched keys and days, so the key-first primary key serves the count (no scan of the table).
    keys, days = sorted({k for k, _ in touched}, key=str), sorted({d for _, d in touched})
    found: list[tuple[UUID, date]] = []
    for part in chunks(keys, 500):
        crowded = (
            select(table.c.key_id, table.c.day)
            .where(table.c.key_id.in_(list(part)), table.c.day.in_(days))
            .group_by(table.c.key_id, table.c.day)
            .having(func.count() > TOP_ADDRESSES)
        )
        found += [(k, d) for k, d in conn.execute(crowded)]
    for key_id, day in found:
        if (key_id, day) not in touched:
            continue
        ranked = (
            select(table.c.address)
            .where(table.c.key_id == key_id, table.c.day == day)
            .order_by(table.c.requests.desc(), table.c.last_seen.desc(), table.c.address)
            .offset(TOP_ADDRESSES)
        )
        dropped = list(conn.execute(ranked).scalars())
        for part in chunks(dropped, 500):
            conn.execute(
                delete(table).where(table.c.key_id == key_id, table.c.day == day, table.c.address.in_(list(part)))
            )


_ENTRY_FIELDS = itemgetter(
    "key_id", "minute", "count", "status", "endpoint", "workspace_id", "scope", "scope_refused", "client"
)


class _Moments(dict[str, tuple[datetime, date]]):
    """Minute text -> (its UTC minute, its UTC day), parsed once per distinct text."""

    def __missing__(self, text: str) -> tuple[datetime, date]:
        floored = floor_minute(datetime.fromisoformat(text))
        self[text] = moment = (floored, floored.date())
        return moment


class _CounterIndex(dict[int, int]):
    """Status -> index of the counter it adds to besides `requests`; 4 (a slot never stored) for none."""

    def __missing__(self, status: int) -> int:
        self[status] = index = _counter(status) or 4
        return index


_COUNTER_OF = _CounterIndex()  # at most the ~500 HTTP statuses


def select_usage(
    conn: Connection,
    tables: Tables,
    workspace_id: UUID,
    key_id: UUID | None,
    since: datetime | None,
    until: datetime | None,
) -> list[KeyUsage]:
    """Usage per key in [since, until); per_day and top_endpoints cover the whole UTC days it touches."""
    minute, day, endpoint = tables["minute"], tables["day"], tables["endpoint"]

    def where(table: Table, time: ColumnElement[Any], lower: Any, upper: Any, inclusive: bool) -> list[Any]:
        clauses: list[Any] = [table.c.workspace_id == workspace_id]
        if key_id is not None:
            clauses.append(table.c.key_id == key_id)
        if lower is not None:
            clauses.append(time >= lower)
        if upper is not None:
            clauses.append(time <= upper if inclusive else time < upper)
        return clauses

    per_minute: dict[UUID, list[UsageBucket]] = defaultdict(list)
    query = select(minute.c.key_id, minute.c.minute, *(minute.c[c] for c in COUNTERS))
    query = query.where(*where(minute, minute.c.minute, since, until, False)).order_by(minute.c.key_id, minute.c.minute)
    for row in conn.execute(query):
        per_minute[row[0]].append(UsageBucket(*row[1:]))

    first_day = since.astimezone(UTC).date() if since is not None else None
    last_day = (until - timedelta(microseconds=1)).astimezone(UTC).date() if until is not None else None
    per_day: dict[UUID, list[UsageBucket]] = defaultdict(list)
    query = select(day.c.key_id, day.c.day, *(day.c[c] for c in COUNTERS))
    query = query.where(*where(day, day.c.day, first_day, last_day, True)).order_by(day.c.key_id, day.c.day)
    for row in conn.execute(query):
        per_day[row[0]].append(UsageBucket(*row[1:]))

    top: dict[UUID, list[tuple[str, int]]] = defaultdict(list)
    count = func.sum(endpoint.c.requests)
    query = (
        select(endpoint.c.key_id, endpoint.c.endpoint, count)
        .where(*where(endpoint, endpoint.c.day, first_day, last_day, True))
        .group_by(endpoint.c.key_id, endpoint.c.endpoint)
        .order_by(endpoint.c.key_id, count.desc(), endpoint.c.endpoint)
    )
    for key, name, requests in conn.execute(query):
        if len(top[key]) < TOP_ENDPOINTS:
            top[key].append((name, int(requests)))

    scopes = select_scope_usage(conn, tables, workspace_id, first_day, last_day, key_id)
    key_ids: Iterable[UUID] = [key_id] if key_id is not None else per_minute.keys()
    usages = [
        _key_usage(k, per_minute.get(k, []), per_day.get(k, []), top.get(k, []), scopes.get(k, [])) for k in key_ids
    ]
    return sorted(usages, key=lambda u: (-u.total, str(u.key_id)))


def select_scope_usage(
    conn: Connection,
    tables: Tables,
    workspace_id: UUID,
    first_day: date | None,
    last_day: date | None = None,
    key_id: UUID | None = None,
) -> dict[UUID, list[ScopeUsage]]:
    """Per key: answers per needed scope over the UTC days [first_day, last_day], most answers first."""
    table = tables["scope"]
    query = select(
        table.c.key_id,
        table.c.scope,
        func.sum(table.c.allowed),
        func.sum(table.c.refused),
        func.max(table.c.last_allowed),
        func.max(table.c.last_refused),
    ).where(table.c.workspace_id == workspace_id)
    if key_id is not None:
        query = query.where(table.c.key_id == key_id)
    if first_day is not None:
        query = query.where(table.c.day >= first_day)
    if last_day is not None:
        query = query.where(table.c.day <= last_day)
    found: dict[UUID, list[ScopeUsage]] = defaultdict(list)
    for key, scope, allowed, refused, last_allowed, last_refused in conn.execute(
        query.group_by(table.c.key_id, table.c.scope)
    ):
        found[key].append(
            ScopeUsage(scope, int(allowed), int(refused), aggregate_time(last_allowed), aggregate_time(last_refused))
        )
    for usages in found.values():
        usages.sort(key=lambda u: (-(u.allowed + u.refused), u.scope))
    return found


def aggregate_time(value: datetime | str | None) -> datetime | None:
    """An aggregate's time: SQLite answers max() of a time column as its stored text."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _key_usage(
    key_id: UUID,
    per_minute: list[UsageBucket],
    per_day: list[UsageBucket],
    top: list[tuple[str, int]],
    scopes: list[ScopeUsage],
) -> KeyUsage:
    total = sum(b.requests for b in per_minute)
    successes = sum(b.successes for b in per_minute)
    used = [cast(datetime, b.start) for b in per_minute if b.requests]
    return KeyUsage(
        key_id=key_id,
        total=total,
        successes=successes,
        success_rate=successes / total if total else None,
        client_errors=sum(b.client_errors for b in per_minute),
        rate_limited=sum(b.rate_limited for b in per_minute),
        top_endpoints=top,
        per_minute=per_minute,
        per_day=per_day,
        last_used=max(used) if used else None,
        scopes=scopes,
    )


BUCKETS = ("minute", "hour", "day")


def floor_to(moment: datetime, bucket: str) -> datetime:
    """The start of the UTC minute, hour or day holding `moment`."""
    moment = floor_minute(moment)
    if bucket == "minute":
        return moment
    if bucket == "hour":
        return moment.replace(minute=0)
    if bucket == "day":
        return moment.replace(hour=0, minute=0)
    raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}")


def rebucket(per_minute: Iterable[UsageBucket], bucket: str) -> list[UsageBucket]:
    """A minute series summed per UTC minute, hour or day: buckets with answers only, oldest first."""
    sums: dict[datetime, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for point in per_minute:
        counts = sums[floor_to(cast(datetime, point.start), bucket)]
        for i, value in enumerate(point[1:]):
            counts[i] += value
    return [UsageBucket(start, *counts) for start, counts in sorted(sums.items())]


def select_consumed(conn: Connection, tables: Tables, minute: datetime, day: date) -> dict[UUID, tuple[int, int]]:
    """Answers per key in that minute and that day that consumed quota (all but 429s)."""
    minute_table, day_table = tables["minute"], tables["day"]
    consumed: dict[UUID, list[int]] = defaultdict(lambda: [0, 0])
    query = select(minute_table.c.key_id, minute_table.c.requests - minute_table.c.rate_limited).where(
        minute_table.c.minute == floor_minute(minute)
    )
    for key, count in conn.execute(query):
        consumed[key][0] = int(count)
    query = select(day_table.c.key_id, day_table.c.requests - day_table.c.rate_limited).where(day_table.c.day == day)
    for key, count in conn.execute(query):
        consumed[key][1] = int(count)
    return {key: (m, d) for key, (m, d) in consumed.items()}


class MinuteCount(NamedTuple):
    key_id: UUID
    workspace_id: UUID
    start: datetime  # the UTC minute (or day)
    number: int


def select_refused_minutes(conn: Connection, tables: Tables, since: datetime, at_least: int) -> list[MinuteCount]:
    """Minutes from `since` in which a key got at least `at_least` refused (non-2xx) answers."""
    table = tables["minute"]
    refused = table.c.requests - table.c.successes
    query = select(table.c.key_id, table.c.workspace_id, table.c.minute, refused).where(
        table.c.minute >= floor_minute(since), refused >= at_least
    )
    return [MinuteCount(*row) for row in conn.execute(query)]


def select_day_consumed(conn: Connection, tables: Tables, day: date, at_least: int) -> list[MinuteCount]:
    """Keys whose answers of `day` that consumed quota (all but 429s) number at least `at_least`."""
    table = tables["day"]
    consumed = table.c.requests - table.c.rate_limited
    query = select(table.c.key_id, table.c.workspace_id, table.c.day, consumed).where(
        table.c.day == day, consumed >= at_least
    )
    return [
        MinuteCount(k, w, datetime(d.year, d.month, d.day, tzinfo=UTC), int(c)) for k, w, d, c in conn.execute(query)
    ]


def select_credit_spends(conn: Connection, tables: Tables, periods: Sequence[str]) -> list[tuple[UUID, int, str, int]]:
    """Credits spent per key and credits generation in these periods (domain.keycredits)."""
    table = tables["credits"]
    query = select(table.c.key_id, table.c.generation, table.c.period, table.c.spent).where(table.c.period.in_(periods))
    return [(key, int(generation), period, int(spent)) for key, generation, period, spent in conn.execute(query)]


class UsageQueries(Queries):
    """Queries of the usage read model (`ReadModels` inherits them)."""

    def usage(
        self,
        workspace_id: UUID,
        key_id: UUID | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[KeyUsage]:
        """Per key (most used first): totals, top endpoints, minute and day series in [since, until)."""
        return self._read("usage", lambda c, t: select_usage(c, t, workspace_id, key_id, since, until))

    def consumed_quota(self, minute: datetime, day: date) -> dict[UUID, tuple[int, int]]:
        """Per key: recorded answers in that UTC minute and that UTC day that consumed quota (not 429)."""
        return self._read("usage", lambda conn, tables: select_consumed(conn, tables, minute, day))

    def refused_minutes(self, since: datetime, at_least: int) -> list[MinuteCount]:
        """(key, workspace, minute, refused) for minutes from `since` with at least `at_least` refused answers."""
        return self._read("usage", lambda conn, tables: select_refused_minutes(conn, tables, since, at_least))

    def day_consumed(self, day: date, at_least: int = 1) -> list[MinuteCount]:
        """(key, workspace, day, consumed) for keys with at least `at_least` quota-consuming answers on `day`."""
        return self._read("usage", lambda conn, tables: select_day_consumed(conn, tables, day, at_least))

    def credit_spends(self, periods: Sequence[str]) -> list[tuple[UUID, int, str, int]]:
        """Credits spent per key and credits generation in these periods, as the usage events recorded them."""
        return self._read("usage", lambda conn, tables: select_credit_spends(conn, tables, periods))
