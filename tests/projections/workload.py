"""A seeded random sequence of commands, and what each read model must then hold, computed without them."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from domain.application import KeyLedger
from domain.errors import DomainError
from domain.usage import UsageCount
from projections.usage import COUNTERS, TOP_ENDPOINTS, ScopeUsage, UsageBucket

RESOURCES = ("nodes", "edges", "livedata", "events")
SCOPES = ["admin"] + [f"{a}:{r}" for a in ("read", "write") for r in RESOURCES]
ENDPOINTS = ["GET /nodes", "POST /edges", "GET /livedata", "GET /events", "DELETE /nodes/1", "PUT /edges/2"]
STATUSES = [200, 200, 200, 201, 204, 400, 401, 403, 404, 429, 429, 500]
PLANS = [("starter", None, None), ("pro", None, None), ("enterprise", 1000, 2_000_000)]
START = datetime(2027, 3, 1, tzinfo=UTC)


@dataclass
class Workload:
    workspaces: list[UUID] = field(default_factory=list)
    keys: dict[UUID, UUID] = field(default_factory=dict)  # key -> workspace
    usage: list[UsageCount] = field(default_factory=list)
    commands: Counter[str] = field(default_factory=Counter)


def run_commands(ledger: KeyLedger, count: int, seed: int, after_each: Any = None) -> Workload:
    """Issue `count` random commands (some of them fail, as real ones do, and change nothing)."""
    rng = random.Random(seed)
    work = Workload()
    for _ in range(2):
        created = ledger.create_workspace(f"ws{len(work.workspaces)}", "pro")
        work.workspaces.append(created.workspace.id)
        work.keys[created.admin_key.id] = created.workspace.id
    choices = ["issue", "grant", "revoke_scope", "rotate", "revoke", "plan", "usage"]
    weights = [20, 15, 10, 10, 5, 4, 36]
    for _ in range(count):
        command = rng.choices(choices, weights)[0]
        key_id = rng.choice(list(work.keys))
        try:
            position = _run(ledger, rng, work, command, key_id)
        except DomainError:
            work.commands[command + " (refused)"] += 1
            continue
        work.commands[command] += 1
        if after_each is not None and position is not None:
            after_each(position)
    return work


def _run(ledger: KeyLedger, rng: random.Random, work: Workload, command: str, key_id: UUID) -> int | None:
    if command == "issue":
        workspace = rng.choice(work.workspaces)
        expires = START + timedelta(days=rng.randint(1, 5)) if rng.random() < 0.3 else None
        scopes = rng.sample(SCOPES, rng.randint(0, 3))
        issued = ledger.issue_key(workspace, f"key{len(work.keys)}", scopes, f"actor{rng.randint(1, 3)}", expires)
        work.keys[issued.key.id] = workspace
        return issued.position
    if command == "grant":
        return ledger.grant_scopes(key_id, rng.sample(SCOPES, rng.randint(1, 2))).position
    if command == "revoke_scope":
        return ledger.revoke_scopes(key_id, rng.sample(SCOPES, rng.randint(1, 3))).position
    if command == "rotate":
        return ledger.rotate_key(key_id, grace_seconds=rng.choice([0, 60, 3600, 86_400])).position
    if command == "revoke":
        return ledger.revoke_key(key_id, reason=rng.choice([None, "leaked", "unused"])).position
    if command == "plan":
        plan, rpm, rpd = rng.choice(PLANS)
        return ledger.change_plan(rng.choice(work.workspaces), plan, "operator", rpm, rpd).position
    counts = []
    for _ in range(rng.randint(1, 6)):
        key = rng.choice(list(work.keys))
        minute = START + timedelta(minutes=rng.randint(0, 3 * 24 * 60))
        status = rng.choice(STATUSES)
        endpoint, count = rng.choice(ENDPOINTS), rng.randint(1, 20)
        # Scope and address derived from what was drawn (no draw of their own: the command mix stays as it was).
        scope = None if status in (401, 500) else SCOPES[(count + minute.minute) % len(SCOPES)]
        client = None if count % 4 == 0 else f"10.0.{status % 3}.{minute.minute % 5}"
        refused = scope is not None and status == 403
        counts.append(UsageCount(key, work.keys[key], minute, endpoint, status, count, scope, refused, client))
    work.usage += counts
    return ledger.record_usage(counts, actor="usage:test")


# --- what the usage read model must hold, from the counts as recorded -----------------


def _split(status: int, count: int) -> tuple[int, ...]:
    return (
        count,
        count if 200 <= status < 300 else 0,
        count if 400 <= status < 500 and status != 429 else 0,
        count if status == 429 else 0,
    )


def expected_usage(
    work: Workload, workspace: UUID, since: datetime | None = None, until: datetime | None = None
) -> dict[UUID, dict[str, Any]]:
    per_minute: dict[UUID, dict[datetime, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0] * 4))
    per_day: dict[UUID, dict[Any, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0] * 4))
    endpoints: dict[UUID, Counter[str]] = defaultdict(Counter)
    scopes: dict[UUID, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, None, None]))
    first_day = since.date() if since else None
    last_day = (until - timedelta(microseconds=1)).date() if until else None
    for c in work.usage:
        if c.workspace_id != workspace:
            continue
        split = _split(c.status, c.count)
        if (first_day is None or c.minute.date() >= first_day) and (last_day is None or c.minute.date() <= last_day):
            day = per_day[c.key_id][c.minute.date()]
            for i in range(4):
                day[i] += split[i]
            endpoints[c.key_id][c.endpoint] += c.count
            if c.scope is not None:
                sums, index = scopes[c.key_id][c.scope], 1 if c.scope_refused else 0
                sums[index] += c.count
                sums[index + 2] = max(t for t in (sums[index + 2], c.minute) if t is not None)
        if (since is not None and c.minute < since) or (until is not None and c.minute >= until):
            continue
        minute = per_minute[c.key_id][c.minute]
        for i in range(4):
            minute[i] += split[i]
    result = {}
    for key, minutes in per_minute.items():
        buckets = [UsageBucket(m, *v) for m, v in sorted(minutes.items())]
        totals = dict(zip(COUNTERS, (sum(b[i + 1] for b in buckets) for i in range(4)), strict=True))
        ranked = sorted(endpoints[key].items(), key=lambda item: (-item[1], item[0]))[:TOP_ENDPOINTS]
        result[key] = {
            **totals,
            "per_minute": buckets,
            "per_day": [UsageBucket(d, *v) for d, v in sorted(per_day[key].items())],
            "top_endpoints": ranked,
            "last_used": max(m for m, v in minutes.items() if v[0]),
            "scopes": sorted(
                (ScopeUsage(scope, *sums) for scope, sums in scopes[key].items()),
                key=lambda u: (-(u.allowed + u.refused), u.scope),
            ),
        }
    return result
