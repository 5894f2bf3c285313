"""Common-area allocation (公摊) over plain values: a common meter's charge shared among
chosen service points by floor area or by their own consumption, to the fen.

The shares always sum to the charge exactly: each point gets its quota rounded down to the
fen, and the fen left over go one each to the largest remainders (ties: the order given).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import TypeVar

from cloud.money import FEN

K = TypeVar("K", bound=Hashable)


class AllocationError(ValueError):
    pass


class Basis(StrEnum):
    AREA = "area"
    CONSUMPTION = "consumption"


def split(total: Decimal, weights: Sequence[tuple[K, Decimal]]) -> dict[K, Decimal]:
    """Share ``total`` (whole fen) in proportion to ``weights`` (largest remainder)."""
    if total != total.quantize(FEN):
        raise AllocationError(f"{total} is not a whole number of fen")
    if any(w < 0 for _, w in weights):
        raise AllocationError("weights must not be negative")
    weight_sum = sum((Fraction(w) for _, w in weights), Fraction(0))
    if weight_sum == 0:
        raise AllocationError("nothing to share by: every weight is zero")
    fen = int(total / FEN)
    quotas = [Fraction(fen) * Fraction(w) / weight_sum for _, w in weights]
    floors = [q.numerator // q.denominator for q in quotas]
    left = fen - sum(floors)
    by_remainder = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - floors[i]), i))
    for i in by_remainder[:left]:
        floors[i] += 1
    return {key: Decimal(n) * FEN for (key, _), n in zip(weights, floors, strict=True)}
