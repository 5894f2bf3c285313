"""What an operator may do to tariffs, over plain values (no database, no clock).

- A version's plan is valid for its utility: flat, tiered (阶梯) or TOU (尖峰平谷) for
  electricity; water is priced per m³, flat or tiered only. Prices are positive with at
  most 4 decimals, the monthly fee non-negative with at most 2.
- A version starts now or later (``SKEW`` of clock difference allowed, the start then being
  now): what was charged before is never re-rated. Two versions of a tariff never share a
  start.
- The margin rule (the 2022 rule for electricity a landlord supplies): at a site recording
  its catalogue flat price, an electricity version whose highest unit price is above
  ``catalogue_price × (1 + price_margin)`` is refused unless acknowledged with a reason.
- A tariff is assigned only to points of its utility, at its site, not removed, and only
  once it has a version in force.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cloud.horizons import TARIFF_START
from cloud.tariffs.core import (
    Flat,
    Plan,
    TariffError,
    Tiered,
    TimeOfUse,
    plan_from_spec,
    plan_to_spec,
)

SKEW = timedelta(seconds=60)  # a start this far before now is taken as now
UTILITIES = ("electricity", "water")
MAX_BLOCKS = 10
MAX_WINDOWS = 48


class RuleError(ValueError):
    """A tariff change the rules refuse (the message says why, for the operator)."""


class MarginExceeded(RuleError):
    """A price above a site's catalogue price plus its margin, not acknowledged."""


@dataclass(frozen=True)
class Ceiling:
    """A site's catalogue flat price and the margin a landlord may charge above it."""

    site: str
    catalogue_price: Decimal
    margin: Decimal

    @property
    def limit(self) -> Decimal:
        return self.catalogue_price * (1 + self.margin)


@dataclass(frozen=True)
class VersionDraft:
    kind: str  # flat | tiered | tou
    spec: Mapping[str, Any]  # the stored form (cloud.tariffs.core.plan_from_spec)
    monthly_fee: Decimal = Decimal(0)
    effective_from: datetime | None = None  # None: now
    margin_reason: str | None = None


@dataclass(frozen=True)
class AcceptedVersion:
    effective_from: datetime
    kind: str
    unit_price: Decimal | None  # flat plans: also in its column
    spec: dict[str, Any]
    monthly_fee: Decimal
    highest_price: Decimal
    margin_reason: str | None  # kept only where a price is above a ceiling


def _decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _positive(value: Decimal, what: str) -> None:
    if value <= 0:
        raise RuleError(f"{what} must be above zero, got {value}")


def valid_plan(utility: str, kind: str, spec: Mapping[str, Any]) -> Plan:
    """The plan of ``spec``, or :class:`RuleError` saying what is wrong with it."""
    if utility not in UTILITIES:
        raise RuleError(f"utility must be electricity or water, got {utility!r}")
    if utility == "water" and kind == "tou":
        raise RuleError("water is priced per m³: flat or tiered, not time-of-use")
    if kind == "tiered" and len(spec.get("blocks") or ()) > MAX_BLOCKS:
        raise RuleError(f"a tiered plan has at most {MAX_BLOCKS} blocks")
    if kind == "tou" and len(spec.get("windows") or ()) > MAX_WINDOWS:
        raise RuleError(f"a TOU plan has at most {MAX_WINDOWS} windows")
    try:
        plan = plan_from_spec(kind, spec, None)
    except TariffError as exc:
        raise RuleError(str(exc)) from exc
    if isinstance(plan, Flat):
        _positive(plan.unit_price, "unit_price")
    elif isinstance(plan, Tiered):
        bounds = [b.up_to for b in plan.blocks[:-1]]
        if len(set(bounds)) != len(bounds):
            raise RuleError("block bounds must be strictly ascending (two blocks end at once)")
        for n, block in enumerate(plan.blocks, 1):
            _positive(block.price, f"block {n} price")
            if block.up_to is not None and _decimals(block.up_to) > 3:
                raise RuleError(f"block {n} up_to has more than 3 decimals: {block.up_to}")
    else:
        _check_tou(plan)
    return plan


def _check_tou(plan: TimeOfUse) -> None:
    for period, price in plan.prices:
        _positive(price, f"{period.value} price")
    for w in plan.windows:
        if w.start.second or w.start.microsecond:
            raise RuleError(f"TOU window {w.start.isoformat()} must start on a whole minute")
    used = {w.period for w in plan.windows}
    unused = [p.value for p, _ in plan.prices if p not in used]
    if unused:
        raise RuleError(f"priced TOU periods no window uses: {', '.join(unused)}")


def highest_price(plan: Plan) -> Decimal:
    """The highest unit price a plan charges (what the margin rule looks at)."""
    if isinstance(plan, Flat):
        return plan.unit_price
    if isinstance(plan, Tiered):
        return max(b.price for b in plan.blocks)
    return max(price for _, price in plan.prices)


def valid_monthly_fee(fee: Decimal) -> Decimal:
    if not fee.is_finite() or fee < 0:
        raise RuleError(f"monthly_fee must be zero or more, got {fee}")
    if _decimals(fee) > 2:
        raise RuleError(f"monthly_fee has more than 2 decimals: {fee}")
    return fee


def start_of(requested: datetime | None, now: datetime, existing: Collection[datetime]) -> datetime:
    """When a new version starts: ``requested`` (None: now), never in the past — one up to
    ``SKEW`` before ``now`` starts now — nor more than five years ahead
    (:data:`cloud.horizons.TARIFF_START`), and not when another version of the tariff does."""
    if requested is None:
        start = now
    else:
        if requested.tzinfo is None or requested.utcoffset() is None:
            raise RuleError("effective_from needs a time zone")
        if requested < now - SKEW:
            raise RuleError(
                f"effective_from {requested.isoformat()} is in the past: a version starts "
                "now or later (what was charged is never re-rated)"
            )
        if requested > now + TARIFF_START.ahead:
            raise RuleError(
                f"effective_from {requested.isoformat()} is more than {TARIFF_START.days} days "
                "ahead: a version starts at most five years from now"
            )
        start = max(requested, now)
    if start in existing:
        raise RuleError(f"the tariff already has a version starting at {start.isoformat()}")
    return start


def margin_reason(
    utility: str, highest: Decimal, ceilings: Sequence[Ceiling], reason: str | None
) -> str | None:
    """The acknowledged reason to keep (None: the price is within every ceiling), or
    :class:`MarginExceeded` for a price above a ceiling without a reason."""
    if utility != "electricity":
        return None
    over = [c for c in ceilings if highest > c.limit]
    if not over:
        return None
    if reason is not None and reason.strip():
        return reason.strip()
    c = min(over, key=lambda c: c.limit)
    raise MarginExceeded(
        f"unit price {highest} is above the ceiling {c.limit.quantize(Decimal('0.0001'))} "
        f"at site {c.site} (catalogue price {c.catalogue_price} plus "
        f"{(c.margin * 100).normalize():f}% margin): acknowledge it with a reason "
        "(margin_reason) to accept it"
    )


def accept_version(
    utility: str,
    draft: VersionDraft,
    now: datetime,
    existing: Collection[datetime],
    ceilings: Sequence[Ceiling],
) -> AcceptedVersion:
    """A version as it is stored, or :class:`RuleError` for the first rule it breaks."""
    plan = valid_plan(utility, draft.kind, draft.spec)
    fee = valid_monthly_fee(draft.monthly_fee)
    start = start_of(draft.effective_from, now, existing)
    highest = highest_price(plan)
    reason = margin_reason(utility, highest, ceilings, draft.margin_reason)
    kind, spec = plan_to_spec(plan)
    return AcceptedVersion(
        effective_from=start,
        kind=kind,
        unit_price=plan.unit_price if isinstance(plan, Flat) else None,
        spec=spec,
        monthly_fee=fee,
        highest_price=highest,
        margin_reason=reason,
    )


# -- assignment ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TariffFacts:
    name: str
    utility: str
    site_id: uuid.UUID | None  # None: every site of the group
    active: bool
    starts: tuple[datetime, ...]  # its versions' effective dates


@dataclass(frozen=True)
class PointFacts:
    id: uuid.UUID
    name: str
    utility: str
    site_id: uuid.UUID
    removed: bool


def check_assignment(tariff: TariffFacts, points: Sequence[PointFacts], now: datetime) -> None:
    """:class:`RuleError` naming the first point the tariff cannot be assigned to."""
    if not points:
        raise RuleError("no service points to assign")
    if not tariff.active:
        raise RuleError(f"tariff {tariff.name} is not active")
    if not any(s <= now for s in tariff.starts):
        first = min(tariff.starts, default=None)
        when = f" (its first starts {first.isoformat()})" if first else ""
        raise RuleError(f"tariff {tariff.name} has no version in force yet{when}")
    for p in points:
        if p.removed:
            raise RuleError(f"service point {p.name} is removed")
        if p.utility != tariff.utility:
            raise RuleError(
                f"service point {p.name} is {p.utility}; tariff {tariff.name} is {tariff.utility}"
            )
        if tariff.site_id is not None and p.site_id != tariff.site_id:
            raise RuleError(f"service point {p.name} is at another site than tariff {tariff.name}")
