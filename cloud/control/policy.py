"""Supply policy over plain values: what a cloud-controlled point's supply should be."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class SupplyState(StrEnum):
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class PointFinance:
    balance: Decimal
    credit_limit: Decimal = Decimal(0)


@dataclass(frozen=True)
class Decision:
    supply: SupplyState
    reason: str


def desired_supply(fin: PointFinance) -> Decision:
    """Supply stays on while the balance is above the negative credit limit; at or below it
    (balance 0 with no credit limit) the supply is cut."""
    if fin.balance > -fin.credit_limit:
        return Decision(SupplyState.ON, f"balance {fin.balance} in credit")
    return Decision(SupplyState.OFF, f"balance {fin.balance} exhausted (limit {fin.credit_limit})")
