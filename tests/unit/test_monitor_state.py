"""A point's state on the room monitor from its live values, and a room's from its points."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cloud.monitor.state import STALE, Live, State, most_urgent, point_state

NOW = datetime(2026, 12, 3, 8, tzinfo=UTC)
OK = Live(
    opened=True,
    balance=Decimal("50.00"),
    credit_limit=Decimal("0"),
    emergency_credit=Decimal("0"),
    alarm1=Decimal("20.00"),
    alarm2=Decimal("10.00"),
    keep_power=False,
    reported="on",
    gateway_online=True,
    last_reading_at=NOW - timedelta(minutes=5),
)


def state(**changes: object) -> State:
    return point_state(replace(OK, **changes), NOW)  # type: ignore[arg-type]


def test_the_balance_decides_between_credit_alarms_emergency_and_arrears() -> None:
    assert state() == State.CREDIT
    assert state(balance=Decimal("20.00")) == State.ALARM1
    assert state(balance=Decimal("9.99")) == State.ALARM2
    assert state(balance=Decimal("0.00")) == State.ARREARS
    assert state(balance=Decimal("-5.00"), emergency_credit=Decimal("10")) == State.EMERGENCY
    assert state(balance=Decimal("-10.00"), emergency_credit=Decimal("10")) == State.ARREARS
    no_alarms = {"alarm1": None, "alarm2": None}
    assert state(balance=Decimal("-5.00"), credit_limit=Decimal("10"), **no_alarms) == State.CREDIT


def test_a_cut_supply_is_in_arrears_whatever_the_balance() -> None:
    assert state(reported="off") == State.ARREARS


def test_keep_power_shows_over_arrears_until_the_supply_is_off() -> None:
    assert state(keep_power=True, balance=Decimal("-3.00")) == State.KEEP_POWER
    assert state(keep_power=True, reported="off") == State.ARREARS


def test_lost_contact_and_not_opened() -> None:
    assert state(gateway_online=False) == State.LOST
    assert state(last_reading_at=None) == State.LOST
    assert state(last_reading_at=NOW - STALE - timedelta(seconds=1)) == State.LOST
    assert state(last_reading_at=NOW - STALE) == State.CREDIT
    assert state(opened=False, gateway_online=False) == State.NOT_OPENED


def test_a_room_takes_its_most_urgent_points_state() -> None:
    assert most_urgent([State.CREDIT, State.ALARM1, State.KEEP_POWER]) == State.ALARM1
    assert most_urgent([State.CREDIT, State.LOST]) == State.LOST
    assert most_urgent([]) == State.NOT_OPENED
