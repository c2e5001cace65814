"""Credits (SPEC 8.1) as counted: periods, allowances, refills, and exact spending over threads."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from adapters.credits import CreditGate
from adapters.quotas import LocalCounters
from domain.errors import InvalidCredits
from domain.keycredits import Credits, Refill, check_credits

SET_AT = datetime(2027, 1, 31, 23, 0, tzinfo=UTC)


def test_without_a_refill_the_credits_set_are_all_there_is():
    credits = Credits(5, None, SET_AT, 1)
    later = datetime(2030, 1, 1, tzinfo=UTC)

    assert credits.period(SET_AT) == credits.period(later) == ""
    assert credits.allowance("") == 5 and credits.seconds_to_refill(later) is None


def test_a_daily_refill_resets_to_its_amount_from_the_next_utc_day():
    credits = Credits(2, Refill(10, "day"), SET_AT, 3)
    next_day = datetime(2027, 2, 1, 0, 0, 1, tzinfo=UTC)

    assert credits.period(SET_AT) == "d2027-01-31" and credits.allowance("d2027-01-31") == 2
    assert credits.period(next_day) == "d2027-02-01" and credits.allowance("d2027-02-01") == 10
    assert credits.is_refill("d2027-02-01") and not credits.is_refill("d2027-01-31")
    assert credits.seconds_to_refill(SET_AT) == 3600


def test_a_monthly_refill_comes_with_the_next_utc_month_even_in_december():
    credits = Credits(2, Refill(10, "month"), SET_AT, 1)
    december = datetime(2027, 12, 31, 23, 59, 30, tzinfo=UTC)

    assert credits.period(SET_AT) == "m2027-01" and credits.period(december) == "m2027-12"
    assert credits.seconds_to_refill(december) == 30
    assert credits.seconds_to_refill(SET_AT) == 3600  # February starts an hour later


@pytest.mark.parametrize(
    "values",
    [
        (-1, None, None),
        (True, None, None),
        (1.0, None, None),
        (1, 5, "week"),
        (1, 0, "day"),
        (1, 5, None),
        (1, None, "day"),
    ],
)
def test_bad_credits_are_refused(values):
    with pytest.raises(InvalidCredits):
        check_credits(*values)


def test_threads_spend_exactly_the_allowance_refund_and_restore():
    gate = CreditGate(LocalCounters())
    key, credits, now = uuid4(), Credits(100, None, SET_AT, 1), SET_AT
    allowed: list[bool] = []
    lock = threading.Lock()

    def spend() -> None:
        for _ in range(30):
            decision = gate.spend(key, credits, now)
            with lock:
                allowed.append(decision.allowed)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gate.refund(key, credits, "")
    restored = CreditGate(LocalCounters())
    restored.restore(key, 1, "", 99)

    assert allowed.count(True) == 100 and allowed.count(False) == 140
    assert gate.remaining(key, credits, now) == 1 == restored.remaining(key, credits, now)
    assert gate.remaining(key, Credits(100, None, SET_AT, 2), now) == 100  # a new setting counts afresh
