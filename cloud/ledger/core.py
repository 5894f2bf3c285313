"""Ledger rules over plain values: entries, legs, account codes, reversals.

Sign convention: a posting's amount is positive for a debit and negative for a credit; the
legs of an entry sum to zero. An account's balance is shown on its normal side: a wallet
(a liability to the tenant) is credit-normal, so a top-up (a credit) raises it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache

from cloud.money import FEN


class LedgerError(Exception):
    """Base of ledger rule violations."""


class UnbalancedEntry(LedgerError):
    pass


class InvalidAmount(LedgerError):
    pass


class Side(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


class AccountKind(StrEnum):
    WALLET = "wallet"
    REVENUE = "revenue"
    CLEARING = "clearing"
    CASH_DRAWER = "cash_drawer"
    REFUNDS_PAYABLE = "refunds_payable"
    ADJUSTMENTS = "adjustments"


NORMAL_SIDE: dict[AccountKind, Side] = {
    AccountKind.WALLET: Side.CREDIT,
    AccountKind.REVENUE: Side.CREDIT,
    AccountKind.REFUNDS_PAYABLE: Side.CREDIT,
    AccountKind.CLEARING: Side.DEBIT,
    AccountKind.CASH_DRAWER: Side.DEBIT,
    AccountKind.ADJUSTMENTS: Side.DEBIT,
}


class EntryKind(StrEnum):
    TOPUP = "topup"
    USAGE = "usage"
    FIXED_CHARGE = "fixed_charge"
    COMMON_AREA = "common_area"
    REVERSAL = "reversal"
    ADJUSTMENT = "adjustment"
    REFUND = "refund"
    OPENING = "opening"  # a balance brought over from a legacy system
    WRITE_OFF = "write_off"  # arrears written off when an account in debt closes
    TRANSFER = "transfer"  # a balance moved from one wallet to another (过户, 消户)


@dataclass(frozen=True)
class AccountRef:
    """A ledger account by its stable code, e.g. ``wallet:<account id>``."""

    code: str
    kind: AccountKind
    name: str

    @property
    def normal_side(self) -> Side:
        return NORMAL_SIDE[self.kind]


@lru_cache(maxsize=65536)
def wallet(account_id: uuid.UUID, number: str) -> AccountRef:
    return AccountRef(f"wallet:{account_id}", AccountKind.WALLET, f"Wallet {number}")


def revenue(utility: str) -> AccountRef:
    return AccountRef(f"revenue:{utility}", AccountKind.REVENUE, f"Revenue, {utility}")


def cash_drawer(operator_id: uuid.UUID, username: str) -> AccountRef:
    return AccountRef(f"cash:{operator_id}", AccountKind.CASH_DRAWER, f"Cash drawer {username}")


def clearing(channel: str) -> AccountRef:
    return AccountRef(f"clearing:{channel}", AccountKind.CLEARING, f"Clearing, {channel}")


def refunds_payable() -> AccountRef:
    return AccountRef("refunds_payable", AccountKind.REFUNDS_PAYABLE, "Refunds payable")


def adjustments() -> AccountRef:
    return AccountRef("adjustments", AccountKind.ADJUSTMENTS, "Adjustments")


@dataclass(frozen=True)
class Leg:
    account: AccountRef
    amount: Decimal  # + debit, - credit


@dataclass(frozen=True)
class EntryDraft:
    idempotency_key: str
    kind: EntryKind
    actor: str
    effective_at: datetime
    legs: tuple[Leg, ...]
    reason: str = ""
    reverses: uuid.UUID | None = None
    settles: str | None = None
    """Code of an account whose live balance already holds this entry's effect (a wallet
    charged for rated usage before its window posted): posting moves that amount out of the
    account's ``unposted`` into the journal instead of changing the live balance again."""

    def __post_init__(self) -> None:
        validate_legs(self.legs)
        if not self.idempotency_key:
            raise LedgerError("an entry needs an idempotency key")
        if self.effective_at.tzinfo is None:
            raise LedgerError("effective_at must be timezone-aware")
        if (self.kind is EntryKind.REVERSAL) != (self.reverses is not None):
            raise LedgerError("a reversal, and only a reversal, names the entry it reverses")
        if self.settles is not None and self.settles not in {g.account.code for g in self.legs}:
            raise LedgerError(f"settled account {self.settles} has no leg in the entry")


def validate_legs(legs: tuple[Leg, ...]) -> None:
    if len(legs) < 2:
        raise UnbalancedEntry("an entry needs at least two postings")
    for leg in legs:
        if not leg.amount.is_finite() or leg.amount == 0:
            raise InvalidAmount(f"posting amount must be a non-zero number, got {leg.amount}")
        if leg.amount != leg.amount.quantize(FEN):
            raise InvalidAmount(f"posting amount {leg.amount} is finer than a fen")
    total = sum((leg.amount for leg in legs), Decimal(0))
    if total != 0:
        raise UnbalancedEntry(f"postings sum to {total}, not zero")


def balance_delta(side: Side, amount: Decimal) -> Decimal:
    """How a posting moves an account's balance shown on its normal side."""
    return amount if side is Side.DEBIT else -amount


def transfer(debit: AccountRef, credit: AccountRef, amount: Decimal) -> tuple[Leg, Leg]:
    if amount <= 0:
        raise InvalidAmount(f"transfer amount must be positive, got {amount}")
    return Leg(debit, amount), Leg(credit, -amount)


def topup(wallet_ref: AccountRef, source: AccountRef, amount: Decimal) -> tuple[Leg, Leg]:
    """Money received: debit where it sits (cash drawer, clearing), credit the wallet."""
    return transfer(source, wallet_ref, amount)


def usage(wallet_ref: AccountRef, revenue_ref: AccountRef, amount: Decimal) -> tuple[Leg, Leg]:
    """Consumption charged: debit the wallet, credit revenue."""
    return transfer(wallet_ref, revenue_ref, amount)


def reversal_key(entry_id: uuid.UUID) -> str:
    return f"reverse:{entry_id}"


def mirror(legs: tuple[Leg, ...]) -> tuple[Leg, ...]:
    """The legs of a reversal: every posting with its sign flipped."""
    return tuple(Leg(leg.account, -leg.amount) for leg in legs)


def reversal(
    original_id: uuid.UUID,
    original_kind: EntryKind,
    original_legs: tuple[Leg, ...],
    actor: str,
    reason: str,
    at: datetime,
) -> EntryDraft:
    """The entry that undoes ``original``: its mirror, linked to it, keyed by it."""
    if original_kind is EntryKind.REVERSAL:
        raise LedgerError("a reversal is not reversed; post a new entry instead")
    if not reason.strip():
        raise LedgerError("a reversal needs a reason")
    return EntryDraft(
        idempotency_key=reversal_key(original_id),
        kind=EntryKind.REVERSAL,
        actor=actor,
        effective_at=at,
        legs=mirror(original_legs),
        reason=reason,
        reverses=original_id,
    )


def live_deltas(legs: tuple[Leg, ...], settles: str | None) -> dict[str, tuple[Decimal, Decimal]]:
    """Per account code: (change of live balance, change of unposted) when ``legs`` post."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for leg in legs:
        delta = balance_delta(leg.account.normal_side, leg.amount)
        b, u = out.get(leg.account.code, (Decimal(0), Decimal(0)))
        if leg.account.code == settles:
            out[leg.account.code] = (b, u - delta)
        else:
            out[leg.account.code] = (b + delta, u)
    return out
