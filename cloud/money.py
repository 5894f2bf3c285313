"""Money and quantities: the one place where rounding happens."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

FEN = Decimal("0.01")
PRICE_QUANTUM = Decimal("0.0001")
KWH_QUANTUM = Decimal("0.01")
M3_QUANTUM = Decimal("0.001")


def to_fen(amount: Decimal) -> Decimal:
    """Round an exact amount to the fen, half up (the only money rounding in the system)."""
    return amount.quantize(FEN, rounding=ROUND_HALF_UP)


def parse_amount(text: str) -> Decimal:
    """Parse a positive money amount with at most two decimals; raise ValueError otherwise."""
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {text!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    if value <= 0:
        raise ValueError("amount must be greater than zero")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise ValueError("amount has more than two decimals (fen)")
    return value
