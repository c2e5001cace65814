"""`keyledger serve`'s log lines: text as the standard formatter writes it, written in batches."""

from __future__ import annotations

import io
import logging
import time

import pytest

from keyledger.logs import BatchingHandler, TextFormatter, log_config

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STANDARD = logging.Formatter(FORMAT)


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s"', ("a", "GET", "/"), None)
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    return record


@pytest.mark.parametrize(
    "moments",
    [
        [1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0],  # across a second: the cached text moves on
        [1_700_000_059.5, 1_700_000_060.001, 1_700_000_059.9],  # a record of the second before comes late
        [0.0, 86_399.999, 86_400.0],
    ],
)
def test_text_lines_are_the_standard_formatters(moments: list[float]):
    formatter = TextFormatter()
    assert [formatter.format(_record(t)) for t in moments] == [STANDARD.format(_record(t)) for t in moments]


def test_serve_writes_text_lines_with_this_formatter_in_the_documented_format():
    config = log_config("text")
    assert config["formatters"]["default"] == {"()": "keyledger.logs.TextFormatter"}
    assert config["handlers"]["default"]["class"] == "keyledger.logs.BatchingHandler"
    assert TextFormatter()._fmt == FORMAT


def _handler() -> tuple[logging.Logger, io.StringIO, BatchingHandler]:
    stream = io.StringIO()
    handler = BatchingHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test-logs-{id(stream)}")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    return logger, stream, handler


def test_info_lines_are_written_together_within_the_flush_interval():
    logger, stream, handler = _handler()
    try:
        for n in range(3):
            logger.info("request %d", n)
        deadline = time.monotonic() + 5
        while stream.getvalue().count("\n") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.getvalue() == "INFO request 0\nINFO request 1\nINFO request 2\n"
    finally:
        handler.close()


def test_a_warning_is_written_at_once_after_the_lines_before_it_and_close_writes_the_rest():
    logger, stream, handler = _handler()
    with handler.lock:  # type: ignore[union-attr]  # the flusher thread cannot write meanwhile
        logger.info("before")
        logger.warning("trouble")
        written = stream.getvalue()
        logger.info("after")
    handler.close()

    assert written == "INFO before\nWARNING trouble\n"
    assert stream.getvalue() == "INFO before\nWARNING trouble\nINFO after\n"


def test_a_full_batch_is_written_without_waiting():
    logger, stream, handler = _handler()
    line = "x" * 1000
    with handler.lock:  # type: ignore[union-attr]
        for _ in range(BatchingHandler.MAX_PENDING // 1000 + 1):
            logger.info(line)
        written = stream.getvalue().count("\n")
    handler.close()

    assert written == BatchingHandler.MAX_PENDING // 1000 + 1
