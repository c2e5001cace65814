"""Differential test: every API process answers `POST /v1/verify` as a process started afresh would.

A seeded random sequence of lifecycle commands (issue, issue with an expiry a few seconds ahead, grant,
revoke a scope, rotate with a grace period, rotate with grace 0, revoke, plan change) is made through API
process A, through the `keyledger` command line and, on PostgreSQL with Redis, through API process B.
After each command returns, every live API process is asked about every known secret (the current and
previous secret of every key, plus the secret the command's key just had superseded) for a fixed set of scopes.
Each answer (`code`, `valid`, `key_id`, `workspace_id`, `scopes`, and `ratelimit.limit`, which shows a plan
change) must equal the reference: the answer of a process started afresh on the same store, i.e. the key
aggregate loaded from its events through a fresh store connection without any cache, judged by the domain's
pure rule. Zero differences are allowed. The seed is fixed (KEYLEDGER_TEST_DIFFERENTIAL_SEED overrides it)
and named in every failure; the commands follow from it, their timing does not.

- postgres+redis: A and B share one PostgreSQL schema and one Redis; the CLI runs with the same settings.
  A command through A or B must be reflected by both processes when it returns. A command through the CLI
  too, while `CLI_NOTIFIES_API` is true (the CLI then has to publish its changes through Redis).
- sqlite: A on a SQLite file and the CLI, no Redis. API commands must be reflected at once; a CLI change
  reaches A through its event-stream follower (about 0.25 s), so CLI commands get up to 1.5 s to agree.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import redis

from domain.credentials import digest, key_id_of
from domain.keys import ApiKey
from domain.verification import KeyCredentials, VerifyCode, check_credentials
from domain.workspace import Workspace
from keyledger.bootstrap import open_ledger
from keyledger.settings import Settings
from tests.api.server import KEYLEDGER, OPERATOR_TOKEN, Server, create_workspace
from tests.backends import (
    POSTGRES_URL,
    REDIS_URL,
    drop_pg_schema,
    new_pg_schema,
    postgres_problem,
    redis_problem,
    require,
)

# Strict for the CLI on postgres+redis: a CLI command must be reflected by every API process when it returns.
CLI_NOTIFIES_API = True
# Strict for the per-address throttle of NOT_FOUND answers (KEYLEDGER_NOT_FOUND_PER_MINUTE): the processes run
# with its default limit, which this run exceeds within a minute (a superseded secret answers NOT_FOUND, and every
# request comes from 127.0.0.1); it must still never change the answer about a key the store holds, whether or
# not a process has it cached. False runs the processes with the throttle off.
THROTTLE_SPARES_KNOWN_KEYS = True

SEED = int(os.environ.get("KEYLEDGER_TEST_DIFFERENTIAL_SEED", "20240611"))
COMMANDS = 200
# Keys issued by the run (besides the workspace's admin key), and keys issued with an expiry a few seconds
# ahead: they bound the secrets asked about after each command.
MAX_KEYS = 5
MAX_EXPIRING = 3
# Every known secret is asked about each of these scopes after every command.
SCOPES = ("read:nodes", "write:nodes", "read:edges", "admin", "read:events")
# What issue and grant hand out (admin, which includes everything, only now and then).
GRANTABLE = ("read:nodes", "write:nodes", "read:edges", "write:edges", "read:events", "read:livedata")
# Enterprise limits that stay far above what the run uses, so no answer is RATE_LIMITED; plan changes
# alternate between them. Per day is 100x per minute, so the minute window is always the binding one and
# `ratelimit.limit` is the workspace's per-minute number.
ENTERPRISE_LIMITS = ((100_000, 10_000_000), (150_000, 15_000_000), (200_000, 20_000_000))
SHORT_GRACES = (2, 3, 4, 5, 6)
# A comparison is skipped for a secret whose key expires, or (for a previous secret) whose grace period
# ends, within this many seconds of the comparison: at that clock boundary the reference and a process
# may each be right about a different side of it.
CLOCK_BOUNDARY = 1.0
# How long a CLI change may take to reach an API process that only learns of it by following the stream.
FOLLOW_WINDOW = 1.5
# Concurrent verify requests per API process (one keep-alive httpx client per process, shared by its threads).
THREADS_PER_PROCESS = 3
KINDS = ("issue", "issue_expiring", "grant", "revoke_scope", "rotate", "rotate_grace_0", "revoke", "plan")


# --- the deployment under test -------------------------------------------------------------------------


@dataclass
class Deployment:
    name: str
    settings: Settings
    servers: dict[str, Server]
    cli_env: dict[str, str]
    redis_url: str | None


def server_env() -> dict[str, str]:
    return {} if THROTTLE_SPARES_KNOWN_KEYS else {"KEYLEDGER_NOT_FOUND_PER_MINUTE": "0"}


def cli_env(settings: Settings, redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYLEDGER_")}
    env["KEYLEDGER_DATABASE_URL"] = settings.database_url
    if settings.database_schema:
        env["KEYLEDGER_DATABASE_SCHEMA"] = settings.database_schema
    if redis_url:
        env["KEYLEDGER_REDIS_URL"] = redis_url
    return env


@pytest.fixture(params=["postgres+redis", "sqlite"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    if request.param == "sqlite":
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'keyledger.db'}", database_schema=None)
        a = Server(settings, tmp_path / "a.log", extra_env=server_env()).start()
        try:
            yield Deployment(request.param, settings, {"A": a}, cli_env(settings, None), None)
        finally:
            a.stop()
        return
    require("PostgreSQL", postgres_problem())
    require("Redis", redis_problem())
    schema = new_pg_schema()
    settings = Settings(database_url=POSTGRES_URL, database_schema=schema)
    servers: dict[str, Server] = {}
    try:
        servers["A"] = Server(settings, tmp_path / "a.log", REDIS_URL, server_env()).start()
        servers["B"] = Server(settings, tmp_path / "b.log", REDIS_URL, server_env()).start()
        yield Deployment(request.param, settings, servers, cli_env(settings, REDIS_URL), REDIS_URL)
    finally:
        for server in servers.values():
            server.stop()
        drop_pg_schema(schema)


def forget_redis_keys(redis_url: str, ids: list[UUID]) -> None:
    """Delete this run's Redis entries (change markers and quota counters, all named by key or workspace id).

    The API tests share Redis db 15 and never flush it (their ids are unique); only this run's ids go here,
    so a test running at the same time keeps its counters.
    """
    client = redis.Redis.from_url(redis_url)
    try:
        for item in ids:
            names = list(client.scan_iter(match=f"*{item}*", count=1000))
            if names:
                client.delete(*names)
    finally:
        client.close()


# --- what the test knows of the keys it made -------------------------------------------------------------


@dataclass
class TrackedKey:
    id: UUID
    secrets: list[str]  # every secret the key was given, oldest first
    scopes: list[str]
    revoked: bool = False
    expiring: bool = False  # issued with an expiry a few seconds ahead
    admin: bool = False  # the workspace's admin key: makes the API commands, is never changed

    def label(self) -> str:
        return "admin key" if self.admin else f"key {self.id}"


@dataclass(frozen=True)
class Command:
    number: int
    kind: str
    via: str  # "A", "B" or "CLI"
    key: TrackedKey | None
    args: dict[str, Any]

    def describe(self) -> str:
        target = f" {self.key.label()}" if self.key else ""
        details = ", ".join(f"{k}={v}" for k, v in self.args.items())
        return f"#{self.number} via {self.via}: {self.kind}{target}" + (f" ({details})" if details else "")


@dataclass(frozen=True)
class Probe:
    process: str
    secret: str
    scope: str


@dataclass
class Difference:
    probe: Probe
    key_id: UUID
    role: str  # the secret's role in the key: current, previous or superseded
    expected: dict[str, Any]
    actual: dict[str, Any]

    def describe(self) -> str:
        return (
            f"process {self.probe.process}, key {self.key_id} ({self.role} secret), scope {self.probe.scope}:\n"
            f"      reference {json.dumps(self.expected, sort_keys=True)}\n"
            f"      process   {json.dumps(self.actual, sort_keys=True)}"
        )


# --- the reference: a process started afresh on the same store --------------------------------------------


class Reference:
    """Judges a presented secret as a process started afresh would: the key aggregate loaded from the store
    through its own connection (no aggregate cache), decided by the domain's pure verification rule."""

    def __init__(self, settings: Settings) -> None:
        self.ledger = open_ledger(settings)
        assert self.ledger.repository.cache is None, "the reference must read the store, not a cache"

    def close(self) -> None:
        self.ledger.close()

    def snapshot(self, key_ids: set[UUID], workspace_id: UUID) -> tuple[dict[UUID, ApiKey], int]:
        """The keys as stored now, and the workspace's per-minute limit."""
        keys: dict[UUID, ApiKey] = {key_id: self.ledger.repository.get(key_id) for key_id in key_ids}
        workspace: Workspace = self.ledger.repository.get(workspace_id)
        return keys, workspace.requests_per_minute

    def credentials(self, key: ApiKey) -> KeyCredentials:
        return key.credentials(self.ledger.catalog)

    def answer(self, key: ApiKey, per_minute: int, secret: str, scope: str, now: datetime) -> dict[str, Any]:
        code = check_credentials(self.credentials(key), digest(secret), self.ledger.catalog.parse(scope), now)
        if code is VerifyCode.NOT_FOUND:
            return answer_fields(code.value, False, None, None, None, None)
        return answer_fields(
            code.value, code is VerifyCode.VALID, str(key.id), str(key.workspace_id), list(key.scopes), per_minute
        )


def answer_fields(
    code: str, valid: bool, key_id: str | None, workspace_id: str | None, scopes: list[str] | None, limit: int | None
) -> dict[str, Any]:
    return {
        "code": code,
        "valid": valid,
        "key_id": key_id,
        "workspace_id": workspace_id,
        "scopes": scopes,
        "ratelimit_limit": limit,
    }


def role_of(credentials: KeyCredentials, secret: str) -> str:
    presented = digest(secret)
    if presented == credentials.secret_digest:
        return "current"
    if presented == credentials.previous_digest:
        return "previous"
    return "superseded"


def near_clock_boundary(credentials: KeyCredentials, secret: str, start: float, end: float) -> bool:
    """Whether the key's expiry, or the grace end of a previous secret, falls within CLOCK_BOUNDARY of the
    comparison (which ran from `start` to `end`): the answer may flip during it, so it is not compared."""
    moments = [credentials.expires_at]
    if role_of(credentials, secret) == "previous":
        moments.append(credentials.previous_valid_until)
    return any(
        moment is not None and start - CLOCK_BOUNDARY <= moment.timestamp() <= end + CLOCK_BOUNDARY
        for moment in moments
    )


# --- the run ------------------------------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Run:
    deployment: Deployment
    reference: Reference
    rng: random.Random
    workspace_id: UUID
    admin: TrackedKey
    clients: dict[str, httpx.Client]
    pool: ThreadPoolExecutor
    keys: list[TrackedKey] = field(default_factory=list)
    limits: tuple[int, int] = ENTERPRISE_LIMITS[0]
    history: list[str] = field(default_factory=list)
    reference_codes: Counter[str] = field(default_factory=Counter)
    expiries_seen: Counter[str] = field(default_factory=Counter)
    covered: set[tuple[str, str]] = field(default_factory=set)
    compared: int = 0
    skipped: int = 0
    requests: int = 0
    cli_seconds: float = 0.0

    @property
    def processes(self) -> list[str]:
        return list(self.deployment.servers)

    # --- choosing a command ---

    def choose(self, number: int) -> Command:
        targets = [k for k in self.keys if not k.revoked]
        lasting = [k for k in targets if not k.expiring]
        issued = sum(not k.expiring for k in self.keys)
        expiring = sum(k.expiring for k in self.keys)
        weights = {
            "issue": (2.0 if len(lasting) < 4 else 0.6) if issued < MAX_KEYS else 0.0,
            "issue_expiring": 0.8 if expiring < MAX_EXPIRING else 0.0,
            "grant": 3.0 if targets else 0.0,
            "revoke_scope": 3.0 if targets else 0.0,
            "rotate": 3.0 if targets else 0.0,
            "rotate_grace_0": 2.0 if targets else 0.0,
            "revoke": 0.8 if len(lasting) >= 3 else 0.0,
            "plan": 1.2,
        }
        kind = self.rng.choices(list(weights), weights=list(weights.values()))[0]
        # Each kind goes once through every way in before the ways are drawn at random.
        ways = [*self.processes, "CLI"]
        unused = [way for way in ways if (kind, way) not in self.covered]
        share = [0.44, 0.44, 0.12] if len(ways) == 3 else [0.85, 0.15]
        via = self.rng.choice(unused) if unused else self.rng.choices(ways, weights=share)[0]
        if kind in ("issue", "issue_expiring"):
            scopes = sorted(set(self.rng.sample(GRANTABLE, self.rng.randint(1, 3))))
            if self.rng.random() < 0.1:
                scopes.append("admin")
            args: dict[str, Any] = {"scopes": scopes}
            if kind == "issue_expiring":
                args["expires_in"] = round(self.rng.uniform(3.0, 7.0), 1)
            return Command(number, kind, via, None, args)
        if kind == "plan":
            limits = self.rng.choice([pair for pair in ENTERPRISE_LIMITS if pair != self.limits])
            return Command(number, kind, via, None, {"rpm": limits[0], "rpd": limits[1]})
        # Mostly a key without an expiry (an expired key answers EXPIRED whatever its scopes and secrets).
        key = self.rng.choice(lasting if lasting and self.rng.random() < 0.8 else targets)
        if kind == "grant":
            args = {"scopes": sorted(set(self.rng.sample(GRANTABLE, self.rng.randint(1, 2))))}
            if self.rng.random() < 0.05:
                args["scopes"].append("admin")
        elif kind == "revoke_scope":
            # Mostly a scope the key holds; now and then one it does not (the command then changes nothing).
            held = key.scopes if key.scopes and self.rng.random() < 0.85 else GRANTABLE
            args = {"scope": self.rng.choice(held)}
        elif kind == "rotate":
            args = {"grace": self.rng.choice(SHORT_GRACES) if self.rng.random() < 0.8 else 86_400}
        elif kind == "rotate_grace_0":
            args = {"grace": 0}
        else:
            args = {"reason": f"differential {number}"}
        return Command(number, kind, via, key, args)

    # --- making it ---

    def execute(self, command: Command) -> None:
        key_json, secret = (
            self._through_cli(command) if command.via == "CLI" else self._through_api(command, command.via)
        )
        self.covered.add((command.kind, command.via))
        if command.kind in ("issue", "issue_expiring"):
            assert key_json is not None and secret is not None
            expiring = command.kind == "issue_expiring"
            self.keys.append(TrackedKey(UUID(key_json["id"]), [secret], list(key_json["scopes"]), expiring=expiring))
            assert (key_json["expires_at"] is not None) == expiring, key_json
            return
        if command.kind == "plan":
            self.limits = (command.args["rpm"], command.args["rpd"])
            return
        key = command.key
        assert key is not None and key_json is not None
        key.scopes = list(key_json["scopes"])
        if secret is not None:
            key.secrets.append(secret)
        if command.kind == "revoke":
            key.revoked = True
            assert key_json["status"] == "revoked", key_json

    def _through_api(self, command: Command, process: str) -> tuple[dict[str, Any] | None, str | None]:
        client = self.clients[process]
        ws = f"/v1/workspaces/{self.workspace_id}"
        admin = {"Authorization": f"Bearer {self.admin.secrets[-1]}"}
        args = command.args
        key = command.key
        if command.kind in ("issue", "issue_expiring"):
            body: dict[str, Any] = {"name": f"k{command.number}", "scopes": args["scopes"]}
            if "expires_in" in args:
                body["expires_at"] = rfc3339(datetime.now(UTC) + timedelta(seconds=args["expires_in"]))
            response = client.post(f"{ws}/keys", json=body, headers=admin)
            expected = 201
        elif command.kind == "plan":
            plan = {"plan": "enterprise", "requests_per_minute": args["rpm"], "requests_per_day": args["rpd"]}
            operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
            response = client.put(f"{ws}/plan", json=plan, headers=operator)
            expected = 200
        else:
            assert key is not None
            path = f"{ws}/keys/{key.id}"
            if command.kind == "grant":
                response = client.post(f"{path}/scopes", json={"scopes": args["scopes"]}, headers=admin)
            elif command.kind == "revoke_scope":
                response = client.delete(f"{path}/scopes/{args['scope']}", headers=admin)
            elif command.kind in ("rotate", "rotate_grace_0"):
                response = client.post(f"{path}/rotate", json={"grace_seconds": args["grace"]}, headers=admin)
            else:
                response = client.post(f"{path}/revoke", json={"reason": args["reason"]}, headers=admin)
            expected = 200
        assert response.status_code == expected, f"{command.describe()}: {response.status_code} {response.text}"
        body = response.json()
        if command.kind == "plan":
            return None, None
        if "secret" in body:
            return body["key"], body["secret"]
        return body, None

    def _through_cli(self, command: Command) -> tuple[dict[str, Any] | None, str | None]:
        args = command.args
        key = str(command.key.id) if command.key else ""
        if command.kind in ("issue", "issue_expiring"):
            argv = ["key", "issue", str(self.workspace_id), "--name", f"k{command.number}"]
            for scope in args["scopes"]:
                argv += ["--scope", scope]
            if "expires_in" in args:
                # The command needs a second or more to start (several on a loaded machine, where one took 7 s):
                # its expiry counts from about when it runs.
                expires_at = datetime.now(UTC) + timedelta(seconds=args["expires_in"] + 5.0)
                argv += ["--expires-at", rfc3339(expires_at)]
        elif command.kind == "plan":
            argv = ["workspace", "plan", str(self.workspace_id), "--plan", "enterprise"]
            argv += ["--rpm", str(args["rpm"]), "--rpd", str(args["rpd"])]
        elif command.kind == "grant":
            argv = ["key", "grant", key, *args["scopes"]]
        elif command.kind == "revoke_scope":
            argv = ["key", "revoke-scope", key, args["scope"]]
        elif command.kind in ("rotate", "rotate_grace_0"):
            argv = ["key", "rotate", key, "--grace", str(args["grace"])]
        else:
            argv = ["key", "revoke", key, "--reason", args["reason"]]
        started = time.monotonic()
        result = subprocess.run(
            [KEYLEDGER, *argv], capture_output=True, text=True, env=self.deployment.cli_env, timeout=60, check=False
        )
        self.cli_seconds += time.monotonic() - started
        assert result.returncode == 0, f"{command.describe()}: keyledger {' '.join(argv)}: {result.stderr}"
        body = json.loads(result.stdout)
        if command.kind == "plan":
            return None, None
        return body["key"], body.get("secret")

    # --- comparing ---

    def probes(self, command: Command) -> list[Probe]:
        # The command's key first: its answers are the ones a process that missed the change gets wrong, and
        # they are asked before anything else could let the process catch up. With it, the secret a rotation
        # just superseded (rotating again ends the earlier grace period at once: it answers NOT_FOUND).
        # Then every other key's current and previous secret.
        first = command.key.secrets[-3:] if command.key else []
        secrets = first + list(self.admin.secrets[-2:])
        secrets += [secret for key in self.keys if key is not command.key for secret in key.secrets[-2:]]
        return [Probe(p, secret, scope) for p in self.processes for secret in secrets for scope in SCOPES]

    def _ask(self, process: str, probes: list[Probe]) -> list[dict[str, Any]]:
        client = self.clients[process]
        answers = []
        for probe in probes:
            response = client.post("/v1/verify", json={"key": probe.secret, "scope": probe.scope})
            if response.status_code != 200:
                # SPEC 5: verify always answers 200 with the verdict in `code`; anything else is a difference.
                answers.append({"http_status": response.status_code, "body": response.text[:300]})
                continue
            body = response.json()
            answers.append(
                answer_fields(
                    body["code"],
                    body["valid"],
                    body["key_id"],
                    body["workspace_id"],
                    body["scopes"],
                    (body.get("ratelimit") or {}).get("limit"),
                )
            )
        return answers

    def compare(self, probes: list[Probe]) -> list[Difference]:
        """Ask every probe's process, judge the same secrets from the store, return the differences."""
        by_process: dict[str, list[Probe]] = {}
        for probe in probes:
            by_process.setdefault(probe.process, []).append(probe)
        # Each process gets THREADS_PER_PROCESS concurrent requests (interleaved, so the first probes go
        # first); meanwhile the reference reads the store, which no longer changes until the next command.
        start = time.time()
        chunks = [
            (
                process,
                items[i::THREADS_PER_PROCESS],
                self.pool.submit(self._ask, process, items[i::THREADS_PER_PROCESS]),
            )
            for process, items in by_process.items()
            for i in range(min(THREADS_PER_PROCESS, len(items)))
        ]
        keys, per_minute = self.reference.snapshot({key_id_of(p.secret) for p in probes}, self.workspace_id)
        answered = [
            (probe, actual) for _, items, future in chunks for probe, actual in zip(items, future.result(), strict=True)
        ]
        end = time.time()
        now = datetime.fromtimestamp(start, UTC)
        differences = []
        self.requests += len(answered)
        for probe, actual in answered:
            key = keys[key_id_of(probe.secret)]
            credentials = self.reference.credentials(key)
            if near_clock_boundary(credentials, probe.secret, start, end):
                self.skipped += 1
                continue
            self.compared += 1
            expected = self.reference.answer(key, per_minute, probe.secret, probe.scope, now)
            self.reference_codes[expected["code"]] += 1
            if expected["code"] == VerifyCode.EXPIRED.value:
                expired_key = credentials.expires_at is not None and credentials.expires_at <= now
                self.expiries_seen["key expired" if expired_key else "previous secret past its grace"] += 1
            if actual != expected:
                differences.append(Difference(probe, key.id, role_of(credentials, probe.secret), expected, actual))
        return differences

    def check(self, command: Command, returned: float) -> None:
        """After `command` returned (at monotonic time `returned`), every process must give the reference's answers."""
        differences = self.compare(self.probes(command))
        if not differences:
            return
        strict = command.via != "CLI" or (self.deployment.redis_url is not None and CLI_NOTIFIES_API)
        # A process that only follows the event stream gets FOLLOW_WINDOW to agree. One that must agree at once
        # is still watched for as long when it does not, to tell a late answer from a wrong one in the report.
        first = differences
        while differences and time.monotonic() < returned + FOLLOW_WINDOW:
            time.sleep(0.05)
            differences = self.compare([d.probe for d in differences])
        if strict or differences:
            self.fail(command, first if strict else differences, differences, time.monotonic() - returned)

    def fail(self, command: Command, shown: list[Difference], later: list[Difference], waited: float) -> None:
        if command.via != "CLI":
            rule = "a command through an API process must be reflected by every process when it returns"
        elif self.deployment.redis_url is not None and CLI_NOTIFIES_API:
            rule = "CLI_NOTIFIES_API: a CLI command must be reflected by every API process when it returns"
        else:
            rule = f"a CLI command must reach every API process within {FOLLOW_WINDOW} s"
        if later:
            outcome = f"{len(later)} answer(s) still differed {waited:.2f} s after the command returned"
        else:
            outcome = f"every process agreed with the reference {waited:.2f} s after the command returned (late)"
        lines = [d.describe() for d in shown[:12]] + ([f"... and {len(shown) - 12} more"] if len(shown) > 12 else [])
        pytest.fail(
            f"differential test (seed {SEED}, backend {self.deployment.name}): {len(shown)} answer(s) differ "
            f"from a process started afresh after command {command.describe()}\n"
            f"  rule: {rule}\n" + "".join(f"    {line}\n" for line in lines) + f"  {outcome}\n"
            "  the commands before it:\n" + "".join(f"    {line}\n" for line in self.history[-8:-1]),
            pytrace=False,
        )


@pytest.mark.slow
def test_every_process_answers_like_a_process_started_afresh(deployment: Deployment) -> None:
    started = time.monotonic()
    first_limits = ENTERPRISE_LIMITS[0]
    created = create_workspace(
        deployment.servers["A"],
        "enterprise",
        requests_per_minute=first_limits[0],
        requests_per_day=first_limits[1],
    )
    workspace_id = UUID(created["workspace"]["id"])
    admin_key = created["admin_key"]
    admin = TrackedKey(UUID(admin_key["key"]["id"]), [admin_key["secret"]], admin_key["key"]["scopes"], admin=True)
    reference = Reference(deployment.settings)
    clients = {name: server.client() for name, server in deployment.servers.items()}
    pool = ThreadPoolExecutor(max_workers=len(clients) * THREADS_PER_PROCESS)
    run = Run(deployment, reference, random.Random(SEED), workspace_id, admin, clients, pool, limits=first_limits)
    try:
        for number in range(1, COMMANDS + 1):
            command = run.choose(number)
            run.history.append(command.describe())
            run.execute(command)
            run.check(command, time.monotonic())
            for name, server in deployment.servers.items():
                assert server.process is not None and server.process.poll() is None, f"process {name} exited"
    finally:
        pool.shutdown()
        for client in clients.values():
            client.close()
        reference.close()
        if deployment.redis_url:
            forget_redis_keys(deployment.redis_url, [workspace_id, admin.id, *(k.id for k in run.keys)])

    elapsed = time.monotonic() - started
    summary = (
        f"seed {SEED}, {deployment.name}: {COMMANDS} commands in {elapsed:.1f} s (CLI {run.cli_seconds:.1f} s), "
        f"{run.requests} verify requests, {run.compared} comparisons, {run.skipped} skipped near a clock boundary; "
        f"reference codes {dict(run.reference_codes)}; EXPIRED {dict(run.expiries_seen)}"
    )
    print(summary)
    # The run must have exercised what it claims to: every command through every way in, every verdict
    # (a superseded secret answers NOT_FOUND), keys expiring and grace periods ending during the run.
    ways_in = [*deployment.servers, "CLI"]
    missing = sorted({(kind, via) for kind in KINDS for via in ways_in} - run.covered)
    assert not missing, f"seed {SEED} never made these (command, way in) pairs: {missing}; {summary}"
    for code in ("VALID", "INSUFFICIENT_SCOPE", "NOT_FOUND", "REVOKED", "EXPIRED"):
        assert run.reference_codes[code] > 0, f"no {code} answer was compared; {summary}"
    assert set(run.expiries_seen) == {"key expired", "previous secret past its grace"}, summary
    assert run.skipped < 0.15 * run.compared, f"too many comparisons skipped; {summary}"
