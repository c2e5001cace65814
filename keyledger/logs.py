"""Logging for `keyledger serve`: uvicorn's loggers and keyledger's, as text or as JSON lines."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339 UTC), level, logger, message, and the error if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`%(asctime)s %(levelname)s %(name)s: %(message)s`, the time's text made once a second (an access log
    line per request spent more on `time.strftime` than on the rest of its formatting)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached = self._second  # one tuple, replaced whole: threads never see half of it
        if cached[0] != second:
            cached = self._second = (second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)))
        return f"{cached[1]},{int(record.msecs):03d}"


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines to the stream in batches: at most `FLUSH_SECONDS` after they were logged, at once when a warning or
    error comes (after the lines before it) or `MAX_PENDING` characters wait, and at exit.

    An access log line per request was a write to stderr per request, as many system calls as the answer's own
    (DEVELOPERS.md, "Benchmarks"). A process killed outright loses the last `FLUSH_SECONDS` of lines.
    """

    FLUSH_SECONDS = 0.1
    MAX_PENDING = 64 * 1024

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._size = 0
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None
        # No keyledger format shows a record's process or thread: not looking them up spares a call per line.
        logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        self._size += len(line)
        if record.levelno >= logging.WARNING or self._size >= self.MAX_PENDING:
            self._write()
        elif self._flusher is None:
            self._flusher = threading.Thread(target=self._run, name="keyledger-log-flusher", daemon=True)
            self._flusher.start()

    def _write(self) -> None:
        if not self._pending:
            return
        text, self._pending, self._size = "".join(self._pending), [], 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "log lines lost", "levelno": logging.ERROR}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _run(self) -> None:
        while not self._stopping.wait(self.FLUSH_SECONDS):
            self.flush()

    def close(self) -> None:
        self._stopping.set()
        self.flush()
        super().close()


def log_config(log_format: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn's `log_config`: every logger to stderr in the chosen format."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if log_format == "json" else {"()": f"{__name__}.TextFormatter"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "default": {"class": f"{__name__}.BatchingHandler", "formatter": "default", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["default"], "level": "INFO", "propagate": False},
            # httpx logs each request's URL at INFO: a webhook's URL may carry a token in its query.
            "httpx": {"level": "WARNING"},
        },
    }
