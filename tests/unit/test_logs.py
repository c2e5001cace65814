"""`keyledger serve`'s text log lines read as the standard formatter would write them."""

from __future__ import annotations

import logging

import pytest

from keyledger.logs import TextFormatter, log_config

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
    assert log_config("text")["formatters"]["default"] == {"()": "keyledger.logs.TextFormatter"}
    assert TextFormatter()._fmt == FORMAT
