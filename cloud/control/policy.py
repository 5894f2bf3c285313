"""Supply policy over plain values (DESIGN.md §6): what a point's supply should be, and the
events a decision raises. No database, no clock, no network: ``now`` and the holiday
calendar come in as arguments.

Precedence, highest first:

1. **keep-power** (保电) while it lasts: never cut.
2. a **manual override** while it lasts (an operator's trip or restore). One made because of
   arrears (``until_credit``) ends by itself once the point is back in credit.
3. **in credit** (balance above −credit limit), or within **emergency credit** below it: on.
4. **exhausted**: a point already cut stays cut; otherwise a **notice period** runs first
   (the arrears notice is raised once when it starts), then **friendly hours** (night,
   weekends, Chinese public holidays, adjusted working days honoured) postpone the cut to
   their end, and only then is the supply cut.

Alarm levels 1 and 2 each raise one event per downward crossing of their threshold; a
level re-arms only once the balance has risen ``hysteresis`` above its threshold. A drop
through both thresholds at once raises level 2 only (one message, the one that matters).

Every decision carries ``recheck_at``: the moment it can change with no new reading or
payment (a notice or friendly period ending, keep-power or an override expiring), so a
sweep re-decides exactly the points that are due.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo


class SupplyState(StrEnum):
    ON = "on"
    OFF = "off"


class EventKind(StrEnum):
    LOW_BALANCE_1 = "low_balance_1"
    LOW_BALANCE_2 = "low_balance_2"
    EMERGENCY_CREDIT = "emergency_credit"
    ARREARS_NOTICE = "arrears_notice"
    SUPPLY_CUT = "supply_cut"
    SUPPLY_RESTORED = "supply_restored"
    CUT_DEFERRED = "cut_deferred"
    KEEP_POWER_EXPIRED = "keep_power_expired"
    OVERRIDE_EXPIRED = "override_expired"


@dataclass(frozen=True)
class PolicyEvent:
    kind: EventKind
    detail: str


class Calendar(Protocol):
    def is_workday(self, day: date) -> bool | None:
        """True/False per the official calendar; None for a year it does not cover."""

    def holiday_name(self, day: date) -> str | None: ...


class WeekdayCalendar:
    """Monday to Friday are workdays: no public holidays known."""

    def is_workday(self, day: date) -> bool | None:
        return None

    def holiday_name(self, day: date) -> str | None:
        return None


class ChineseCalendar:
    """China's official working days and public holidays (``chinese-calendar``, which
    follows the State Council's yearly schedule, adjusted working days included)."""

    def is_workday(self, day: date) -> bool | None:
        import chinese_calendar

        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:  # a year the package does not cover yet
            return None

    def holiday_name(self, day: date) -> str | None:
        import chinese_calendar

        try:
            on_holiday, name = chinese_calendar.get_holiday_detail(day)
        except NotImplementedError:
            return None
        return str(name) if on_holiday and name else None


@dataclass(frozen=True)
class FriendlyHours:
    """When no supply is cut for arrears, in the site's time zone. A night window may wrap
    midnight (22:00–08:00); ``None`` for no night window."""

    timezone: str = "Asia/Shanghai"
    night_start: time | None = time(22)
    night_end: time | None = time(8)
    weekends: bool = True
    holidays: bool = True

    def why(self, local: datetime, cal: Calendar) -> str | None:
        """Why ``local`` (a time in the site's zone) is friendly, or None."""
        day = local.date()
        workday = cal.is_workday(day)
        if self.holidays and workday is False:
            name = cal.holiday_name(day)
            if name is not None:
                return f"public holiday ({name})"
        if self.weekends and day.weekday() >= 5 and workday is not True:
            return "weekend"
        if self.holidays and workday is False and day.weekday() < 5:
            return "public holiday"
        if self.night_start is not None and self.night_end is not None:
            t = local.timetz().replace(tzinfo=None)
            s, e = self.night_start, self.night_end
            if (s <= t < e) if s < e else (t >= s or t < e):
                return "night"
        return None

    def window(self, now: datetime, cal: Calendar) -> tuple[str, datetime] | None:
        """(why, until) when ``now`` is friendly: until is the first instant that is not."""
        tz = ZoneInfo(self.timezone)
        local = now.astimezone(tz)
        why = self.why(local, cal)
        if why is None:
            return None
        # Friendliness only changes at midnight and at the night window's edges.
        edges = [t for t in (time(0), self.night_start, self.night_end) if t is not None]
        day = local.date()
        for offset in range(0, 40):  # the longest holiday runs are about nine days
            d = day + timedelta(days=offset)
            for t in sorted(set(edges)):
                at = datetime.combine(d, t, tzinfo=tz)
                if at > local and self.why(at, cal) is None:
                    return why, at.astimezone(now.tzinfo)
        return why, (local + timedelta(days=40)).astimezone(now.tzinfo)


@dataclass(frozen=True)
class KeepPower:
    by: str
    reason: str
    until: datetime | None = None

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True)
class Override:
    supply: SupplyState
    by: str
    reason: str
    until: datetime | None = None
    until_credit: bool = False  # ends once the point is back in credit

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True)
class PointPolicy:
    """A point's control settings (service point and site)."""

    credit_limit: Decimal = Decimal(0)
    emergency_credit: Decimal = Decimal(0)
    alarm1: Decimal | None = None  # level 1 threshold (the higher one)
    alarm2: Decimal | None = None  # level 2 threshold
    hysteresis: Decimal = Decimal("1.00")
    notice: timedelta = timedelta(0)
    friendly: FriendlyHours | None = field(default_factory=FriendlyHours)


@dataclass(frozen=True)
class ControlMemory:
    """What the policy remembers between decisions (the point's control state)."""

    supply: SupplyState | None = None  # the last desired state
    alarm_level: int = 0
    emergency: bool = False
    notice_at: datetime | None = None
    keep_power: KeepPower | None = None
    override: Override | None = None
    deferred_until: datetime | None = None  # a cut postponed by notice or friendly hours


@dataclass(frozen=True)
class Decision:
    supply: SupplyState
    reason: str
    memory: ControlMemory
    events: tuple[PolicyEvent, ...] = ()
    recheck_at: datetime | None = None


def in_arrears(balance: Decimal, policy: PointPolicy) -> bool:
    """At or below the credit limit: what the pre-disconnection check asks."""
    return balance <= -policy.credit_limit


def alarm_level(
    balance: Decimal, alarm1: Decimal | None, alarm2: Decimal | None, h: Decimal, prev: int
) -> int:
    raw = 2 if alarm2 is not None and balance <= alarm2 else 0
    if raw == 0 and alarm1 is not None and balance <= alarm1:
        raw = 1
    if raw >= prev:
        return raw
    level = prev
    while level > raw:  # leave a level only once clear of its threshold by the hysteresis
        threshold = alarm2 if level == 2 else alarm1
        if threshold is None or balance > threshold + h:
            level -= 1
        else:
            break
    return level


def _alarms(
    balance: Decimal, policy: PointPolicy, mem: ControlMemory
) -> tuple[int, list[PolicyEvent]]:
    level = alarm_level(balance, policy.alarm1, policy.alarm2, policy.hysteresis, mem.alarm_level)
    if level <= mem.alarm_level:
        return level, []
    kind, threshold = (
        (EventKind.LOW_BALANCE_2, policy.alarm2)
        if level == 2
        else (EventKind.LOW_BALANCE_1, policy.alarm1)
    )
    return level, [PolicyEvent(kind, f"balance {balance} at or below {threshold}")]


def alarms_only(balance: Decimal, policy: PointPolicy, mem: ControlMemory) -> Decision:
    """For a meter-controlled point: the meter decides supply; the cloud raises the alarm
    events from the balance the meter reports."""
    level, events = _alarms(balance, policy, mem)
    supply = mem.supply or SupplyState.ON
    return Decision(
        supply, "the meter controls supply", replace(mem, alarm_level=level), tuple(events)
    )


def decide(
    balance: Decimal, policy: PointPolicy, mem: ControlMemory, now: datetime, cal: Calendar
) -> Decision:
    """The desired supply of a cloud-controlled point, the events it raises, and the new
    memory. Pure: the same inputs always give the same decision."""
    events: list[PolicyEvent] = []
    keep = mem.keep_power
    if keep is not None and not keep.active(now):
        events.append(PolicyEvent(EventKind.KEEP_POWER_EXPIRED, f"keep-power by {keep.by} expired"))
        keep = None
    in_credit = not in_arrears(balance, policy)
    override = mem.override
    if override is not None and not override.active(now):
        events.append(
            PolicyEvent(
                EventKind.OVERRIDE_EXPIRED, f"{override.supply} override by {override.by} expired"
            )
        )
        override = None
    elif override is not None and override.until_credit and in_credit:
        override = None  # the arrears it was about are paid
    level, alarm_events = _alarms(balance, policy, mem)
    events += alarm_events
    floor = -(policy.credit_limit + policy.emergency_credit)
    exhausted = balance <= floor
    emergency = not in_credit and not exhausted
    if emergency and not mem.emergency:
        events.append(
            PolicyEvent(
                EventKind.EMERGENCY_CREDIT,
                f"balance {balance}: using emergency credit down to {floor}",
            )
        )
    notice_at = mem.notice_at if exhausted else None
    recheck: list[datetime] = []
    if keep is not None and keep.until is not None:
        recheck.append(keep.until)
    if override is not None and override.until is not None:
        recheck.append(override.until)

    supply: SupplyState
    deferred: datetime | None = None
    if keep is not None:
        supply, reason = SupplyState.ON, f"keep-power by {keep.by}: {keep.reason}"
    elif override is not None:
        supply, reason = override.supply, f"{override.supply} by {override.by}: {override.reason}"
    elif not exhausted:
        supply = SupplyState.ON
        state = "in emergency credit" if emergency else "in credit"
        reason = f"balance {balance} {state}"
    elif mem.supply is SupplyState.OFF:
        supply, reason = SupplyState.OFF, f"balance {balance} exhausted (floor {floor})"
    else:
        cut = _before_cut(balance, floor, policy, notice_at, now, cal)
        supply, reason, notice_at, deferred = cut.supply, cut.reason, cut.notice_at, cut.until
        events += cut.events
        if deferred is not None:
            recheck.append(deferred)
            if cut.friendly and deferred != mem.deferred_until:
                events.append(PolicyEvent(EventKind.CUT_DEFERRED, reason))
    if mem.supply is not None and supply is not mem.supply:
        kind = EventKind.SUPPLY_CUT if supply is SupplyState.OFF else EventKind.SUPPLY_RESTORED
        events.append(PolicyEvent(kind, reason))
    elif mem.supply is None and supply is SupplyState.OFF:
        events.append(PolicyEvent(EventKind.SUPPLY_CUT, reason))
    memory = ControlMemory(supply, level, emergency, notice_at, keep, override, deferred)
    return Decision(supply, reason, memory, tuple(events), min(recheck) if recheck else None)


@dataclass(frozen=True)
class _Cut:
    supply: SupplyState
    reason: str
    notice_at: datetime | None
    events: tuple[PolicyEvent, ...] = ()
    until: datetime | None = None  # the cut is deferred until then
    friendly: bool = False


def _before_cut(
    balance: Decimal,
    floor: Decimal,
    policy: PointPolicy,
    notice_at: datetime | None,
    now: datetime,
    cal: Calendar,
) -> _Cut:
    events: tuple[PolicyEvent, ...] = ()
    if policy.notice > timedelta(0):
        if notice_at is None:
            notice_at = now
            events = (
                PolicyEvent(
                    EventKind.ARREARS_NOTICE,
                    f"balance {balance} exhausted; supply will be cut after "
                    f"{(now + policy.notice).isoformat()} unless topped up",
                ),
            )
        if now < notice_at + policy.notice:
            until = notice_at + policy.notice
            reason = f"arrears notice until {until.isoformat()}"
            return _Cut(SupplyState.ON, reason, notice_at, events, until)
    window = policy.friendly.window(now, cal) if policy.friendly is not None else None
    if window is not None:
        why, until = window
        reason = f"friendly hours ({why}): cut deferred to {until.isoformat()}"
        return _Cut(SupplyState.ON, reason, notice_at, events, until, friendly=True)
    return _Cut(SupplyState.OFF, f"balance {balance} exhausted (floor {floor})", notice_at, events)
