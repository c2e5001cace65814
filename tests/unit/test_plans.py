import pytest

from domain.errors import InvalidPlan
from domain.plans import Limits, Plan, limits_for, parse_plan


def test_standard_plans_have_their_fixed_limits():
    assert limits_for(Plan.STARTER) == Limits(60, 10_000)
    assert limits_for(Plan.PRO) == Limits(300, 100_000)


def test_enterprise_takes_custom_numbers():
    assert limits_for(Plan.ENTERPRISE, 1000, 2_000_000) == Limits(1000, 2_000_000)


@pytest.mark.parametrize("rpm,rpd", [(None, 10), (10, None), (0, 10), (10, -1), (20, 10), (True, 10), (1.5, 10)])
def test_enterprise_refuses_missing_or_nonsensical_numbers(rpm, rpd):
    with pytest.raises(InvalidPlan):
        limits_for(Plan.ENTERPRISE, rpm, rpd)


def test_standard_plans_refuse_custom_numbers():
    with pytest.raises(InvalidPlan, match="only for enterprise"):
        limits_for(Plan.PRO, 5, 10)


def test_unknown_plan_is_named_in_the_error():
    with pytest.raises(InvalidPlan, match="'gold'"):
        parse_plan("gold")
