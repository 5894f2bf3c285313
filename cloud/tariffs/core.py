"""Tariffs over plain values: flat, tiered (阶梯) and time-of-use (尖峰平谷) plans, fixed
monthly fees, and versions with effective dates.

Conventions the rating engine relies on:

- An interval between two readings ``(a, b]`` is priced *as of* the instant just before
  ``b`` (:func:`as_of`): the version in force then, the TOU period then, the billing cycle
  then. So a reading taken exactly at 08:00 closes an interval of the period that ends at
  08:00, and a reading at midnight on the 1st closes the previous month.
- Prices are exact ``Decimal`` (up to 4 decimals); charges are never rounded here. The
  one rounding (to the fen) happens per posting in :mod:`cloud.rating.core`.
- Water is priced per m³ exactly like electricity per kWh: the unit is the utility's.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

INSTANT = timedelta(microseconds=1)


class TariffError(ValueError):
    """A tariff definition that cannot be applied."""


class Cycle(StrEnum):
    MONTH = "month"
    YEAR = "year"


class TouPeriod(StrEnum):
    """The four Chinese TOU periods, in the order meters keep their registers."""

    SHARP = "sharp"  # 尖
    PEAK = "peak"  # 峰
    FLAT = "flat"  # 平
    VALLEY = "valley"  # 谷


TOU_ORDER: tuple[TouPeriod, ...] = (
    TouPeriod.SHARP,
    TouPeriod.PEAK,
    TouPeriod.FLAT,
    TouPeriod.VALLEY,
)


def as_of(interval_end: datetime) -> datetime:
    """The instant an interval ending at ``interval_end`` is priced at."""
    return interval_end - INSTANT


def cycle_key(cycle: Cycle, ts: datetime, tz: tzinfo) -> str:
    local = ts.astimezone(tz)
    return f"{local.year:04d}" if cycle is Cycle.YEAR else f"{local.year:04d}-{local.month:02d}"


def month_key(ts: datetime, tz: tzinfo) -> str:
    return cycle_key(Cycle.MONTH, ts, tz)


def _price(value: Any, what: str) -> Decimal:
    try:
        price = Decimal(str(value))
    except InvalidOperation as exc:
        raise TariffError(f"{what}: not a number: {value!r}") from exc
    if not price.is_finite() or price < 0:
        raise TariffError(f"{what}: must be a non-negative number, got {value!r}")
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        raise TariffError(f"{what}: more than 4 decimals: {value!r}")
    return price


@dataclass(frozen=True)
class Flat:
    unit_price: Decimal

    def charge(self, amount: Decimal) -> Decimal:
        return amount * self.unit_price


@dataclass(frozen=True)
class Block:
    """Consumption in a cycle up to ``up_to`` (cumulative; None = no upper bound)."""

    up_to: Decimal | None
    price: Decimal


@dataclass(frozen=True)
class Tiered:
    """Block prices by cumulative consumption within a month or a year."""

    cycle: Cycle
    blocks: tuple[Block, ...]

    def __post_init__(self) -> None:
        if not self.blocks or self.blocks[-1].up_to is not None:
            raise TariffError("the last block must be open-ended")
        bounds = [b.up_to for b in self.blocks[:-1]]
        if any(b is None or b <= 0 for b in bounds) or bounds != sorted(bounds):  # type: ignore[type-var]
            raise TariffError("block bounds must be positive and ascending")

    def charge(self, used_before: Decimal, amount: Decimal) -> Decimal:
        """Exact charge for ``amount`` consumed after ``used_before`` in the same cycle,
        split across every block boundary it crosses."""
        total = Decimal(0)
        lower = Decimal(0)
        start, end = used_before, used_before + amount
        for block in self.blocks:
            upper = block.up_to
            lo = max(start, lower)
            hi = end if upper is None else min(end, upper)
            if hi > lo:
                total += (hi - lo) * block.price
            if upper is None or end <= upper:
                break
            lower = upper
        return total


@dataclass(frozen=True)
class TouWindow:
    start: time  # local wall-clock time the period starts
    period: TouPeriod


@dataclass(frozen=True)
class TimeOfUse:
    """Prices per TOU period and the daily schedule (local time of the site)."""

    prices: tuple[tuple[TouPeriod, Decimal], ...]
    windows: tuple[TouWindow, ...]
    _starts: tuple[time, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.windows or self.windows[0].start != time(0):
            raise TariffError("a TOU schedule starts at 00:00")
        starts = tuple(w.start for w in self.windows)
        if list(starts) != sorted(set(starts)):
            raise TariffError("TOU window starts must be strictly ascending")
        priced = {p for p, _ in self.prices}
        missing = {w.period for w in self.windows} - priced
        if missing:
            raise TariffError(f"TOU periods without a price: {sorted(missing)}")
        object.__setattr__(self, "_starts", starts)

    def price(self, period: TouPeriod) -> Decimal:
        for p, price in self.prices:
            if p is period:
                return price
        raise TariffError(f"no price for TOU period {period}")

    def period_at(self, ts: datetime, tz: tzinfo) -> TouPeriod:
        """The period in force at ``ts`` (a window owns ``[start, next start)``)."""
        tod = ts.astimezone(tz).time().replace(tzinfo=None)
        return self.windows[bisect_right(self._starts, tod) - 1].period

    def interval_period(self, interval_end: datetime, tz: tzinfo) -> TouPeriod:
        return self.period_at(as_of(interval_end), tz)

    def charge_registers(self, deltas: Mapping[TouPeriod, Decimal]) -> Decimal:
        return sum((amount * self.price(p) for p, amount in deltas.items()), Decimal(0))


Plan = Flat | Tiered | TimeOfUse


@dataclass(frozen=True)
class TariffVersion:
    effective_from: datetime
    plan: Plan
    monthly_fee: Decimal = Decimal(0)


@dataclass(frozen=True)
class Tariff:
    """A tariff's versions, ascending by effective date. A new version applies from its
    date on; what was rated before it stays as it was."""

    versions: tuple[TariffVersion, ...]
    _starts: tuple[datetime, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = tuple(v.effective_from for v in self.versions)
        if not starts or list(starts) != sorted(set(starts)):
            raise TariffError("a tariff needs versions with distinct ascending effective dates")
        object.__setattr__(self, "_starts", starts)

    def at(self, ts: datetime) -> TariffVersion:
        """The version in force at ``ts``; before the first one, the first one. A point
        moved to a newer tariff may still send readings taken before that tariff's first
        version (a gateway's store-and-forward): they are rated after the move, so at the
        point's tariff then, rather than jamming the batch that carries them. (Versions of
        one tariff start now or later, and the mark only moves forward: nothing already
        rated is priced again.)"""
        i = bisect_right(self._starts, ts)
        return self.versions[max(i, 1) - 1]

    def for_interval(self, interval_end: datetime) -> TariffVersion:
        return self.at(as_of(interval_end))


def flat_tariff(effective_from: datetime, unit_price: Decimal) -> Tariff:
    return Tariff((TariffVersion(effective_from, Flat(unit_price)),))


# -- stored form: tariff_version.kind + tariff_version.spec (JSON, decimals as strings) ----


def plan_from_spec(kind: str, spec: Mapping[str, Any], unit_price: Decimal | None) -> Plan:
    """Parse a stored plan; raise :class:`TariffError` on anything inconsistent."""
    if kind == "flat":
        return Flat(_price(spec.get("unit_price", unit_price), "unit_price"))
    if kind == "tiered":
        try:
            cycle = Cycle(spec["cycle"])
            raw_blocks = list(spec["blocks"])
        except (KeyError, ValueError, TypeError) as exc:
            raise TariffError(f"tiered spec needs cycle and blocks: {exc}") from exc
        blocks = tuple(
            Block(
                None if b.get("up_to") is None else _price(b["up_to"], "up_to"),
                _price(b["price"], "block price"),
            )
            for b in raw_blocks
        )
        return Tiered(cycle, blocks)
    if kind == "tou":
        try:
            prices = tuple(
                (TouPeriod(p), _price(v, f"{p} price")) for p, v in dict(spec["prices"]).items()
            )
            windows = tuple(
                TouWindow(time.fromisoformat(w["start"]), TouPeriod(w["period"]))
                for w in spec["windows"]
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise TariffError(f"tou spec needs prices and windows: {exc}") from exc
        return TimeOfUse(prices, windows)
    raise TariffError(f"unknown tariff kind {kind!r}")


def plan_to_spec(plan: Plan) -> tuple[str, dict[str, Any]]:
    if isinstance(plan, Flat):
        return "flat", {"unit_price": str(plan.unit_price)}
    if isinstance(plan, Tiered):
        return "tiered", {
            "cycle": plan.cycle.value,
            "blocks": [
                {"up_to": None if b.up_to is None else str(b.up_to), "price": str(b.price)}
                for b in plan.blocks
            ],
        }
    return "tou", {
        "prices": {p.value: str(v) for p, v in plan.prices},
        "windows": [{"start": w.start.isoformat(), "period": w.period.value} for w in plan.windows],
    }
