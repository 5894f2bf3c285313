"""The supply policy, rule by rule, with a frozen clock (the policy takes ``now``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from cloud.control.policy import (
    ChineseCalendar,
    ControlMemory,
    EventKind,
    FriendlyHours,
    KeepPower,
    Override,
    PointPolicy,
    SupplyState,
    WeekdayCalendar,
    alarm_level,
    alarms_only,
    decide,
    in_arrears,
)

SH = ZoneInfo("Asia/Shanghai")
CAL = ChineseCalendar()
ON, OFF = SupplyState.ON, SupplyState.OFF
NO_FRIENDLY = PointPolicy(friendly=None)
FRIENDLY = PointPolicy()  # 22:00–08:00, weekends, public holidays


def at(y: int, m: int, d: int, hh: int = 12, mm: int = 0) -> datetime:
    """A Shanghai wall-clock time, as the aware UTC instant the policy is given."""
    return datetime(y, m, d, hh, mm, tzinfo=SH).astimezone(UTC)


def kinds(d: object) -> list[EventKind]:
    return [e.kind for e in d.events]  # type: ignore[attr-defined]


WED_NOON = at(2026, 11, 18, 12)  # an ordinary working Wednesday
SUPPLIED = ControlMemory(supply=ON)


def test_in_credit_stays_on_and_exhaustion_cuts() -> None:
    d = decide(Decimal("0.01"), NO_FRIENDLY, SUPPLIED, WED_NOON, CAL)
    assert d.supply is ON and kinds(d) == []
    d = decide(Decimal("0.00"), NO_FRIENDLY, SUPPLIED, WED_NOON, CAL)
    assert d.supply is OFF
    assert kinds(d) == [EventKind.SUPPLY_CUT]
    assert d.recheck_at is None


def test_credit_limit_lets_the_balance_go_negative() -> None:
    policy = PointPolicy(credit_limit=Decimal("20.00"), friendly=None)
    assert decide(Decimal("-19.99"), policy, SUPPLIED, WED_NOON, CAL).supply is ON
    assert decide(Decimal("-20.00"), policy, SUPPLIED, WED_NOON, CAL).supply is OFF
    assert in_arrears(Decimal("-20.00"), policy) and not in_arrears(Decimal("-19.99"), policy)


def test_emergency_credit_keeps_supply_below_the_limit_and_says_so_once() -> None:
    policy = PointPolicy(emergency_credit=Decimal("5.00"), friendly=None)
    d = decide(Decimal("-1.00"), policy, SUPPLIED, WED_NOON, CAL)
    assert d.supply is ON and "emergency" in d.reason
    assert kinds(d) == [EventKind.EMERGENCY_CREDIT]
    again = decide(Decimal("-3.00"), policy, d.memory, WED_NOON, CAL)
    assert again.supply is ON and kinds(again) == []
    gone = decide(Decimal("-5.00"), policy, again.memory, WED_NOON, CAL)
    assert gone.supply is OFF and kinds(gone) == [EventKind.SUPPLY_CUT]


def test_top_up_restores_at_once_even_at_night() -> None:
    cut = ControlMemory(supply=OFF)
    d = decide(Decimal("10.00"), FRIENDLY, cut, at(2026, 11, 20, 23), CAL)
    assert d.supply is ON and kinds(d) == [EventKind.SUPPLY_RESTORED]


def test_friday_23_00_defers_the_cut_until_monday_morning() -> None:
    friday_night = at(2026, 11, 20, 23)  # Friday; the weekend follows
    d = decide(Decimal("-0.50"), FRIENDLY, SUPPLIED, friday_night, CAL)
    assert d.supply is ON and "night" in d.reason
    assert kinds(d) == [EventKind.CUT_DEFERRED]
    assert d.recheck_at == at(2026, 11, 23, 8)  # night → Saturday → Sunday → Monday 08:00
    # re-deciding during the same deferral raises nothing new
    again = decide(Decimal("-0.80"), FRIENDLY, d.memory, friday_night + timedelta(hours=3), CAL)
    assert again.supply is ON and kinds(again) == []
    monday = decide(Decimal("-0.80"), FRIENDLY, again.memory, at(2026, 11, 23, 8), CAL)
    assert monday.supply is OFF and kinds(monday) == [EventKind.SUPPLY_CUT]


def test_a_public_holiday_defers_the_cut_to_the_first_working_morning() -> None:
    national_day = at(2026, 10, 1, 10)  # a Thursday, holiday until 7 October
    d = decide(Decimal("0.00"), FRIENDLY, SUPPLIED, national_day, CAL)
    assert d.supply is ON and "public holiday" in d.reason
    assert d.recheck_at == at(2026, 10, 8, 8)
    # the same day with holidays switched off (and weekends on) cuts: a Thursday
    workaday = PointPolicy(friendly=FriendlyHours(holidays=False))
    assert decide(Decimal("0.00"), workaday, SUPPLIED, national_day, CAL).supply is OFF


def test_an_adjusted_working_saturday_is_not_a_weekend() -> None:
    adjusted = at(2026, 2, 14, 10)  # Saturday, worked for the Spring Festival
    assert adjusted.astimezone(SH).weekday() == 5
    d = decide(Decimal("0.00"), FRIENDLY, SUPPLIED, adjusted, CAL)
    assert d.supply is OFF, d.reason
    ordinary_saturday = at(2026, 11, 21, 10)
    assert decide(Decimal("0.00"), FRIENDLY, SUPPLIED, ordinary_saturday, CAL).supply is ON


def test_a_year_the_calendar_does_not_know_falls_back_to_weekends() -> None:
    assert CAL.is_workday(date(2099, 1, 1)) is None
    saturday = at(2099, 1, 3, 10)
    monday = at(2099, 1, 5, 10)
    assert decide(Decimal("0"), FRIENDLY, SUPPLIED, saturday, CAL).supply is ON
    assert decide(Decimal("0"), FRIENDLY, SUPPLIED, monday, CAL).supply is OFF
    assert decide(Decimal("0"), FRIENDLY, SUPPLIED, monday, WeekdayCalendar()).supply is OFF


def test_night_window_without_wrap_and_none() -> None:
    siesta = PointPolicy(friendly=FriendlyHours(night_start=time(12), night_end=time(14)))
    d = decide(Decimal("0"), siesta, SUPPLIED, WED_NOON, CAL)
    assert d.supply is ON and d.recheck_at == at(2026, 11, 18, 14)
    no_night = PointPolicy(friendly=FriendlyHours(night_start=None, night_end=None))
    assert decide(Decimal("0"), no_night, SUPPLIED, at(2026, 11, 18, 23), CAL).supply is OFF


def test_site_time_zone_decides_the_night() -> None:
    london = PointPolicy(friendly=FriendlyHours(timezone="Europe/London", holidays=False))
    # 23:00 in Shanghai on a Wednesday is 15:00 in London: not night there
    assert decide(Decimal("0"), london, SUPPLIED, at(2026, 11, 18, 23), CAL).supply is OFF


def test_notice_period_comes_before_the_cut() -> None:
    policy = PointPolicy(notice=timedelta(hours=24), friendly=None)
    d = decide(Decimal("-1.00"), policy, SUPPLIED, WED_NOON, CAL)
    assert d.supply is ON and kinds(d) == [EventKind.ARREARS_NOTICE]
    assert d.memory.notice_at == WED_NOON and d.recheck_at == WED_NOON + timedelta(hours=24)
    later = decide(Decimal("-2.00"), policy, d.memory, WED_NOON + timedelta(hours=23), CAL)
    assert later.supply is ON and kinds(later) == []  # one notice, not one per reading
    due = decide(Decimal("-2.00"), policy, later.memory, WED_NOON + timedelta(hours=24), CAL)
    assert due.supply is OFF
    # paying clears the notice: the next exhaustion gives a fresh one
    paid = decide(Decimal("5.00"), policy, due.memory, WED_NOON + timedelta(hours=25), CAL)
    assert paid.supply is ON and paid.memory.notice_at is None


def test_notice_then_friendly_hours() -> None:
    policy = PointPolicy(notice=timedelta(hours=2))
    start = at(2026, 11, 18, 21)  # Wednesday 21:00: notice runs out at 23:00, at night
    d = decide(Decimal("0"), policy, SUPPLIED, start, CAL)
    assert d.supply is ON and d.recheck_at == at(2026, 11, 18, 23)
    night = decide(Decimal("0"), policy, d.memory, at(2026, 11, 18, 23), CAL)
    assert night.supply is ON and night.recheck_at == at(2026, 11, 19, 8)
    morning = decide(Decimal("0"), policy, night.memory, at(2026, 11, 19, 8), CAL)
    assert morning.supply is OFF


def test_keep_power_never_cuts_and_expires() -> None:
    until = WED_NOON + timedelta(hours=1)
    keep = ControlMemory(supply=ON, keep_power=KeepPower("operator:li", "hospital", until))
    d = decide(Decimal("-100"), NO_FRIENDLY, keep, WED_NOON, CAL)
    assert d.supply is ON and "keep-power" in d.reason and d.recheck_at == until
    expired = decide(Decimal("-100"), NO_FRIENDLY, d.memory, until, CAL)
    assert expired.supply is OFF
    assert kinds(expired) == [EventKind.KEEP_POWER_EXPIRED, EventKind.SUPPLY_CUT]
    assert expired.memory.keep_power is None
    forever = ControlMemory(supply=ON, keep_power=KeepPower("operator:li", "hospital"))
    far = WED_NOON + timedelta(days=400)
    assert decide(Decimal("-100"), NO_FRIENDLY, forever, far, CAL).supply is ON


def test_keep_power_beats_an_override_trip() -> None:
    mem = ControlMemory(
        supply=ON,
        keep_power=KeepPower("operator:li", "ICU"),
        override=Override(OFF, "operator:wang", "unsafe wiring"),
    )
    assert decide(Decimal("50"), NO_FRIENDLY, mem, WED_NOON, CAL).supply is ON


def test_manual_trip_for_arrears_ends_when_paid_other_overrides_do_not() -> None:
    arrears_trip = ControlMemory(supply=OFF, override=Override(OFF, "op", "dunning", None, True))
    paid = decide(Decimal("30"), NO_FRIENDLY, arrears_trip, WED_NOON, CAL)
    assert paid.supply is ON and paid.memory.override is None
    safety = ControlMemory(supply=OFF, override=Override(OFF, "op", "unsafe wiring"))
    still = decide(Decimal("30"), NO_FRIENDLY, safety, WED_NOON, CAL)
    assert still.supply is OFF and still.memory.override is not None
    timed = ControlMemory(
        supply=ON, override=Override(ON, "op", "give them a day", WED_NOON + timedelta(days=1))
    )
    held = decide(Decimal("-5"), NO_FRIENDLY, timed, WED_NOON, CAL)
    assert held.supply is ON and held.recheck_at == WED_NOON + timedelta(days=1)
    over = decide(Decimal("-5"), NO_FRIENDLY, held.memory, WED_NOON + timedelta(days=1), CAL)
    assert over.supply is OFF
    assert kinds(over) == [EventKind.OVERRIDE_EXPIRED, EventKind.SUPPLY_CUT]


def test_a_cut_point_stays_cut_during_friendly_hours() -> None:
    cut = ControlMemory(supply=OFF)
    d = decide(Decimal("-1"), FRIENDLY, cut, at(2026, 11, 20, 23), CAL)
    assert d.supply is OFF and kinds(d) == []


def test_alarm_levels_fire_once_per_downward_crossing_with_hysteresis() -> None:
    policy = PointPolicy(alarm1=Decimal("20"), alarm2=Decimal("5"), friendly=None)
    mem = SUPPLIED
    fired: list[list[EventKind]] = []
    for balance in ["25", "19.99", "18", "20.50", "19", "21.01", "19.5", "4", "5.50", "3", "6.01"]:
        d = decide(Decimal(balance), policy, mem, WED_NOON, CAL)
        fired.append(kinds(d))
        mem = d.memory
    assert fired == [
        [],
        [EventKind.LOW_BALANCE_1],
        [],
        [],  # 20.50 is above 20 but within the hysteresis: level 1 stays armed-off
        [],
        [],  # 21.01 clears level 1 (20 + 1.00)
        [EventKind.LOW_BALANCE_1],
        [EventKind.LOW_BALANCE_2],
        [],
        [],
        [],  # 6.01 re-arms level 2 only; level 1 still set
    ]
    assert mem.alarm_level == 1
    # straight through both thresholds: level 2 only
    d = decide(Decimal("1"), policy, SUPPLIED, WED_NOON, CAL)
    assert kinds(d) == [EventKind.LOW_BALANCE_2]


def test_meter_controlled_points_get_alarms_from_the_meters_balance() -> None:
    policy = PointPolicy(alarm1=Decimal("10"), alarm2=Decimal("2"))
    d = alarms_only(Decimal("8"), policy, SUPPLIED)
    assert kinds(d) == [EventKind.LOW_BALANCE_1] and d.supply is ON


balances = st.decimals(min_value=-1000, max_value=1000, places=2)
moments = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)


@given(balances, moments, st.sampled_from([ON, OFF, None]))
def test_keep_power_is_never_cut(balance: Decimal, now: datetime, prev: SupplyState | None) -> None:
    mem = ControlMemory(supply=prev, keep_power=KeepPower("op", "why"))
    assert decide(balance, FRIENDLY, mem, now, CAL).supply is ON


@given(balances, moments)
def test_no_new_cut_in_friendly_hours(balance: Decimal, now: datetime) -> None:
    d = decide(balance, FRIENDLY, SUPPLIED, now, CAL)
    assert FRIENDLY.friendly is not None
    if FRIENDLY.friendly.window(now, CAL) is not None:
        assert d.supply is ON
    if d.supply is ON and d.recheck_at is not None:
        assert d.recheck_at > now


@given(balances, moments, st.sampled_from([ON, OFF, None]))
def test_in_credit_without_override_is_always_on(
    balance: Decimal, now: datetime, prev: SupplyState | None
) -> None:
    d = decide(balance, FRIENDLY, ControlMemory(supply=prev), now, CAL)
    if balance > 0:
        assert d.supply is ON
    elif prev is OFF:
        assert d.supply is OFF  # exhausted and already cut: stays cut, whatever the hour


@given(st.lists(balances, min_size=1, max_size=30))
def test_alarm_events_never_repeat_without_re_arming(series: list[Decimal]) -> None:
    h = Decimal("1.00")
    level = 0
    for b in series:
        new = alarm_level(b, Decimal("20"), Decimal("5"), h, level)
        if new > level:
            assert b <= (Decimal("5") if new == 2 else Decimal("20"))
        if new < level:
            assert b > (Decimal("5") if level == 2 else Decimal("20")) + h
        level = new


@given(
    balances,
    st.sampled_from([None, Decimal("20"), Decimal("5")]),
    st.sampled_from([None, Decimal("5"), Decimal("1")]),
    st.integers(min_value=0, max_value=2),
    st.decimals(min_value=0, max_value=50, places=2),
    moments,
)
def test_a_calm_point_skipped_on_the_ingest_path_is_one_the_policy_leaves_alone(
    balance: Decimal,
    a1: Decimal | None,
    a2: Decimal | None,
    level: int,
    limit: Decimal,
    now: datetime,
) -> None:
    """The ingest path skips control for points `stays_calm` accepts: the policy must agree
    that nothing changes for them (no events, same memory, supply on)."""
    from cloud.control.service import Calm, stays_calm

    if a1 is not None and a2 is not None and a1 < a2:
        a1, a2 = a2, a1
    policy = PointPolicy(credit_limit=limit, alarm1=a1, alarm2=a2, friendly=FriendlyHours())
    mem = ControlMemory(supply=ON, alarm_level=level)
    calm = Calm(level, a1, a2, policy.hysteresis)
    if stays_calm(calm, limit, balance, ("on", "on", now), None):
        d = decide(balance, policy, mem, now, CAL)
        assert d.supply is ON and not d.events and d.memory == mem and d.recheck_at is None
