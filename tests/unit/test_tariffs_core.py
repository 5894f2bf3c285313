from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from cloud.tariffs.core import (
    Block,
    Cycle,
    Flat,
    TariffError,
    Tiered,
    TimeOfUse,
    TouPeriod,
    TouWindow,
    plan_from_spec,
    plan_to_spec,
)

SH = ZoneInfo("Asia/Shanghai")
RESIDENTIAL = Tiered(
    Cycle.MONTH,
    (
        Block(Decimal(200), Decimal("0.5600")),
        Block(Decimal(400), Decimal("0.6100")),
        Block(None, Decimal("0.8600")),
    ),
)


def test_a_reading_across_a_block_boundary_is_split() -> None:
    # 150 used; 100 more: 50 at the first block's price, 50 at the second's
    assert RESIDENTIAL.charge(Decimal(150), Decimal(100)) == Decimal(50) * Decimal(
        "0.56"
    ) + Decimal(50) * Decimal("0.61")
    # across two boundaries at once
    assert RESIDENTIAL.charge(Decimal(0), Decimal(500)) == (
        200 * Decimal("0.56") + 200 * Decimal("0.61") + 100 * Decimal("0.86")
    )


def test_tou_period_boundaries_belong_to_the_period_that_starts_there() -> None:
    tou = TimeOfUse(
        ((TouPeriod.PEAK, Decimal(1)), (TouPeriod.VALLEY, Decimal("0.3"))),
        (TouWindow(time(0), TouPeriod.VALLEY), TouWindow(time(8), TouPeriod.PEAK)),
    )
    at_eight = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # 08:00 Shanghai
    assert tou.period_at(at_eight, SH) is TouPeriod.PEAK
    # but the interval ending at 08:00 was consumed in the valley
    assert tou.interval_period(at_eight, SH) is TouPeriod.VALLEY


@pytest.mark.parametrize(
    "plan",
    [
        Flat(Decimal("1.2345")),
        RESIDENTIAL,
        TimeOfUse(
            ((TouPeriod.PEAK, Decimal(1)), (TouPeriod.VALLEY, Decimal("0.3"))),
            (TouWindow(time(0), TouPeriod.VALLEY), TouWindow(time(8), TouPeriod.PEAK)),
        ),
    ],
)
def test_plans_round_trip_through_their_stored_form(plan: Flat | Tiered | TimeOfUse) -> None:
    kind, spec = plan_to_spec(plan)
    assert plan_from_spec(kind, spec, None) == plan


@pytest.mark.parametrize(
    "kind,spec",
    [
        ("flat", {"unit_price": "-1"}),
        ("flat", {"unit_price": "0.00001"}),
        ("tiered", {"cycle": "month", "blocks": [{"up_to": "10", "price": "1"}]}),
        ("tiered", {"cycle": "week", "blocks": [{"up_to": None, "price": "1"}]}),
        ("tou", {"prices": {"peak": "1"}, "windows": [{"start": "08:00", "period": "peak"}]}),
        ("tou", {"prices": {}, "windows": [{"start": "00:00", "period": "peak"}]}),
        ("nonsense", {}),
    ],
)
def test_bad_tariffs_are_refused(kind: str, spec: dict[str, object]) -> None:
    with pytest.raises(TariffError):
        plan_from_spec(kind, spec, None)
