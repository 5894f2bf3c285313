"""The bounds of dates a person enters (cloud/horizons.py), and the services that check
them against the ``now`` they are given, whatever the edge did (issue 22, item 7)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from cloud import horizons
from cloud.control.operator import ControlAction, ControlRequest, _check
from cloud.errors import Invalid
from cloud.registry import admin_core
from cloud.tariffs.rules import RuleError, start_of

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
PLUS8 = timezone(timedelta(hours=8))


@pytest.mark.parametrize(
    ("horizon", "days"),
    [
        (horizons.KEEP_POWER, 366),
        (horizons.GRANT, 366),
        (horizons.TARIFF_START, 1827),
        (horizons.REPORT_DAY, 366),
    ],
)
def test_each_kind_reaches_its_horizon_and_no_further(horizon: horizons.Horizon, days: int) -> None:
    assert horizon.days == days
    assert horizon.problem(NOW + timedelta(days=days), NOW) is None
    assert horizon.problem(NOW + timedelta(days=days, seconds=1), NOW) == (
        f"must not be more than {days} days ahead"
    )
    assert horizon.problem(horizons.EARLIEST, NOW) is None
    assert horizon.problem(horizons.EARLIEST - timedelta(seconds=1), NOW) == (
        "must not be before 2000-01-01"
    )
    today = NOW.date()
    assert horizon.day_problem(today + timedelta(days=days), today) is None
    assert horizon.day_problem(today + timedelta(days=days + 1), today) is not None
    assert horizon.day_problem(date(1999, 12, 31), today) is not None


def test_the_extremes_compare_without_overflowing() -> None:
    # converting these to UTC raises OverflowError; comparing them does not
    low = datetime(1, 1, 1, tzinfo=PLUS8)
    high = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-8)))
    assert horizons.KEEP_POWER.problem(low, NOW) == "must not be before 2000-01-01"
    assert horizons.KEEP_POWER.problem(high, NOW) == "must not be more than 366 days ahead"


def test_keep_power_until_is_bounded_by_the_service() -> None:
    def keep(until: datetime) -> ControlRequest:
        return ControlRequest(ControlAction.KEEP_POWER_ON, "hospital", until=until)

    _check(keep(NOW + timedelta(days=366)), NOW)
    with pytest.raises(Invalid, match="more than 366 days ahead"):
        _check(keep(datetime(4496, 1, 1, tzinfo=UTC)), NOW)
    with pytest.raises(Invalid, match="not in the future"):
        _check(keep(datetime(1, 1, 1, tzinfo=PLUS8)), NOW)


def test_a_tariff_version_starts_at_most_five_years_ahead() -> None:
    assert start_of(NOW + timedelta(days=1827), NOW, ()) == NOW + timedelta(days=1827)
    with pytest.raises(RuleError, match="more than 1827 days ahead"):
        start_of(datetime(4496, 1, 1, tzinfo=UTC), NOW, ())
    with pytest.raises(RuleError, match="in the past"):
        start_of(datetime(1, 1, 1, tzinfo=PLUS8), NOW, ())


def test_a_grant_starts_and_ends_within_a_year() -> None:
    grantee = admin_core.Reach("outlet", frozenset(), frozenset())
    outlet, site = uuid.uuid4(), uuid.uuid4()

    def grant(starts: datetime, ends: datetime) -> admin_core.GrantDraft:
        draft = admin_core.GrantDraft(outlet, starts, ends, "cover the counter")
        return admin_core.grant(draft, NOW, grantee, site)

    soon = NOW + timedelta(days=300)
    assert grant(soon, soon + timedelta(days=30)).starts_at == soon
    late = NOW + timedelta(days=360)
    with pytest.raises(Invalid, match="at most 366 days ahead"):
        grant(late, late + timedelta(days=10))
    far = datetime(4496, 1, 1, tzinfo=UTC)
    with pytest.raises(Invalid, match="at most 366 days ahead"):
        grant(far, far + timedelta(days=1))
