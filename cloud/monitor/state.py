"""A point's state on the room monitor, from its live values (pure: no database, no clock).

The states, most urgent first, as a tile's colour takes its most urgent point's:
lost contact (the gateway is offline or the meter has not reported for ``STALE``), in
arrears or cut (the balance is past the credit limit and any emergency credit, or the
relay reports off), emergency credit, alarm 2, alarm 1, keep-power, not opened (no open
account or no meter installed), in credit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from cloud.control.policy import PointPolicy, alarm_level, in_arrears

#: A meter silent for longer than this is shown as lost contact.
STALE = timedelta(hours=2)


class State(StrEnum):
    LOST = "lost"
    ARREARS = "arrears"
    EMERGENCY = "emergency"
    ALARM2 = "alarm2"
    ALARM1 = "alarm1"
    KEEP_POWER = "keep_power"
    NOT_OPENED = "not_opened"
    CREDIT = "credit"


#: Most urgent first: a premises is shown in its most urgent point's state.
URGENCY = tuple(State)


@dataclass(frozen=True)
class Live:
    """What the monitor knows of a point now."""

    opened: bool  # an active account and a meter installed
    balance: Decimal | None
    credit_limit: Decimal
    emergency_credit: Decimal
    alarm1: Decimal | None
    alarm2: Decimal | None
    keep_power: bool
    reported: str | None  # the relay's or valve's reported state: on | off
    gateway_online: bool
    last_reading_at: datetime | None


def point_state(p: Live, now: datetime) -> State:
    if not p.opened:
        return State.NOT_OPENED
    if not p.gateway_online or p.last_reading_at is None or now - p.last_reading_at > STALE:
        return State.LOST
    balance = p.balance if p.balance is not None else Decimal(0)
    policy = PointPolicy(p.credit_limit, p.emergency_credit, p.alarm1, p.alarm2)
    exhausted = balance <= -(p.credit_limit + p.emergency_credit)
    if p.keep_power and p.reported != "off":
        return State.KEEP_POWER
    if p.reported == "off" or exhausted:
        return State.ARREARS
    if in_arrears(balance, policy):
        return State.EMERGENCY
    level = alarm_level(balance, p.alarm1, p.alarm2, Decimal(0), 0)
    if level == 2:
        return State.ALARM2
    if level == 1:
        return State.ALARM1
    return State.CREDIT


def most_urgent(states: list[State]) -> State:
    """A premises' state: its most urgent point's (not opened when it has no point)."""
    return min(states, key=URGENCY.index) if states else State.NOT_OPENED
