from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.common_area.core import AllocationError, split


@given(
    fen=st.integers(min_value=0, max_value=10**9),
    weights=st.lists(
        st.decimals(min_value=0, max_value=10**6, places=3), min_size=1, max_size=30
    ).filter(lambda ws: sum(ws) > 0),
)
def test_shares_sum_to_the_charge_and_each_is_within_a_fen_of_its_quota(
    fen: int, weights: list[Decimal]
) -> None:
    total = Decimal(fen) / 100
    shares = split(total, list(enumerate(weights)))
    assert sum(shares.values()) == total
    for i, w in enumerate(weights):
        quota = Fraction(fen) * Fraction(w) / Fraction(sum(weights))
        assert abs(Fraction(shares[i] * 100) - quota) < 1


def test_leftover_fen_go_to_the_largest_remainders_then_in_order() -> None:
    assert split(Decimal("100.00"), [("a", Decimal(1)), ("b", Decimal(1)), ("c", Decimal(1))]) == {
        "a": Decimal("33.34"),
        "b": Decimal("33.33"),
        "c": Decimal("33.33"),
    }


@pytest.mark.parametrize(
    "total,weights",
    [(Decimal("1.001"), [("a", Decimal(1))]), (Decimal(1), [("a", Decimal(0))])],
)
def test_bad_allocations_are_refused(total: Decimal, weights: list[tuple[str, Decimal]]) -> None:
    with pytest.raises(AllocationError):
        split(total, weights)
