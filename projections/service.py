"""ReadModels: the facade the API and the CLI use to keep read models caught up and to query them. A thread
follows the stream (every POLL_INTERVAL, at once on `nudge()`) and signals after each batch, so `wait(position)`
returns within milliseconds; queries read active generations only."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from adapters.database import DatabaseSettings, create_read_engine, read_transaction
from domain.application import KeyLedger
from projections.audit import AuditProjection, AuditQueries
from projections.base import Projection, Tables
from projections.bulk import MIN_EVENTS, Bulk
from projections.errors import ProjectionFailed, ProjectionNotReady, RebuildInProgress, UnknownProjection
from projections.insights import InsightsQueries
from projections.keys import KeyQueries, KeysProjection
from projections.runner import Generation, Progress, Runner, Step, describe_error, select_generations
from projections.usage import UsageProjection, UsageQueries

log = logging.getLogger(__name__)
T = TypeVar("T")
CATCH_UP_TIMEOUT = 600.0
POLL_INTERVAL = 0.075
RETRY_FIRST, RETRY_MAX = 0.25, 30.0  # pauses between retries of a failing projection or follower


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    version: int | None  # of the active generation; None before the first build
    position: int
    lag: int  # events in the store after `position`
    generation: int | None
    code_version: int  # differs from `version` until the projection is rebuilt
    state: str = "ok"  # ok, catching_up (lag > 0) or failing (it cannot apply the event after `position`)
    error: str | None = None
    failing_since: datetime | None = None


@dataclass
class _Failing:  # a projection this process saw fail: retried with growing pauses, reported meanwhile
    error: str
    attempts: int
    retry_at: float  # monotonic


def _pause(attempts: int) -> float:
    return min(RETRY_MAX, RETRY_FIRST * 2.0**attempts)


class ReadModels(KeyQueries, UsageQueries, AuditQueries, InsightsQueries):
    def __init__(
        self,
        settings: DatabaseSettings,
        ledger: KeyLedger,
        *,
        projections: Sequence[Projection[Any]] | None = None,
        batch_size: int = 1000,
        rebuild_batch_size: int = 5000,
        rebuild_workers: bool = True,
        rebuild_workers_min_events: int = MIN_EVENTS,
    ) -> None:
        self.catalog = ledger.catalog
        self.engine = create_read_engine(settings, ledger.env.get("SQLITE_DBNAME"))
        listed = projections or [KeysProjection(), UsageProjection(), AuditProjection()]
        bulk = Bulk(settings, ledger, rebuild_workers, rebuild_workers_min_events)
        self.runner = Runner(self.engine, ledger, listed, batch_size, rebuild_batch_size, bulk)
        self.projections = self.runner.projections
        self.names = tuple(self.projections)
        self._changed = threading.Condition()  # on an RLock; signalled whenever what it guards moves
        self._generations: dict[str, Generation] = {}  # the active ones, as last seen
        self._failing: dict[str, _Failing] = {}
        self._waiters = 0
        self._wake, self._stopping = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._set_up = self._current = False
        self._stalled: str | None = None  # why the follower itself last failed (the store unreachable, say)
        self.failure_counts: dict[str, int] = dict.fromkeys(self.names, 0)  # for the metrics

    def start(self) -> None:
        """Build what is missing or outdated, then follow the stream in the background (failures: reported, retried)."""
        if self._thread is None:
            try:
                self.ensure_current()
            except Exception as error:
                self._stall(error)
            self._stopping.clear()
            self._thread = threading.Thread(target=self._follow, name="keyledger-read-models", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake.set()
            thread.join(timeout=30)

    def close(self) -> None:
        self.stop()
        self.engine.dispose()

    def nudge(self) -> None:
        """A command was just saved in this process: poll now rather than at the next tick."""
        self._wake.set()

    def ensure_current(self, progress: Progress | None = None) -> list[str]:
        """Rebuild every read model never built or whose VERSION was raised (waiting for other processes' rebuilds)."""
        self._setup()
        rebuilt: list[str] = []
        while stale := self._stale():
            try:
                self.runner.rebuild(stale, progress)
                rebuilt += stale
            except RebuildInProgress as error:
                log.info("%s; waiting", error)
                time.sleep(0.5)
            except Exception as error:
                if len(stale) == 1:
                    self._fail(stale[0], error)
                for name in stale if len(stale) > 1 else ():  # one failing must not leave the others unbuilt
                    try:
                        self.runner.rebuild([name], progress)
                    except Exception as one:
                        self._fail(name, one)
                self._refresh()
                raise
        self._current = True
        self._refresh()
        return rebuilt

    def _stale(self) -> list[str]:
        """The read models to rebuild: never built, or of an older VERSION (refused: built by newer code)."""
        active = self.runner.active()
        for name, generation in active.items():
            if generation.version > (code := self.projections[name].VERSION):
                raise ProjectionNotReady(
                    f"read model {name!r} was built by newer code (version {generation.version}, "
                    f"this code has {code}); upgrade this process"
                )
        return [n for n in self.names if n not in active or active[n].version < self.projections[n].VERSION]

    def _setup(self) -> None:
        if not self._set_up:
            self.runner.setup()
            self._set_up = True

    def _follow(self) -> None:
        failures = build_failures = 0
        build_retry_at = 0.0
        while not self._stopping.is_set():
            self._wake.clear()  # before polling: a nudge during the poll triggers another one
            if not self._current and time.monotonic() >= build_retry_at:
                try:
                    self.ensure_current()
                except Exception as error:  # reported; the built read models are followed meanwhile
                    build_failures += 1
                    build_retry_at = time.monotonic() + _pause(build_failures)
                    self._stall(error)
            try:
                step = self._poll()
                failures = 0
            except Exception as error:
                failures += 1
                self._stall(error)
                self._stopping.wait(_pause(failures))
                continue
            if not (step.advanced and step.more):  # at the head, or nothing for us to apply
                self._wake.wait(0.01 if self._waiters else POLL_INTERVAL)

    def _poll(self) -> Step:
        """Apply one batch if the store is ahead, leaving out failing projections until their retry is due."""
        if self._reached(self.runner.head(), self.names):
            self._stalled = None
            return Step([], False, {})
        with self._changed:
            known = list(self._generations.values())
            waiting = {name for name, failing in self._failing.items() if failing.retry_at > time.monotonic()}
        step = self.runner.step(known, waiting)
        self._stalled = None
        for name, error in step.failed.items():
            self._fail(name, error)
        if step.advanced and len(step.advanced) == len(known) == len(self.names):
            self._record(step.advanced)
        else:  # skipped some (another process is on them) or saw none: read what is there
            self._refresh()
        return step

    def _fail(self, name: str, error: Exception) -> None:
        """One projection cannot apply the next event: report it, retry it later, let the others go on."""
        with self._changed:
            attempts = self._failing[name].attempts + 1 if name in self._failing else 1
            self._failing[name] = _Failing(describe_error(error), attempts, time.monotonic() + _pause(attempts))
            self.failure_counts[name] += 1
            self._changed.notify_all()  # whoever waits for it stops waiting
        log.error(
            "read model %r cannot apply the event after its position (attempt %d, next in %.1fs): %s",
            *(name, attempts, _pause(attempts), describe_error(error)),
            exc_info=error if attempts == 1 else None,
        )
        try:
            self.runner.record_failure(name, error)
        except Exception as unrecorded:
            log.warning("could not record the failure of read model %r: %s", name, describe_error(unrecorded))

    def _stall(self, error: Exception) -> None:
        """The follower itself failed (store unreachable, a rebuild failing): report it, retry later."""
        self._stalled = describe_error(error)
        with self._changed:
            self._changed.notify_all()
        log.error("read models: following the event stream failed; retrying: %s", self._stalled, exc_info=error)

    def _refresh(self) -> None:
        self._record(list(self.runner.active().values()))

    def _record(self, generations: Sequence[Generation]) -> None:
        """Remember the active generations this code can apply, and wake whoever waits on them."""
        with self._changed:
            for generation in self.runner.applicable(generations):
                known = self._generations.get(generation.name)
                if known is None or generation.position > known.position:
                    self._failing.pop(generation.name, None)  # built, or moved on: no longer failing
                self._generations[generation.name] = generation
            self._changed.notify_all()

    def _reached(self, position: int, names: Sequence[str]) -> bool:
        with self._changed:
            return all(n in self._generations and self._generations[n].position >= position for n in names)

    def _blocked(self, position: int, names: Sequence[str]) -> bool:
        """Whether one of these read models is failing before `position` (it will not reach it soon)."""
        with self._changed:
            return any(n in self._failing and not self._reached(position, [n]) for n in names)

    def catch_up(self) -> int:
        """Apply everything up to the current head, here and now; returns that position."""
        if not self.wait(head := self.runner.head(), timeout=CATCH_UP_TIMEOUT):
            with self._changed:
                for name, failing in self._failing.items():
                    raise ProjectionFailed(f"read model {name!r} cannot apply the stream: {failing.error}")
            raise TimeoutError(f"read models did not reach position {head}")
        return head

    def wait(self, position: int, names: Sequence[str] | None = None, timeout: float = 5.0) -> bool:
        """True once the named read models (default all) have applied `position`; False on timeout."""
        wanted, deadline = self.check_names(names) if names else self.names, time.monotonic() + timeout
        if self._thread is None and not self._reached(position, wanted):  # nobody follows: do it here
            if not self._current:
                self.ensure_current()
            while not self._reached(position, wanted):
                step = self._poll()
                if self._blocked(position, wanted) or time.monotonic() >= deadline:
                    return False
                if not step.advanced:
                    time.sleep(0.005)
        with self._changed:
            self._waiters += 1
            try:
                self._wake.set()
                while not self._reached(position, wanted):
                    if (remaining := deadline - time.monotonic()) <= 0 or self._blocked(position, wanted):
                        return False
                    self._changed.wait(remaining)
                return True
            finally:
                self._waiters -= 1

    def status(self) -> list[ProjectionStatus]:
        """Each read model's position and lag, and whether it is failing (seen here or by any process)."""
        self._setup()
        head, active = self.runner.head(), self.runner.active()
        recorded = self.runner.failures(active)
        with self._changed:
            local = {name: failing.error for name, failing in self._failing.items()}
        result = []
        for name, projection in self.projections.items():
            generation, failure = active.get(name), recorded.get(name)
            position = generation.position if generation else 0
            lag = max(0, head - position)
            error = local.get(name) or (failure.error if failure else None) or (self._stalled if lag else None)
            result.append(
                ProjectionStatus(
                    *(name, generation.version if generation else None, position, lag),
                    *(generation.generation if generation else None, projection.VERSION),
                    state="failing" if error else "catching_up" if lag else "ok",
                    error=error,
                    failing_since=failure.first_failed_at if failure else None,
                )
            )
        return result

    def rebuild(self, name: str | None = None, progress: Progress | None = None) -> None:
        names = self.check_names([name]) if name is not None else self.names
        self._setup()
        self.runner.rebuild(names, progress)
        self._refresh()

    def check_names(self, names: Sequence[str]) -> tuple[str, ...]:
        for unknown in (n for n in names if n not in self.projections):
            raise UnknownProjection(f"unknown projection {unknown!r}; known projections: {', '.join(self.names)}")
        return tuple(names)

    def _read(self, name: str, query: Callable[[Connection, Tables], T]) -> T:
        """Run `query` on the active generation of a read model, in one snapshot."""
        self._setup()
        projection, attempts = self.projections[name], 0
        while True:
            try:
                with read_transaction(self.engine) as conn:
                    active = select_generations(conn, [name], active=True)
                    if not active:
                        raise ProjectionNotReady(
                            f"read model {name!r} is not built yet (keyledger projections rebuild)"
                        )
                    if (version := active[0].version) != projection.VERSION:
                        raise ProjectionNotReady(
                            f"read model {name!r} is at version {version}; this code reads {projection.VERSION}"
                        )
                    return query(conn, projection.tables(active[0].generation))
            except DBAPIError:  # a rebuild may have switched and dropped it between our two statements
                attempts += 1
                if attempts == 3:
                    raise

    def applied(self, name: str) -> int:
        """The position this process last saw the named read model reach (0 before; kept by the follower); no I/O."""
        with self._changed:
            generation = self._generations.get(name)
            return generation.position if generation else 0
