from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from cloud.ledger import core as L
from cloud.money import parse_amount

W = L.wallet(uuid.uuid4(), "A000001")
CASH = L.cash_drawer(uuid.uuid4(), "alice")


def test_topup_raises_wallet_and_cash_on_their_normal_sides() -> None:
    legs = L.topup(W, CASH, Decimal("50.00"))
    assert [L.balance_delta(leg.account.normal_side, leg.amount) for leg in legs] == [
        Decimal("50.00"),
        Decimal("50.00"),
    ]


def test_reversal_mirrors_every_leg() -> None:
    legs = L.usage(W, L.revenue("electricity"), Decimal("1.23"))
    assert sum(leg.amount for leg in L.mirror(legs) + legs) == 0
    assert L.reversal_key(uuid.UUID(int=1)) == "reverse:00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    "amounts,error",
    [
        (("1.00",), L.UnbalancedEntry),
        (("1.00", "-0.99"), L.UnbalancedEntry),
        (("1.001", "-1.001"), L.InvalidAmount),
        (("0", "0"), L.InvalidAmount),
    ],
)
def test_bad_entries_are_refused(amounts: tuple[str, ...], error: type[Exception]) -> None:
    legs = tuple(L.Leg(W, Decimal(a)) for a in amounts)
    with pytest.raises(error):
        L.EntryDraft("k", L.EntryKind.ADJUSTMENT, "t", datetime.now(UTC), legs)


def test_naive_time_is_refused() -> None:
    with pytest.raises(L.LedgerError, match="timezone"):
        L.EntryDraft(
            "k", L.EntryKind.TOPUP, "t", datetime(2026, 1, 1), L.topup(W, CASH, Decimal(1))
        )


@pytest.mark.parametrize("text", ["-1", "0", "0.001", "abc", "NaN", "Infinity", ""])
def test_parse_amount_refuses_bad_money(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text)


def test_parse_amount_keeps_exact_decimal() -> None:
    assert parse_amount("0.10") == Decimal("0.10")
