"""Rating core: charges sum to the tariff applied to the total, to the fen, however the
readings are split into batches; every wrong-looking difference is an anomaly."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.money import to_fen
from cloud.rating.core import (
    ELECTRICITY,
    AnomalyKind,
    Limits,
    PointTerms,
    RatingMark,
    RegisterReading,
    flush,
    rate,
    swap_meter,
)
from cloud.tariffs.core import (
    Block,
    Cycle,
    Flat,
    Tariff,
    TariffVersion,
    Tiered,
    TimeOfUse,
    TouPeriod,
    TouWindow,
    flat_tariff,
)

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
LOOSE = Limits(Decimal(10**9), Decimal(10**12), timedelta(days=3650), Decimal(10**9))
PRICE = flat_tariff(EPOCH, Decimal("0.8765"))
TERMS = PointTerms(PRICE, SH)
TOU = TimeOfUse(
    prices=(
        (TouPeriod.SHARP, Decimal("1.3500")),
        (TouPeriod.PEAK, Decimal("1.0921")),
        (TouPeriod.FLAT, Decimal("0.6627")),
        (TouPeriod.VALLEY, Decimal("0.3033")),
    ),
    windows=(
        TouWindow(time(0), TouPeriod.VALLEY),
        TouWindow(time(8), TouPeriod.PEAK),
        TouWindow(time(11), TouPeriod.FLAT),
        TouWindow(time(18), TouPeriod.SHARP),
        TouWindow(time(20), TouPeriod.PEAK),
        TouWindow(time(22), TouPeriod.VALLEY),
    ),
)
SPLITS = st.lists(st.integers(min_value=1, max_value=80), max_size=12)
STEPS = st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=60)


def run_in_batches(
    readings: Sequence[RegisterReading], cuts: list[int], terms: PointTerms
) -> tuple[RatingMark, Decimal, Decimal]:
    """Rate ``readings`` split at ``cuts``; return the mark, what was posted and billed."""
    mark, posted, billed = RatingMark(), Decimal(0), Decimal(0)
    bounds = sorted({0, *[c for c in cuts if c < len(readings)], len(readings)})
    for a, b in itertools.pairwise(bounds):
        out = rate(mark, readings[a:b], terms)
        mark = out.mark
        posted += sum((p.amount for p in out.postings), Decimal(0))
        billed += out.billed
    mark, last = flush(mark, datetime(2100, 1, 1, tzinfo=UTC))
    if last is not None:
        posted += last.amount
    return mark, posted, billed


def series(steps: list[int], gaps: list[int], unit: timedelta) -> list[RegisterReading]:
    regs, at = [Decimal(0)], [T0]
    for s, g in zip(steps, itertools.cycle(gaps or [1]), strict=False):
        regs.append(regs[-1] + Decimal(s) / 100)
        at.append(at[-1] + g * unit)
    return [RegisterReading(t, r) for t, r in zip(at, regs, strict=True)]


@settings(max_examples=60, deadline=None)
@given(
    steps=STEPS,
    cuts=SPLITS,
    price=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("9.9999"), places=4),
)
def test_flat_charges_sum_to_the_tariff_on_the_total(
    steps: list[int], cuts: list[int], price: Decimal
) -> None:
    readings = series(steps, [1], timedelta(minutes=23))
    terms = PointTerms(flat_tariff(EPOCH, price), SH, LOOSE)
    mark, posted, billed = run_in_batches(readings, cuts, terms)
    total = readings[-1].total
    assert total is not None
    assert posted == billed == to_fen(total * price)
    assert mark.consumption_total == total


@st.composite
def tiers(draw: st.DrawFn) -> Tiered:
    bounds = sorted(set(draw(st.lists(st.integers(1, 400), min_size=1, max_size=3))))
    prices = draw(
        st.lists(
            st.decimals(min_value=Decimal(0), max_value=Decimal(3), places=4),
            min_size=len(bounds) + 1,
            max_size=len(bounds) + 1,
        )
    )
    blocks = tuple(Block(Decimal(b), p) for b, p in zip(bounds, prices, strict=False))
    return Tiered(draw(st.sampled_from(Cycle)), (*blocks, Block(None, prices[-1])))


@settings(max_examples=60, deadline=None)
@given(steps=STEPS, gaps=st.lists(st.integers(1, 900), min_size=1), cuts=SPLITS, plan=tiers())
def test_tiered_charges_sum_to_the_blocks_applied_to_each_cycle_total(
    steps: list[int], gaps: list[int], cuts: list[int], plan: Tiered
) -> None:
    readings = series(steps, gaps, timedelta(hours=1))  # crosses months and years
    terms = PointTerms(Tariff((TariffVersion(EPOCH, plan),)), SH, LOOSE)
    _, posted, billed = run_in_batches(readings, cuts, terms)
    per_cycle: dict[tuple[int, ...], Decimal] = defaultdict(Decimal)
    for a, b in itertools.pairwise(readings):
        assert a.total is not None and b.total is not None
        local = (b.measured_at - timedelta(microseconds=1)).astimezone(SH)
        key = (local.year,) if plan.cycle is Cycle.YEAR else (local.year, local.month)
        per_cycle[key] += b.total - a.total
    expected = Decimal(0)
    for used in per_cycle.values():  # the blocks applied to the cycle's whole consumption
        lower = Decimal(0)
        for block in plan.blocks:
            upper = used if block.up_to is None else min(used, block.up_to)
            expected += max(upper - lower, Decimal(0)) * block.price
            if block.up_to is not None:
                lower = block.up_to
    assert posted == billed == to_fen(expected)


def _period_by_scan(ts: datetime) -> TouPeriod:
    minutes = (ts.astimezone(SH).hour * 60) + ts.astimezone(SH).minute
    current = TOU.windows[0].period
    for w in TOU.windows:
        if w.start.hour * 60 + w.start.minute <= minutes:
            current = w.period
    return current


@settings(max_examples=60, deadline=None)
@given(steps=STEPS, gaps=st.lists(st.integers(1, 8), min_size=1), cuts=SPLITS)
def test_tou_by_timestamps_charges_each_period_total_at_its_price(
    steps: list[int], gaps: list[int], cuts: list[int]
) -> None:
    readings = series(steps, gaps, timedelta(minutes=15))
    terms = PointTerms(Tariff((TariffVersion(EPOCH, TOU),)), SH, LOOSE)
    _, posted, billed = run_in_batches(readings, cuts, terms)
    per_period: dict[TouPeriod, Decimal] = defaultdict(Decimal)
    for a, b in itertools.pairwise(readings):
        assert a.total is not None and b.total is not None
        per_period[_period_by_scan(b.measured_at - timedelta(microseconds=1))] += b.total - a.total
    expected = sum((TOU.price(p) * used for p, used in per_period.items()), Decimal(0))
    assert posted == billed == to_fen(expected)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(*[st.integers(0, 3000)] * 4), min_size=1, max_size=50),
    cuts=SPLITS,
)
def test_tou_by_meter_registers_charges_each_register_at_its_price(
    steps: list[tuple[int, int, int, int]], cuts: list[int]
) -> None:
    regs = [(Decimal(0),) * 4]
    for s in steps:
        regs.append(tuple(r + Decimal(x) / 100 for r, x in zip(regs[-1], s, strict=True)))
    readings = [
        RegisterReading(T0 + timedelta(hours=5 * i), sum(r, Decimal(0)), r)  # type: ignore[arg-type]
        for i, r in enumerate(regs)
    ]
    terms = PointTerms(Tariff((TariffVersion(EPOCH, TOU),)), SH, LOOSE)
    _, posted, billed = run_in_batches(readings, cuts, terms)
    order = (TouPeriod.SHARP, TouPeriod.PEAK, TouPeriod.FLAT, TouPeriod.VALLEY)
    expected = sum((TOU.price(p) * regs[-1][i] for i, p in enumerate(order)), Decimal(0))
    assert posted == billed == to_fen(expected)


@settings(max_examples=40, deadline=None)
@given(steps=STEPS, cuts=SPLITS, change=st.integers(0, 60))
def test_a_price_change_applies_from_its_date_and_never_rerates_the_past(
    steps: list[int], cuts: list[int], change: int
) -> None:
    readings = series(steps, [1], timedelta(minutes=30))
    changed_at = T0 + timedelta(minutes=30 * change)
    tariff = Tariff(
        (
            TariffVersion(EPOCH, Flat(Decimal("0.5000"))),
            TariffVersion(changed_at, Flat(Decimal("1.2500"))),
        )
    )
    _, posted, _ = run_in_batches(readings, cuts, PointTerms(tariff, SH, LOOSE))
    expected = Decimal(0)
    for a, b in itertools.pairwise(readings):
        assert a.total is not None and b.total is not None
        price = Decimal("0.5000") if b.measured_at <= changed_at else Decimal("1.2500")
        expected += (b.total - a.total) * price
    assert posted == to_fen(expected)


def test_usage_posts_per_hourly_window_with_unique_keys() -> None:
    readings = series([100] * 12, [1], timedelta(minutes=15))  # 3 hours, 1 kWh per 15 min
    out = rate(RatingMark(), readings, TERMS)
    assert [p.window_start for p in out.postings] == [T0, T0 + timedelta(hours=1)]
    assert out.mark.unposted == to_fen(4 * Decimal("0.8765"))
    keys = {p.key("sp") for p in out.postings}
    assert len(keys) == 2
    mark, last = flush(out.mark, T0 + timedelta(hours=4))
    assert last is not None and mark.unposted == 0
    assert sum(p.amount for p in (*out.postings, last)) == to_fen(12 * Decimal("0.8765"))


def test_monthly_fee_is_charged_once_per_local_month() -> None:
    tariff = Tariff((TariffVersion(EPOCH, Flat(Decimal(1)), Decimal("15.00")),))
    terms = PointTerms(tariff, SH)
    jan31_late = datetime(2026, 1, 31, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai, still January
    feb1 = datetime(2026, 1, 31, 16, 30, tzinfo=UTC)  # 00:30 on 1 February in Shanghai
    out = rate(
        RatingMark(),
        [
            RegisterReading(jan31_late - timedelta(hours=1), Decimal(0)),
            RegisterReading(jan31_late, Decimal(1)),
            RegisterReading(feb1, Decimal(2)),
            RegisterReading(feb1 + timedelta(hours=1), Decimal(3)),
        ],
        terms,
    )
    assert [(f.month, f.amount) for f in out.fees] == [
        ("2026-01", Decimal("15.00")),
        ("2026-02", Decimal("15.00")),
    ]
    again = rate(out.mark, [RegisterReading(feb1 + timedelta(hours=2), Decimal(4))], terms)
    assert again.fees == ()


def test_late_and_duplicate_readings_never_charge_twice() -> None:
    first = rate(
        RatingMark(),
        [RegisterReading(T0, Decimal(10)), RegisterReading(T0 + timedelta(hours=2), Decimal(12))],
        TERMS,
    )
    again = rate(
        first.mark,
        [
            RegisterReading(T0 + timedelta(hours=1), Decimal(11)),
            RegisterReading(T0 + timedelta(hours=2), Decimal(12)),
        ],
        TERMS,
    )
    assert again.billed == 0 and again.consumption == 0 and again.late == 2
    assert again.mark == first.mark


def _kinds(out: object) -> list[AnomalyKind]:
    return [a.kind for a in out.anomalies]  # type: ignore[attr-defined]


def test_register_going_down_is_an_anomaly_not_a_credit() -> None:
    out = rate(
        RatingMark(),
        [
            RegisterReading(T0, Decimal(50)),
            RegisterReading(T0 + timedelta(hours=1), Decimal(3)),
            RegisterReading(T0 + timedelta(hours=2), Decimal(4)),
        ],
        TERMS,
    )
    assert _kinds(out) == [AnomalyKind.REGISTER_DOWN]
    assert out.consumption == Decimal(1) and out.mark.billed_total == Decimal("0.88")


def test_rollover_is_charged_across_the_wrap_and_flagged() -> None:
    out = rate(
        RatingMark(),
        [
            RegisterReading(T0, Decimal("999999.50")),
            RegisterReading(T0 + timedelta(minutes=15), Decimal("1.25")),
        ],
        TERMS,
    )
    assert _kinds(out) == [AnomalyKind.ROLLOVER]
    assert out.consumption == Decimal("1.75")
    assert out.mark.billed_total == to_fen(Decimal("1.75") * Decimal("0.8765"))


def test_a_jump_beyond_what_the_channel_can_draw_is_not_charged() -> None:
    out = rate(
        RatingMark(),
        [
            RegisterReading(T0, Decimal(100)),
            RegisterReading(T0 + timedelta(minutes=15), Decimal(900)),  # 800 kWh in 15 min
            RegisterReading(T0 + timedelta(minutes=30), Decimal(902)),
        ],
        TERMS,
    )
    assert _kinds(out) == [AnomalyKind.IMPOSSIBLE_JUMP]
    assert out.consumption == Decimal(2)


def test_a_stuck_register_while_drawing_power_is_flagged_once() -> None:
    out = rate(
        RatingMark(),
        [
            RegisterReading(T0 + timedelta(minutes=15 * i), Decimal(7), power=Decimal("2.5"))
            for i in range(5)
        ],
        TERMS,
    )
    assert _kinds(out) == [AnomalyKind.STUCK_REGISTER]
    assert out.mark.stuck and out.billed == 0
    moving = rate(out.mark, [RegisterReading(T0 + timedelta(hours=2), Decimal(8))], TERMS)
    assert not moving.mark.stuck and _kinds(moving) == []


def test_a_gap_is_flagged_and_the_consumption_over_it_charged() -> None:
    out = rate(
        RatingMark(),
        [RegisterReading(T0, Decimal(0)), RegisterReading(T0 + timedelta(hours=5), Decimal(40))],
        TERMS,
    )
    assert _kinds(out) == [AnomalyKind.GAP]
    assert out.consumption == Decimal(40)


def test_meter_swap_charges_the_final_reading_and_rebases_on_the_initial() -> None:
    first = rate(RatingMark(), [RegisterReading(T0, Decimal("500.00"))], TERMS)
    swapped = swap_meter(
        first.mark, T0 + timedelta(minutes=30), Decimal("503.00"), Decimal("0.40"), TERMS
    )
    assert _kinds(swapped) == [AnomalyKind.METER_SWAP]
    assert swapped.consumption == Decimal(3)
    after = rate(swapped.mark, [RegisterReading(T0 + timedelta(hours=1), Decimal("2.40"))], TERMS)
    assert _kinds(after) == [] and after.consumption == Decimal(2)
    assert after.mark.billed_total == to_fen(5 * Decimal("0.8765"))


def test_common_area_meter_tracks_consumption_without_charging() -> None:
    terms = PointTerms(PRICE, SH, ELECTRICITY, charged=False)
    out = rate(
        RatingMark(),
        [RegisterReading(T0, Decimal(1)), RegisterReading(T0 + timedelta(hours=1), Decimal(9))],
        terms,
    )
    assert out.consumption == 8 and out.mark.billed_total == 0


@pytest.mark.parametrize("utility", ["electricity", "water"])
def test_limits_by_utility(utility: str) -> None:
    from cloud.rating.core import limits_for

    assert limits_for(utility, Decimal(7)).max_rate == 7


def test_a_new_meters_first_two_readings_out_of_order_charge_the_first_interval() -> None:
    # Regression (issue 20): the later reading became the baseline and the earlier one was
    # dropped as late, so the first interval was never charged.
    later = rate(RatingMark(), [RegisterReading(T0 + timedelta(hours=1), Decimal(12))], TERMS)
    assert later.billed == 0
    earlier = rate(later.mark, [RegisterReading(T0, Decimal(10))], TERMS)
    assert earlier.consumption == Decimal(2) and earlier.late == 0
    assert earlier.mark.billed_total == to_fen(Decimal(2) * Decimal("0.8765"))
    assert earlier.mark.last_measured_at == T0 + timedelta(hours=1)
    in_order = rate(
        RatingMark(),
        [RegisterReading(T0, Decimal(10)), RegisterReading(T0 + timedelta(hours=1), Decimal(12))],
        TERMS,
    )
    assert earlier.mark.billed_total == in_order.mark.billed_total
    # the baseline moved back to T0: a re-delivery of either charges nothing
    again = rate(earlier.mark, [RegisterReading(T0, Decimal(10))], TERMS)
    assert again.billed == 0 and again.late == 1


def test_readings_before_the_first_rated_one_arriving_later_are_charged() -> None:
    # Regression (issue 20, `prepay chaos --seed 1 --seconds 20`): two ingest workers took a
    # gateway's batches out of order; the later batch became the baseline and had already
    # charged when the earlier one came, whose readings were dropped as late (¥0.08 lost).
    at = [T0 + timedelta(minutes=m) for m in range(6)]
    regs = [Decimal(v) for v in ("10.00", "10.50", "11.00", "11.20", "11.70", "12.00")]
    readings = [RegisterReading(t, r) for t, r in zip(at, regs, strict=True)]
    later = rate(RatingMark(), readings[3:], TERMS)
    assert later.consumption == Decimal("0.80")
    earlier = rate(later.mark, readings[:3], TERMS)
    assert earlier.consumption == Decimal("1.20") and earlier.late == 2
    mark = earlier.mark
    assert mark.consumption_total == regs[-1] - regs[0]
    assert mark.billed_total == to_fen((regs[-1] - regs[0]) * Decimal("0.8765"))
    assert (mark.first_measured_at, mark.first_register) == (at[0], regs[0])
    again = rate(mark, readings[:4], TERMS)  # re-delivered: nothing twice
    assert again.billed == 0 and again.late == 4
