"""A tariff version's price plan as the clerk types it (设置 → 价格方案): a flat unit
price, rows of tiers (upper bound and price; the last row open-ended) or rows of
time-of-use periods (start, end, 尖/峰/平/谷 and price) that cover the day. Read into the
spec the API takes (``cloud.tariffs.rules``), or refused with the row and what is wrong in
the clerk's language; the form is drawn again with everything typed, so nothing is lost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Any

from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.errors import Invalid
from cloud.tariffs.rules import MAX_BLOCKS, MAX_WINDOWS

TIER_ROWS = 6  # rows drawn for tiers (MAX_BLOCKS is the rule)
TOU_ROWS = 8  # rows drawn for time-of-use periods
PERIODS = (
    ("sharp", N_("Sharp (尖)")),
    ("peak", N_("Peak (峰)")),
    ("flat", N_("Flat (平)")),
    ("valley", N_("Valley (谷)")),
)
CYCLES = (("month", N_("Monthly")), ("year", N_("Yearly")))
KINDS = ("flat", "tiered", "tou")


@dataclass(frozen=True)
class PlanInput:
    kind: str
    spec: dict[str, Any]


def _refuse(message: str, **values: object) -> Invalid:
    """A refusal already in the clerk's language (explain() keeps it as it is)."""
    return Invalid(_(message) % values if values else _(message))


def _number(text: str, places: int, what: str, row: int) -> Decimal:
    try:
        value = Decimal(text.replace(",", "").replace("¥", "").strip())
    except InvalidOperation:
        raise _refuse(N_("Row %(row)s: %(what)s is not a number."), row=row, what=_(what)) from None
    if not value.is_finite() or value <= 0:
        raise _refuse(N_("Row %(row)s: %(what)s must be above zero."), row=row, what=_(what))
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise _refuse(
            N_("Row %(row)s: %(what)s takes at most %(places)s decimals."),
            row=row,
            what=_(what),
            places=places,
        )
    if value >= Decimal(10) ** 9:
        raise _refuse(N_("Row %(row)s: %(what)s is too large."), row=row, what=_(what))
    return value


def _clock(text: str, what: str, row: int) -> time:
    try:
        value = time.fromisoformat(text.strip())
    except ValueError:
        raise _refuse(
            N_("Row %(row)s: %(what)s is a time like 08:00."), row=row, what=_(what)
        ) from None
    if value.second or value.microsecond:
        raise _refuse(N_("Row %(row)s: times are whole minutes, like 08:00."), row=row)
    return value


def unit_price(data: Mapping[str, str]) -> dict[str, Any]:
    text = data.get("unit_price", "").replace(",", "").replace("¥", "").strip()
    if not text:
        raise _refuse(N_("Fill in the unit price."))
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise _refuse(N_("The unit price is a number.")) from None
    if not value.is_finite() or value <= 0 or value >= Decimal(10) ** 9:
        raise _refuse(N_("The unit price must be above zero (and below a billion)."))
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        raise _refuse(N_("The unit price takes at most 4 decimals."))
    return {"unit_price": str(value)}


def tiers(data: Mapping[str, str]) -> dict[str, Any]:
    """Rows ``tier_up_N`` (the upper bound of the cycle's cumulative use; empty on the last
    row: no bound) and ``tier_price_N``; empty rows are skipped."""
    cycle = data.get("cycle", "month")
    if cycle not in dict(CYCLES):
        raise _refuse(N_("Choose whether the tiers count by month or by year."))
    rows = []
    for n in range(1, MAX_BLOCKS + 1):
        up = data.get(f"tier_up_{n}", "").strip()
        price = data.get(f"tier_price_{n}", "").strip()
        if up or price:
            rows.append((n, up, price))
    if not rows:
        raise _refuse(N_("Fill in at least one tier: its upper bound and its price."))
    blocks: list[dict[str, str | None]] = []
    last_bound: Decimal | None = None
    for i, (n, up, price) in enumerate(rows):
        if not price:
            raise _refuse(N_("Row %(row)s: fill in the price."), row=n)
        value = _number(price, 4, N_("the price"), n)
        final = i == len(rows) - 1
        if not up:
            if not final:
                raise _refuse(N_("Row %(row)s: only the last tier has no upper bound."), row=n)
            blocks.append({"up_to": None, "price": str(value)})
            continue
        if final:
            raise _refuse(
                N_("Row %(row)s: leave the last tier's upper bound empty (it has no limit)."),
                row=n,
            )
        bound = _number(up, 3, N_("the upper bound"), n)
        if last_bound is not None and bound <= last_bound:
            raise _refuse(
                N_(
                    "Row %(row)s: the upper bound %(bound)s must be above the tier "
                    "before's %(before)s."
                ),
                row=n,
                bound=bound,
                before=last_bound,
            )
        last_bound = bound
        blocks.append({"up_to": str(bound), "price": str(value)})
    return {"cycle": cycle, "blocks": blocks}


def periods(data: Mapping[str, str]) -> dict[str, Any]:
    """Rows ``tou_start_N``, ``tou_end_N``, ``tou_period_N`` (尖峰平谷) and ``tou_price_N``
    that together cover the day from 00:00, each ending where the next begins; a period
    has one price."""
    rows: list[tuple[int, str, str, str, str]] = []
    for n in range(1, MAX_WINDOWS + 1):
        start, end, price = (
            data.get(f"tou_{f}_{n}", "").strip() for f in ("start", "end", "price")
        )
        if start or end or price:
            rows.append((n, start, end, price, data.get(f"tou_period_{n}", "")))
    if not rows:
        raise _refuse(N_("Fill in the day's periods: start, end, period and price."))
    names = dict(PERIODS)
    windows: list[tuple[time, time, str, int]] = []
    prices: dict[str, Decimal] = {}
    for n, start, end, price, period in rows:
        if not start or not end or not price:
            raise _refuse(N_("Row %(row)s: fill in the start, the end and the price."), row=n)
        if period not in names:
            raise _refuse(N_("Row %(row)s: choose sharp, peak, flat or valley."), row=n)
        begins = _clock(start, N_("the start"), n)
        ends = _clock(end, N_("the end"), n)
        if begins == ends:
            raise _refuse(N_("Row %(row)s: the period ends where it starts."), row=n)
        value = _number(price, 4, N_("the price"), n)
        if period in prices and prices[period] != value:
            raise _refuse(
                N_("Row %(row)s: %(period)s is priced %(a)s and %(b)s; a period has one price."),
                row=n,
                period=_(names[period]),
                a=prices[period],
                b=value,
            )
        prices[period] = value
        if ends < begins and ends != time(0):  # 22:00–06:00: on over midnight
            windows += [(begins, time(0), period, n), (time(0), ends, period, n)]
        else:
            windows.append((begins, ends, period, n))
    windows.sort()
    if windows[0][0] != time(0):
        raise _refuse(N_("The first period starts at 00:00 (the periods cover the whole day)."))
    for (_s, until, _p, n), (after, _e, _q, m) in pairwise(windows):
        if until != after:
            raise _refuse(
                N_(
                    "Row %(row)s ends at %(end)s but the next period (row %(next)s) starts at "
                    "%(start)s: the periods must follow on without gaps or overlaps."
                ),
                row=n,
                end=until.strftime("%H:%M"),
                next=m,
                start=after.strftime("%H:%M"),
            )
    if windows[-1][1] != time(0):
        raise _refuse(
            N_("The last period (row %(row)s) ends at 00:00 (the periods cover the whole day)."),
            row=windows[-1][3],
        )
    return {
        "prices": {p: str(v) for p, v in prices.items()},
        "windows": [{"start": w[0].strftime("%H:%M"), "period": w[2]} for w in windows],
    }


def plan_from_form(data: Mapping[str, str], utility: str | None) -> PlanInput:
    """The plan the form describes; ``utility`` (when known) refuses a TOU water tariff."""
    kind = data.get("kind", "flat") or "flat"
    if kind not in KINDS:
        raise _refuse(N_("Choose the price plan: flat, tiered or time of use."))
    if kind == "flat":
        return PlanInput("flat", unit_price(data))
    if kind == "tiered":
        return PlanInput("tiered", tiers(data))
    if utility == "water":
        raise _refuse(N_("Water is priced per m³: flat or tiered, not time of use."))
    return PlanInput("tou", periods(data))
