"""Rating over plain values: consumption from cumulative registers, charges with carry.

Charges are computed exactly and rounded once per posting against the running exact total
(``posted = to_fen(exact_total) - already_posted``), so a point's charges always sum to the
tariff applied to its total consumption, to the fen, however the readings are split.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from cloud.money import to_fen


class AnomalyKind(StrEnum):
    REGISTER_DOWN = "register_down"
    LATE_READING = "late_reading"


@dataclass(frozen=True)
class RegisterReading:
    measured_at: datetime
    total: Decimal | None


@dataclass(frozen=True)
class RatingMark:
    """How far a service point has been rated."""

    last_measured_at: datetime | None = None
    last_register: Decimal | None = None
    consumption_total: Decimal = Decimal(0)
    exact_total: Decimal = Decimal(0)
    posted_total: Decimal = Decimal(0)


@dataclass(frozen=True)
class Anomaly:
    kind: AnomalyKind
    measured_at: datetime
    detail: str


@dataclass(frozen=True)
class RatingOutcome:
    mark: RatingMark
    consumption: Decimal
    charge: Decimal
    anomalies: tuple[Anomaly, ...]

    @property
    def advanced(self) -> bool:
        return self.consumption != 0 or self.charge != 0


@dataclass(frozen=True)
class FlatPrices:
    """Unit prices by effective date (sorted ascending); a change never re-rates the past."""

    versions: tuple[tuple[datetime, Decimal], ...]

    def at(self, ts: datetime) -> Decimal:
        i = bisect_right([v[0] for v in self.versions], ts)
        if i == 0:
            raise LookupError(f"no tariff version effective at {ts.isoformat()}")
        return self.versions[i - 1][1]


def rate(
    mark: RatingMark, readings: Sequence[RegisterReading], prices: FlatPrices
) -> RatingOutcome:
    """Advance ``mark`` over ``readings`` (any order); only readings after the mark count."""
    anomalies: list[Anomaly] = []
    consumption = Decimal(0)
    exact = mark.exact_total
    last_at, last_reg = mark.last_measured_at, mark.last_register
    for r in sorted(readings, key=lambda x: x.measured_at):
        if r.total is None:
            continue
        if last_at is not None and r.measured_at <= last_at:
            anomalies.append(
                Anomaly(AnomalyKind.LATE_READING, r.measured_at, "at or before the rated mark")
            )
            continue
        if last_reg is not None:
            delta = r.total - last_reg
            if delta < 0:
                anomalies.append(
                    Anomaly(
                        AnomalyKind.REGISTER_DOWN,
                        r.measured_at,
                        f"register went from {last_reg} to {r.total}; not charged, re-based",
                    )
                )
            elif delta > 0:
                consumption += delta
                exact += delta * prices.at(r.measured_at)
        last_at, last_reg = r.measured_at, r.total
    charge = to_fen(exact) - mark.posted_total
    new_mark = replace(
        mark,
        last_measured_at=last_at,
        last_register=last_reg,
        consumption_total=mark.consumption_total + consumption,
        exact_total=exact,
        posted_total=mark.posted_total + charge,
    )
    return RatingOutcome(new_mark, consumption, charge, tuple(anomalies))
