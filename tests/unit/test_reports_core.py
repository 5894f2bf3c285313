"""The reports' pure pieces: periods and their refusals, the movement of each entry kind,
closing = opening + movements, registers across a meter swap, grouping and channels."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.reports import arrears, collections, finance
from cloud.reports import postings as pt
from cloud.reports.period import (
    FUTURE,
    NOT_A_DAY,
    REVERSED,
    TOO_LONG,
    Period,
    PeriodRefused,
    period_of,
)

TODAY = date(2026, 12, 3)


def test_the_default_period_is_this_month_to_today() -> None:
    assert period_of("", "", TODAY) == Period(date(2026, 12, 1), TODAY)
    assert period_of("", "2026-11-20", TODAY) == Period(date(2026, 11, 1), date(2026, 11, 20))


@pytest.mark.parametrize(
    ("first", "last", "reason"),
    [
        ("2026-12-01", "2026-12-04", FUTURE),
        ("2025-12-01", "2026-12-03", TOO_LONG),
        ("2026-12-03", "2026-12-01", REVERSED),
        ("2026-13-01", "", NOT_A_DAY),
        ("yesterday", "", NOT_A_DAY),
        ("1999-12-31", "2000-01-01", NOT_A_DAY),
    ],
)
def test_bad_periods_are_refused_with_their_reason(first: str, last: str, reason: str) -> None:
    with pytest.raises(PeriodRefused) as refused:
        period_of(first, last, TODAY)
    assert refused.value.reason == reason


def test_a_year_is_allowed_and_the_previous_period_ends_the_day_before() -> None:
    p = period_of("2025-12-03", "2026-12-03", TODAY)
    assert p.days == 366
    assert period_of("2026-12-01", "2026-12-03", TODAY).previous() == Period(
        date(2026, 11, 28), date(2026, 11, 30)
    )


def test_reversals_count_as_the_kind_they_reverse_and_unknown_kinds_as_adjustments() -> None:
    assert pt.movement("topup") == pt.TOPUPS
    assert pt.movement("fixed_charge") == pt.USAGE
    assert pt.movement("common_area") == pt.USAGE
    assert pt.movement("opening") == pt.ADJUSTMENTS
    assert pt.movement("write_off") == pt.ADJUSTMENTS
    assert "WHEN 'refund' THEN 'refunds'" in pt.movement_case("k")


money = st.integers(-(10**6), 10**6).map(lambda f: Decimal(f) / 100)


@given(opening=money, moves=st.fixed_dictionaries({m: money for m in pt.MOVEMENTS}))
def test_closing_is_opening_plus_movements(opening: Decimal, moves: dict[str, Decimal]) -> None:
    closing = pt.closing_of(opening, moves)
    effect = moves["topups"] + moves["transfers"] + moves["adjustments"]
    assert closing == opening + effect - moves["usage"] - moves["refunds"]


T0 = datetime(2026, 11, 1, tzinfo=UTC)
T1 = datetime(2026, 12, 1, tzinfo=UTC)


def seg(**kw: object) -> finance.Segment:
    base: dict[str, object] = {
        "t0": T0, "t1": T1, "installed_at": T0 - timedelta(days=30), "removed_at": None,
        "install_register": None, "removal_register": None,
        "open_read": None, "first_read": None, "close_read": None,
    }  # fmt: skip
    base.update(kw)
    return finance.Segment(**base)  # type: ignore[arg-type]


def test_registers_from_the_readings_nearest_the_bounds() -> None:
    s = seg(open_read=Decimal("100.5"), first_read=Decimal("101"), close_read=Decimal("180"))
    assert finance.registers(s) == (Decimal("100.5"), Decimal("180"))
    # no reading before the period: the first inside it
    assert finance.registers(seg(first_read=Decimal("7"), close_read=Decimal("9"))) == (
        Decimal("7"),
        Decimal("9"),
    )
    assert finance.registers(seg(installed_at=None)) == (None, None)


def test_a_meter_swap_adds_both_meters_parts() -> None:
    point, acct = uuid.uuid4(), uuid.uuid4()
    swap = T0 + timedelta(days=10)

    class Row:
        def __init__(self, **kw: object) -> None:
            self.__dict__.update(
                {"point": point, "account_id": acct, "name": "Shop 1", "utility": "electricity",
                 "tariff": "flat", "t0": T0, "t1": T1, "install_register": None,
                 "removal_register": None, "open_read": None, "first_read": None,
                 "close_read": None, "removed_at": None, **kw}
            )  # fmt: skip

    old = Row(installed_at=T0 - timedelta(days=90), removed_at=swap,
              removal_register=Decimal("1500.00"), open_read=Decimal("1200.00"),
              close_read=Decimal("1499.00"))  # fmt: skip
    new = Row(installed_at=swap, install_register=Decimal("0.00"), close_read=Decimal("250.00"))
    line = finance.point_lines([old, new])[point]
    assert line.opening_register == Decimal("1200.00")
    assert line.closing_register == Decimal("250.00")
    assert line.consumption == Decimal("550.00")


def test_accounts_group_into_buildings_and_sites_with_their_totals() -> None:
    def acct(n: str, building: str, opening: str, topups: str) -> finance.AccountLine:
        a = finance.AccountLine(uuid.uuid4(), n, "c", "Site A", building, "1-1")
        a.opening = Decimal(opening)
        a.moves[pt.TOPUPS] = Decimal(topups)
        a.closing = a.opening + a.moves[pt.TOPUPS]
        return a

    lines = [acct("A1", "B1", "1.00", "2.00"), acct("A2", "B1", "3.00", "4.00"),
             acct("A3", "B2", "5.00", "0.00")]  # fmt: skip
    buildings = finance.shape(lines, "building")
    assert [(r["building"], r["accounts"], r["closing"]) for r in buildings.rows] == [
        ("B1", 2, Decimal("10.00")),
        ("B2", 1, Decimal("5.00")),
    ]
    site = finance.shape(lines, "site")
    assert site.rows[0]["topups"] == Decimal("6.00") == site.totals["topups"]
    assert finance.shape(lines, "account").totals["closing"] == Decimal("15.00")


def test_where_money_sits_names_the_method_and_channel() -> None:
    assert collections.channel_of("cash:" + str(uuid.uuid4())) == ("cash", "cash")
    assert collections.channel_of("clearing:wechat:1900000109") == ("wechat", "wechat:1900000109")
    assert collections.channel_of("clearing:card") == ("card", "card")
    assert collections.channel_of(None) == ("other", "other")


def test_collections_group_per_month_and_year() -> None:
    def line(day: date, gross: str, rev: str = "0.00") -> collections.Line:
        return collections.Line("S", "O", "op", "cash", "cash", day, 1, 1 if rev != "0.00" else 0,
                                Decimal(gross), Decimal(rev))  # fmt: skip

    found = [line(date(2025, 12, 31), "5.00"), line(date(2026, 1, 2), "7.00", "2.00"),
             line(date(2026, 1, 9), "1.00")]  # fmt: skip
    months = collections.shape(found, "month")
    assert [(r["period"], r["net"]) for r in months.rows] == [
        ("2025-12", Decimal("5.00")),
        ("2026-01", Decimal("6.00")),
    ]
    years = collections.shape(found, "year")
    assert years.totals["net"] == Decimal("11.00") and years.totals["reversals"] == 1


def test_arrears_age_in_thirty_day_buckets() -> None:
    assert arrears.age_of(0) == arrears.age_of(30) == "up to 30 days"
    assert arrears.age_of(31) == "31–60 days"
    assert arrears.age_of(90) == "61–90 days"
    assert arrears.age_of(91) == arrears.OVER
    since = datetime(2026, 11, 2, 17, 0, tzinfo=UTC)  # 3 November 01:00 in Shanghai
    assert arrears.days_between(since, "Asia/Shanghai", date(2026, 12, 3)) == 30
