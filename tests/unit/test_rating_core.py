from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from cloud.money import to_fen
from cloud.rating.core import AnomalyKind, FlatPrices, RatingMark, RegisterReading, rate

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRICE = FlatPrices(((datetime(2020, 1, 1, tzinfo=UTC), Decimal("0.8765")),))


@given(
    steps=st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=60),
    cuts=st.lists(st.integers(min_value=1, max_value=59), max_size=10),
    price=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("9.9999"), places=4),
)
def test_charges_sum_to_the_tariff_on_the_total_to_the_fen(
    steps: list[int], cuts: list[int], price: Decimal
) -> None:
    prices = FlatPrices(((datetime(2020, 1, 1, tzinfo=UTC), price),))
    registers = [Decimal(0)]
    for s in steps:
        registers.append(registers[-1] + Decimal(s) / 100)
    readings = [RegisterReading(T0 + timedelta(minutes=i), r) for i, r in enumerate(registers)]
    mark, charged = RatingMark(), Decimal(0)
    bounds = sorted({0, *[c for c in cuts if c < len(readings)], len(readings)})
    for a, b in itertools.pairwise(bounds):
        outcome = rate(mark, readings[a:b], prices)
        mark, charged = outcome.mark, charged + outcome.charge
    assert charged == to_fen(registers[-1] * price)
    assert mark.consumption_total == registers[-1]


def test_late_and_duplicate_readings_never_charge_twice() -> None:
    first = rate(
        RatingMark(),
        [RegisterReading(T0, Decimal(10)), RegisterReading(T0 + timedelta(hours=2), Decimal(12))],
        PRICE,
    )
    again = rate(
        first.mark,
        [
            RegisterReading(T0 + timedelta(hours=1), Decimal(11)),
            RegisterReading(T0 + timedelta(hours=2), Decimal(12)),
        ],
        PRICE,
    )
    assert again.charge == 0 and again.consumption == 0
    assert [a.kind for a in again.anomalies] == [AnomalyKind.LATE_READING] * 2


def test_register_going_down_is_an_anomaly_not_a_credit() -> None:
    out = rate(
        RatingMark(),
        [
            RegisterReading(T0, Decimal(50)),
            RegisterReading(T0 + timedelta(hours=1), Decimal(3)),
            RegisterReading(T0 + timedelta(hours=2), Decimal(4)),
        ],
        PRICE,
    )
    assert [a.kind for a in out.anomalies] == [AnomalyKind.REGISTER_DOWN]
    assert out.consumption == Decimal(1) and out.charge == Decimal("0.88")


def test_price_change_never_rerates_the_past() -> None:
    prices = FlatPrices(
        ((T0 - timedelta(days=1), Decimal(1)), (T0 + timedelta(hours=1), Decimal(2)))
    )
    out = rate(
        RatingMark(),
        [
            RegisterReading(T0, Decimal(0)),
            RegisterReading(T0 + timedelta(minutes=30), Decimal(1)),
            RegisterReading(T0 + timedelta(hours=2), Decimal(2)),
        ],
        prices,
    )
    assert out.charge == Decimal("3.00")
