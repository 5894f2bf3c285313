"""Rating over plain values: consumption from cumulative registers, charges with carry.

Consumption is the difference between cumulative registers. Every case where that
difference would be a wrong charge is an explicit :class:`Anomaly` (a work order for a
person) instead: a register rollover (charged, flagged), a register going down or jumping
further than the channel can draw in the elapsed time (not charged, re-based), a register
stuck while the meter reports power, a gap in readings, a meter swap.

Charges are computed exactly (``exact_total``); ``billed_total`` is its value to the fen,
and a usage posting carries ``billed_total - posted_total`` when its hourly window closes.
Rounding happens once per posting against the running exact total, so a point's postings
always sum to the tariff applied to its total consumption, to the fen, however the
readings are split into batches and windows.

Readings at or before the mark (late, out of order, re-delivered) never charge: the mark
only moves forward. One exception: while the mark is a bare baseline that has charged
nothing yet, an earlier reading moves the baseline back and the difference up to it is
charged (a new meter's first two readings rated out of order would lose that interval).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from enum import StrEnum

from cloud.money import to_fen
from cloud.tariffs.core import (
    TOU_ORDER,
    Flat,
    Tariff,
    TariffVersion,
    Tiered,
    TimeOfUse,
    as_of,
    cycle_key,
    month_key,
)

WINDOW = timedelta(hours=1)
_HOUR_US = Decimal(3_600_000_000)
_US = timedelta(microseconds=1)

TouRegisters = tuple[Decimal, Decimal, Decimal, Decimal]


class AnomalyKind(StrEnum):
    ROLLOVER = "rollover"
    REGISTER_DOWN = "register_down"
    IMPOSSIBLE_JUMP = "impossible_jump"
    STUCK_REGISTER = "stuck_register"
    GAP = "reading_gap"
    METER_SWAP = "meter_swap"


@dataclass(frozen=True)
class RegisterReading:
    measured_at: datetime
    total: Decimal | None
    tou: TouRegisters | None = None  # cumulative 尖/峰/平/谷 registers, when the meter has them
    power: Decimal | None = None  # instantaneous demand, kW (m³/h for water)


@dataclass(frozen=True)
class Limits:
    """What a channel can physically do; beyond it a difference is an anomaly."""

    max_rate: Decimal  # units per hour (kW for electricity, m³/h for water)
    register_modulus: Decimal  # the register wraps to zero here (999999.99 → 0)
    gap: timedelta  # longer between readings is a gap worth a look
    stuck_min: Decimal  # expected units (power × time) above which a still register is stuck
    slack: Decimal = Decimal("0.01")  # one register step of tolerance


ELECTRICITY = Limits(Decimal(100), Decimal(1_000_000), timedelta(hours=2), Decimal("0.05"))
WATER = Limits(
    Decimal(20), Decimal(100_000), timedelta(hours=6), Decimal("0.005"), Decimal("0.001")
)


def limits_for(utility: str, max_rate: Decimal | None = None) -> Limits:
    base = WATER if utility == "water" else ELECTRICITY
    return base if max_rate is None else replace(base, max_rate=max_rate)


@dataclass(frozen=True)
class PointTerms:
    """Everything rating needs to know about a service point besides its mark."""

    tariff: Tariff
    tz: tzinfo
    limits: Limits = ELECTRICITY
    charged: bool = True  # False for a common-area meter: consumption tracked, not charged


@dataclass(frozen=True)
class RatingMark:
    """How far a service point has been rated (persisted in ``rating_state``)."""

    last_measured_at: datetime | None = None
    last_register: Decimal | None = None
    last_tou: TouRegisters | None = None
    consumption_total: Decimal = Decimal(0)
    exact_total: Decimal = Decimal(0)
    billed_total: Decimal = Decimal(0)  # to_fen(exact_total)
    posted_total: Decimal = Decimal(0)  # what usage entries in the journal carry
    cycle: str | None = None  # current tier cycle ("2026-03" or "2026")
    cycle_consumption: Decimal = Decimal(0)
    window_start: datetime | None = None
    fee_month: str | None = None  # last month a fixed fee was charged for
    stuck: bool = False
    first_measured_at: datetime | None = None  # the baseline: the earliest reading rated
    first_register: Decimal | None = None

    @property
    def unposted(self) -> Decimal:
        """Rated usage not yet in the journal (already in the wallet's live balance)."""
        return self.billed_total - self.posted_total


@dataclass(frozen=True)
class Anomaly:
    kind: AnomalyKind
    measured_at: datetime
    detail: str
    charged: Decimal | None = None  # the consumption that was charged despite it, if any


@dataclass(frozen=True)
class UsagePosting:
    """A closed window's usage: ``amount`` in fen, bringing ``posted_total`` to ``billed_to``."""

    window_start: datetime
    amount: Decimal
    billed_to: Decimal

    @property
    def effective_at(self) -> datetime:
        return self.window_start + WINDOW

    def key(self, point: object) -> str:
        return f"usage:{point}:{self.window_start.isoformat()}/{self.billed_to}"


@dataclass(frozen=True)
class FeeCharge:
    month: str
    amount: Decimal
    effective_at: datetime

    def key(self, point: object) -> str:
        return f"fee:{point}:{self.month}"


@dataclass(frozen=True)
class RatingOutcome:
    mark: RatingMark
    consumption: Decimal = Decimal(0)
    anomalies: tuple[Anomaly, ...] = ()
    postings: tuple[UsagePosting, ...] = ()
    fees: tuple[FeeCharge, ...] = ()
    late: int = 0
    billed: Decimal = Decimal(0)  # increase of billed_total (what the wallet loses now)


@dataclass(slots=True)
class _Run:
    """A mark being advanced: mutable while rating one batch, frozen once at the end (a
    ``replace()`` per reading was most of the hot path's cost)."""

    last_measured_at: datetime | None
    last_register: Decimal | None
    last_tou: TouRegisters | None
    consumption_total: Decimal
    exact_total: Decimal
    billed_total: Decimal
    posted_total: Decimal
    cycle: str | None
    cycle_consumption: Decimal
    window_start: datetime | None
    fee_month: str | None
    stuck: bool
    first_measured_at: datetime | None
    first_register: Decimal | None
    consumption: Decimal = Decimal(0)
    anomalies: list[Anomaly] = field(default_factory=list)
    postings: list[UsagePosting] = field(default_factory=list)
    fees: list[FeeCharge] = field(default_factory=list)
    late: int = 0

    @classmethod
    def start(cls, m: RatingMark) -> _Run:
        return cls(
            m.last_measured_at,
            m.last_register,
            m.last_tou,
            m.consumption_total,
            m.exact_total,
            m.billed_total,
            m.posted_total,
            m.cycle,
            m.cycle_consumption,
            m.window_start,
            m.fee_month,
            m.stuck,
            m.first_measured_at,
            m.first_register,
        )

    def mark(self) -> RatingMark:
        return RatingMark(
            self.last_measured_at,
            self.last_register,
            self.last_tou,
            self.consumption_total,
            self.exact_total,
            self.billed_total,
            self.posted_total,
            self.cycle,
            self.cycle_consumption,
            self.window_start,
            self.fee_month,
            self.stuck,
            self.first_measured_at,
            self.first_register,
        )


def window_of(interval_end: datetime) -> datetime:
    """The hourly usage window an interval ending at ``interval_end`` belongs to (UTC)."""
    t = as_of(interval_end)
    return t - timedelta(minutes=t.minute, seconds=t.second, microseconds=t.microsecond)


def _hours(d: timedelta) -> Decimal:
    return Decimal(d // _US) / _HOUR_US


def rate(mark: RatingMark, readings: Sequence[RegisterReading], terms: PointTerms) -> RatingOutcome:
    """Advance ``mark`` over ``readings`` (any order); only readings after the mark count."""
    run = _Run.start(mark)
    ordered = readings if len(readings) == 1 else sorted(readings, key=lambda x: x.measured_at)
    for r in ordered:
        if r.total is None:
            continue
        last = run.last_measured_at
        if last is not None and r.measured_at <= last:
            if r.measured_at == last or not _extend_back(run, r, terms):
                run.late += 1
            continue
        _advance(run, r, terms)
    return RatingOutcome(
        run.mark(),
        run.consumption,
        tuple(run.anomalies),
        tuple(run.postings),
        tuple(run.fees),
        run.late,
        run.billed_total - mark.billed_total,
    )


def _version(terms: PointTerms, interval_end: datetime) -> TariffVersion | None:
    try:
        return terms.tariff.for_interval(interval_end)
    except LookupError:
        return None


def _close_window(run: _Run, window: datetime) -> None:
    if run.window_start is None:
        run.window_start = window
    elif window != run.window_start:
        amount = run.billed_total - run.posted_total
        if amount != 0:
            run.postings.append(UsagePosting(run.window_start, amount, run.billed_total))
        run.posted_total = run.billed_total
        run.window_start = window


def consumed(
    last_register: Decimal, total: Decimal, elapsed: timedelta, lim: Limits
) -> Decimal | None:
    """What rating charges between two registers ``elapsed`` apart: the difference, or the
    wrap past the modulus when it is physically possible; None when the difference is not
    (a register gone down or an impossible jump: not charged, the point re-based)."""
    ceiling = lim.max_rate * _hours(elapsed) + lim.slack
    delta = total - last_register
    if delta < 0:
        wrapped = lim.register_modulus - last_register + total
        return wrapped if wrapped <= ceiling else None
    return delta if delta <= ceiling else None


def _advance(run: _Run, r: RegisterReading, terms: PointTerms) -> None:
    total = r.total
    assert total is not None
    at = r.measured_at
    _close_window(run, window_of(at))
    version = _version(terms, at)
    if terms.charged and version is not None and version.monthly_fee > 0:
        month = month_key(as_of(at), terms.tz)
        if run.fee_month != month:
            run.fees.append(FeeCharge(month, version.monthly_fee, at))
            run.fee_month = month
    last_at, last_reg = run.last_measured_at, run.last_register
    run.last_measured_at, run.last_register = at, total
    if last_reg is None or last_at is None:
        run.last_tou = r.tou
        if run.first_measured_at is None:
            run.first_measured_at, run.first_register = at, total
        return
    lim = terms.limits
    elapsed = at - last_at
    ceiling = lim.max_rate * _hours(elapsed) + lim.slack
    delta = total - last_reg
    used = consumed(last_reg, total, elapsed, lim)
    if elapsed > lim.gap:
        run.anomalies.append(
            Anomaly(AnomalyKind.GAP, at, f"no reading for {elapsed} (since {last_at})")
        )
    if delta < 0:
        if used is not None:
            run.anomalies.append(
                Anomaly(
                    AnomalyKind.ROLLOVER,
                    at,
                    f"register rolled over from {last_reg} to {total}: {used} charged",
                    used,
                )
            )
        else:
            run.anomalies.append(
                Anomaly(
                    AnomalyKind.REGISTER_DOWN,
                    at,
                    f"register went from {last_reg} to {total}; not charged, re-based",
                )
            )
    elif used is None:
        run.anomalies.append(
            Anomaly(
                AnomalyKind.IMPOSSIBLE_JUMP,
                at,
                f"register jumped {delta} in {elapsed} (at most {ceiling} possible); "
                "not charged, re-based",
            )
        )
    elif delta > 0:
        run.stuck = False
    elif r.power is not None and r.power > 0 and not run.stuck:
        expected = r.power * _hours(elapsed)
        if expected >= lim.stuck_min:
            run.stuck = True
            run.anomalies.append(
                Anomaly(
                    AnomalyKind.STUCK_REGISTER,
                    at,
                    f"register still at {total} for {elapsed} while drawing {r.power} "
                    f"(about {expected} expected)",
                )
            )
    if used:
        _charge(run, used, r, version, terms)
        run.consumption += used
    run.last_tou = r.tou


def _extend_back(run: _Run, r: RegisterReading, terms: PointTerms) -> bool:
    """A reading earlier than the baseline (the earliest reading rated; for a mark from
    before baselines were kept, its last reading while it has charged nothing): the
    baseline moves back to it and the consumption up to the baseline is charged, priced at
    the baseline's instant (the interval's end). The mark's instant stays where it is."""
    base_at: datetime | None
    base_reg: Decimal | None
    base_tou: TouRegisters | None
    if run.first_measured_at is not None and run.first_register is not None:
        base_at, base_reg, base_tou = run.first_measured_at, run.first_register, None
    elif run.consumption_total == 0:
        base_at, base_reg, base_tou = run.last_measured_at, run.last_register, run.last_tou
    else:
        return False
    total = r.total
    if base_at is None or base_reg is None or total is None or r.measured_at >= base_at:
        return False
    lim = terms.limits
    delta = base_reg - total
    if delta < 0 or delta > lim.max_rate * _hours(base_at - r.measured_at) + lim.slack:
        return False
    if delta:
        last_tou = run.last_tou
        run.last_tou = r.tou if base_tou is not None else None
        at_base = RegisterReading(base_at, base_reg, base_tou)
        _charge(run, delta, at_base, _version(terms, base_at), terms)
        run.consumption += delta
        run.last_tou = last_tou
    run.first_measured_at, run.first_register = r.measured_at, total
    return True


def _tou_deltas(before: TouRegisters | None, now: TouRegisters | None) -> list[Decimal] | None:
    if before is None or now is None:
        return None
    deltas = [b - a for a, b in zip(before, now, strict=True)]
    return deltas if all(d >= 0 for d in deltas) else None


def _charge(
    run: _Run,
    used: Decimal,
    r: RegisterReading,
    version: TariffVersion | None,
    terms: PointTerms,
) -> None:
    run.consumption_total += used
    if not terms.charged:
        return
    if version is None:
        raise LookupError(f"no tariff version effective at {r.measured_at.isoformat()}")
    plan = version.plan
    at = r.measured_at
    if isinstance(plan, Flat):
        exact = plan.charge(used)
    elif isinstance(plan, Tiered):
        cycle = cycle_key(plan.cycle, as_of(at), terms.tz)
        before = run.cycle_consumption if run.cycle == cycle else Decimal(0)
        exact = plan.charge(before, used)
        run.cycle, run.cycle_consumption = cycle, before + used
    else:
        exact = _tou_charge(plan, used, run.last_tou, r, terms)
    run.exact_total += exact
    run.billed_total = to_fen(run.exact_total)


def _tou_charge(
    plan: TimeOfUse,
    used: Decimal,
    last_tou: TouRegisters | None,
    r: RegisterReading,
    terms: PointTerms,
) -> Decimal:
    deltas = _tou_deltas(last_tou, r.tou)
    if deltas is not None:
        return plan.charge_registers(dict(zip(TOU_ORDER, deltas, strict=True)))
    return used * plan.price(plan.interval_period(r.measured_at, terms.tz))


def flush(mark: RatingMark, now: datetime) -> tuple[RatingMark, UsagePosting | None]:
    """Post a window that has ended by ``now`` without waiting for the next reading."""
    if mark.window_start is None or mark.window_start + WINDOW > now or mark.unposted == 0:
        return mark, None
    posting = UsagePosting(mark.window_start, mark.unposted, mark.billed_total)
    return replace(mark, posted_total=mark.billed_total), posting


def swap_meter(
    mark: RatingMark,
    at: datetime,
    final_register: Decimal,
    initial_register: Decimal,
    terms: PointTerms,
    final_tou: TouRegisters | None = None,
) -> RatingOutcome:
    """The old meter's final reading is rated as a reading; the new meter's initial reading
    becomes the base the next readings are measured from. Recorded as an anomaly so the
    swap appears beside the point's other reading events."""
    out = rate(mark, [RegisterReading(at, final_register, final_tou)], terms)
    old = out.mark
    last = old.last_measured_at if old.last_measured_at and old.last_measured_at > at else at
    new_mark = replace(
        old, last_measured_at=last, last_register=initial_register, last_tou=None, stuck=False
    )
    swap = Anomaly(
        AnomalyKind.METER_SWAP,
        at,
        f"meter swapped: old meter final {final_register}, new meter initial {initial_register}",
        out.consumption,
    )
    return replace(out, mark=new_mark, anomalies=(*out.anomalies, swap))


# -- the rating envelope: what the set-based fast path (cloud.rating.fast) may assume ------

_BOUNDARY_MARGIN = timedelta(hours=2)  # below a local month/year start, whatever the DST
_TOU_SPAN = timedelta(hours=12)  # at most one UTC offset change fits in this
# An envelope's longest reach: beyond it a reading is a gap anyway, and the core looks again.
_ENVELOPE_SPAN = timedelta(days=31)


@dataclass(frozen=True)
class Envelope:
    """For the readings after a mark and before ``until``: everything :func:`rate` looks up
    stays as it is — the tariff version, the fee month, the tier cycle and block, the TOU
    period — so a reading whose consumption stays within the channel's limits (no gap, no
    jump, no rollover, no stuck register) costs ``price`` per unit, or by the meter's TOU
    registers at ``tou_prices``; the hourly usage windows it closes are posted as
    :func:`rate` posts them (``window_of``, ``UsagePosting``). Anything else is left to
    :func:`rate`."""

    until: datetime
    price: Decimal  # per unit of consumption (0: consumption tracked, not charged)
    tou_prices: tuple[Decimal, Decimal, Decimal, Decimal] | None  # by registers, TOU_ORDER
    tiered: bool  # consumption also counts towards the tier cycle
    block_end: Decimal | None  # tiered: the cycle's consumption may reach this (None: open)
    limits: tuple[Decimal, Decimal, Decimal, Decimal]  # max_rate, slack, stuck_min, gap (s)


def _next_month(ts: datetime, tz: tzinfo) -> datetime:
    local = ts.astimezone(tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=tz) - _BOUNDARY_MARGIN


def _next_year(ts: datetime, tz: tzinfo) -> datetime:
    return datetime(ts.astimezone(tz).year + 1, 1, 1, tzinfo=tz) - _BOUNDARY_MARGIN


def _next_period(plan: TimeOfUse, ts: datetime, tz: tzinfo) -> datetime | None:
    """The first TOU window start after ``ts`` (at most ``_TOU_SPAN`` on), or None when the
    site's UTC offset changes before it."""
    local = ts.astimezone(tz)
    wall = local.replace(tzinfo=None)
    starts = [datetime.combine(wall.date(), w.start) for w in plan.windows]
    starts.append(datetime.combine(wall.date() + timedelta(days=1), plan.windows[0].start))
    following = min(s for s in starts if s > wall)
    until = ts + min(following - wall, _TOU_SPAN)
    return until if until.astimezone(tz).utcoffset() == local.utcoffset() else None


def envelope(mark: RatingMark, terms: PointTerms) -> Envelope | None:
    """The envelope of the readings after ``mark`` (None: every reading goes to
    :func:`rate`). Readings at instants ``at`` in ``(last_measured_at, until)`` are priced
    as of ``at - 1µs``, within ``[last_measured_at, until)``: every bound below is a start
    of something new at or after ``until``."""
    m = mark.last_measured_at
    if m is None or mark.last_register is None or mark.window_start is None:
        return None
    lim = terms.limits
    limits = (lim.max_rate, lim.slack, lim.stuck_min, Decimal(lim.gap // _US) / 1_000_000)
    until = m + _ENVELOPE_SPAN
    price, tou_prices, tiered, block_end = Decimal(0), None, False, None
    if terms.charged:
        tariff, tz = terms.tariff, terms.tz
        try:
            version = tariff.at(m)
        except LookupError:
            return None
        later = [v.effective_from for v in tariff.versions if v.effective_from > m]
        if later:
            until = min(until, later[0])
        if version.monthly_fee > 0:
            if mark.fee_month != month_key(m, tz):
                return None
            until = min(until, _next_month(m, tz))
        plan = version.plan
        if isinstance(plan, Flat):
            price = plan.unit_price
        elif isinstance(plan, Tiered):
            if mark.cycle != cycle_key(plan.cycle, m, tz):
                return None
            until = min(until, _next_month(m, tz) if plan.cycle == "month" else _next_year(m, tz))
            before = mark.cycle_consumption
            block = next(b for b in plan.blocks if b.up_to is None or b.up_to > before)
            price, tiered, block_end = block.price, True, block.up_to
        else:
            following = _next_period(plan, m, tz)
            priced = {p for p, _ in plan.prices}
            if following is None or any(p not in priced for p in TOU_ORDER):
                return None
            until = min(until, following)
            price = plan.price(plan.period_at(m, tz))
            sharp, peak, flat, valley = (plan.price(p) for p in TOU_ORDER)
            tou_prices = (sharp, peak, flat, valley)
    if until <= m:
        return None
    return Envelope(until, price, tou_prices, tiered, block_end, limits)
