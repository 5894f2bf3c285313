"""Lifecycle rules over plain values (no database, no clock): each function takes what the
service loaded and returns a decision, or raises :class:`LifecycleRefused` saying why not.

A refusal is either :class:`LifecycleInvalid` (422: the request cannot be right, such as a
register below the last known reading or a refund above the balance) or
:class:`LifecycleConflict` (409: the registry's state forbids it now, such as a point that
already has a meter or a command still in flight)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NoReturn

from cloud.errors import Conflict, DomainError, Forbidden, Invalid
from cloud.money import FEN

UTILITIES = ("electricity", "water")
CONTROL_MODES = ("cloud", "meter")


class LifecycleRefused(DomainError):
    """A lifecycle step the rules refuse."""


class LifecycleInvalid(LifecycleRefused, Invalid):
    pass


class LifecycleConflict(LifecycleRefused, Conflict):
    pass


@dataclass(frozen=True)
class AccountState:
    number: str
    status: str  # pending | active | closed
    balance: Decimal  # live wallet balance


@dataclass(frozen=True)
class Reading:
    at: datetime
    register: Decimal


@dataclass(frozen=True)
class PointState:
    """A service point as a lifecycle step sees it."""

    id: uuid.UUID
    name: str
    utility: str
    account: AccountState
    metered: bool  # bound to a channel now
    removed: bool
    in_flight: int = 0  # commands queued or sent to its meter
    last: Reading | None = None  # the newest reading rated for it (the mark)


@dataclass(frozen=True)
class PointWish:
    utility: str
    control_mode: str = "cloud"


@dataclass(frozen=True)
class LivePoint:
    """A point already at the premises (not removed)."""

    utility: str
    account: AccountState


def _money(amount: Decimal, what: str) -> None:
    if not amount.is_finite() or amount != amount.quantize(FEN):
        raise LifecycleInvalid(f"{what} {amount} is not an amount in yuan and fen")


def _open_account(account: AccountState) -> None:
    if account.status == "closed":
        raise LifecycleConflict(f"account {account.number} is closed")


def check_open(wanted: Sequence[PointWish], at_premises: Sequence[LivePoint]) -> None:
    """开户: one or more points of distinct utilities, none already supplied at the
    premises by an account that is not closed."""
    if not wanted:
        raise LifecycleInvalid("an account opens with at least one service point")
    seen: set[str] = set()
    for w in wanted:
        if w.utility not in UTILITIES:
            raise LifecycleInvalid(f"unknown utility {w.utility!r}")
        if w.control_mode not in CONTROL_MODES:
            raise LifecycleInvalid(f"unknown control mode {w.control_mode!r}")
        if w.utility in seen:
            raise LifecycleInvalid(f"two {w.utility} points in one opening")
        seen.add(w.utility)
        for live in at_premises:
            if live.utility == w.utility and live.account.status != "closed":
                raise LifecycleConflict(
                    f"the premises' {w.utility} is already open on account {live.account.number}"
                )


PAYMENT_METHODS = ("cash", "card", "transfer")


def check_first_sale(amount: Decimal, method: str, modes: Sequence[str]) -> None:
    """开户's first sale, made in the opening's transaction: an amount in yuan and fen above
    zero, a counter payment method, and no meter-controlled point among those opened. A
    meter-controlled point's credit lives on its meter (DESIGN §6) and a top-up reaches it
    as a recharge command; before 装表 there is no meter to recharge, and nothing sends the
    wallet's credit on at installation, so its first sale is made after 装表."""
    _money(amount, "first sale")
    if amount <= 0:
        raise LifecycleInvalid(f"the first sale {amount} must be more than 0")
    if method not in PAYMENT_METHODS:
        raise LifecycleInvalid(f"payment method {method!r} is not one of cash, card, transfer")
    if "meter" in modes:
        raise LifecycleInvalid(
            "a meter-controlled point's first sale is made after its meter is installed, "
            "so that the credit is sent to the meter"
        )


def check_installable(point: PointState) -> None:
    """装表, before the device is looked at: the point is live and has no meter."""
    _live(point)
    if point.metered:
        raise LifecycleConflict(f"service point {point.name} already has a meter")


def check_install(
    point: PointState,
    channel_bound_to: uuid.UUID | None,
    register: Decimal | None,
    newest_known: Reading | None,
) -> Decimal:
    """装表: the point is live and has no meter, the channel is free, the installation
    register is known (typed in, or read) and not below the meter's last known reading.
    Returns the installation register."""
    check_installable(point)
    if channel_bound_to is not None:
        raise LifecycleConflict("this meter channel is already bound to another service point")
    if register is None:
        raise LifecycleInvalid(
            "no reading of this meter has arrived from its gateway yet: type the register in"
        )
    _register(register)
    if newest_known is not None and register < newest_known.register:
        raise LifecycleInvalid(
            f"installation register {register} is below the meter's last reading "
            f"{newest_known.register} ({newest_known.at.isoformat()})"
        )
    return register


def _live(point: PointState) -> None:
    _open_account(point.account)
    if point.removed:
        raise LifecycleConflict(f"service point {point.name} is removed")


def _register(register: Decimal) -> None:
    if not register.is_finite() or register < 0:
        raise LifecycleInvalid(f"register {register} must be a number of at least 0")


def _final(point: PointState, final: Decimal | None, at: datetime) -> Reading | None:
    """The final reading to rate: the typed one (not below nor before the mark), or None
    when the newest rated reading is final already."""
    if final is None:
        return None
    _register(final)
    if point.last is not None:
        if final < point.last.register:
            raise LifecycleInvalid(
                f"final register {final} is below the last reading {point.last.register}"
            )
        if at <= point.last.at:
            if final == point.last.register:
                return None
            _late(point)
    return Reading(at, final)


def _late(point: PointState) -> NoReturn:
    assert point.last is not None
    raise LifecycleInvalid(
        f"a reading newer than now arrived for {point.name} ({point.last.at.isoformat()})"
    )


def check_swap(
    point: PointState,
    channel_bound_to: uuid.UUID | None,
    final: Decimal,
    initial: Decimal,
) -> None:
    """换表: the point has a meter, nothing in flight to it, the new channel is free, the
    old meter's final reading is not below its last one."""
    _live(point)
    if not point.metered:
        raise LifecycleConflict(f"service point {point.name} has no meter to swap")
    _no_flight(point)
    if channel_bound_to is not None:
        raise LifecycleConflict("the new meter channel is already bound to a service point")
    _register(initial)
    _register(final)
    if point.last is not None and final < point.last.register:
        raise LifecycleInvalid(
            f"final register {final} is below the last reading {point.last.register}"
        )


def _no_flight(point: PointState) -> None:
    if point.in_flight:
        raise LifecycleConflict(
            f"service point {point.name} has {point.in_flight} command(s) in flight to its meter; "
            "wait for them to finish"
        )


def check_remove(point: PointState, final: Decimal | None, at: datetime) -> Reading | None:
    """拆表: the point has a meter and nothing in flight to it. Returns the final reading
    to rate (None: the newest rated reading is the final one)."""
    _live(point)
    if not point.metered:
        raise LifecycleConflict(f"service point {point.name} has no meter to remove")
    _no_flight(point)
    return _final(point, final, at)


class Settlement(StrEnum):
    REFUND = "refund"  # cash at the counter
    MOVE = "move"  # to another account


@dataclass(frozen=True)
class Money:
    """What a closing or transferred balance becomes (one of the three is set, or none)."""

    refund: Decimal = Decimal(0)
    moved: Decimal = Decimal(0)
    written_off: Decimal = Decimal(0)


def settle(
    account: AccountState,
    how: Settlement | None,
    target: AccountState | None,
    refund_amount: Decimal | None,
    write_off: bool,
    may_write_off: bool,
    reason: str | None,
    transfer: bool = False,
) -> Money:
    """The balance of an account that closes: a credit is refunded in cash or moved to
    another (open, different) account, all of it; a debt closes only written off, with the
    permission and a reason; a zero balance needs nothing.

    ``transfer`` (过户): a debt is the old customer's and stays on the old account. It is
    never moved to the new customer's account, whatever ``how`` says: collect it first (a
    sale to the old account) or write it off, as for 消户."""
    _open_account(account)
    balance = account.balance
    if refund_amount is not None:
        _money(refund_amount, "refund")
        if refund_amount > balance:
            raise LifecycleInvalid(
                f"refund {refund_amount} is more than the balance {balance} of account "
                f"{account.number}"
            )
    if balance < 0:
        if not write_off:
            if transfer:
                raise LifecycleConflict(
                    f"account {account.number} owes {-balance}: a transfer never moves a debt "
                    "to the new customer; collect it first, or write it off"
                )
            raise LifecycleConflict(
                f"account {account.number} owes {-balance}: collect it first, or write it off"
            )
        if not may_write_off:
            raise Forbidden("writing off arrears needs permission 'account.write_off'")
        if not (reason or "").strip():
            raise LifecycleInvalid("a write-off needs a reason")
        return Money(written_off=-balance)
    if write_off:
        raise LifecycleInvalid(f"account {account.number} is not in debt: nothing to write off")
    if balance == 0:
        return Money()
    if how is None:
        raise LifecycleInvalid(
            f"account {account.number} holds {balance}: refund it or move it to another account"
        )
    if how is Settlement.REFUND:
        if refund_amount is not None and refund_amount != balance:
            raise LifecycleInvalid(
                f"refund {refund_amount} would leave {balance - refund_amount} on a closing account"
            )
        return Money(refund=balance)
    if target is None:
        raise LifecycleInvalid("moving the balance needs the account it moves to")
    if target.number == account.number:
        raise LifecycleInvalid(f"account {account.number} cannot move its balance to itself")
    if target.status == "closed":
        raise LifecycleConflict(f"account {target.number} is closed")
    return Money(moved=balance)


def check_cancel(points: Sequence[PointState]) -> None:
    """消户: nothing in flight to any of the account's meters."""
    for p in points:
        if not p.removed:
            _no_flight(p)


def check_transfer(
    account: AccountState, points: Sequence[PointState], same_customer: bool
) -> None:
    """过户: the account is open, has live points, none with a command in flight, and the
    new holder is another customer."""
    _open_account(account)
    if same_customer:
        raise LifecycleInvalid("a transfer goes to another customer")
    live = [p for p in points if not p.removed]
    if not live:
        raise LifecycleConflict(f"account {account.number} has no service point to transfer")
    for p in live:
        _no_flight(p)


@dataclass(frozen=True)
class MeterCredit:
    """What a meter-controlled point's meter (bound now) last said about the credit it
    holds, and when a recharge last may have reached it."""

    point: str
    balance: Decimal | None  # the meter's last reported balance
    read_at: datetime | None  # when the meter measured it
    recharged_at: datetime | None  # the newest recharge acked (or expired) on this meter


def check_meter_credit(meters: Sequence[MeterCredit]) -> None:
    """消户, and a 过户 whose balance does not move with the points: a meter-controlled
    point's credit is held on its meter (DESIGN §6; the wallet mirrors it), so it may be
    refunded in cash or moved elsewhere only once it is off the meter. Otherwise the
    customer is paid twice: the cash at the counter, and the supply the meter still gives
    on its own credit to whoever is at the premises.

    The meter's credit must have been read back after its last recharge (a meter's credit
    only ever rises by a recharge, so a read-back since then bounds it), and be nothing:
    credit still on the meter is deducted at the meter first (with the meter vendor's
    tool: DESIGN §7's "deduction at the meter, where the meter supports one"; the
    platform sends no such command yet) and read back, or the meter is removed (拆表,
    its final reading rated) and leaves the premises with it."""
    for m in meters:
        if m.balance is None or m.read_at is None:
            raise LifecycleConflict(
                f"the meter of service point {m.point} has not reported the credit it holds: "
                "read the meter, then try again"
            )
        if m.recharged_at is not None and m.read_at < m.recharged_at:
            raise LifecycleConflict(
                f"the meter of service point {m.point} has not reported its credit since its "
                "last recharge: read the meter, then try again"
            )
        if m.balance > 0:
            raise LifecycleConflict(
                f"the meter of service point {m.point} still holds {m.balance} of credit: "
                "deduct it at the meter and read it back, or remove the meter first"
            )


@dataclass(frozen=True)
class ControlOrder:
    """An operator's standing order on a point's supply: keep-power (保电) or a manual
    override (a trip or restore by hand), as the point's control state holds it."""

    point: str
    kind: str  # keep_power | override
    by: str
    until: datetime | None  # None: until ended by hand


def check_no_orders(orders: Sequence[ControlOrder], now: datetime) -> None:
    """过户: keep-power and overrides are an operator's orders, each with a reason, for the
    current customer (DESIGN §6: a hospital, a vulnerable tenant, a dispute). They are
    neither carried to the new customer (who would never be cut, or stay cut, on someone
    else's reason) nor silently dropped (a hospital's 保电 ending unseen): an order still in
    force is ended by the operator first, through control, and set again for the new
    account if it still applies. An order that has expired is nothing."""
    for o in orders:
        if o.until is not None and o.until <= now:
            continue
        what = "keep-power" if o.kind == "keep_power" else "a manual override"
        raise LifecycleConflict(
            f"service point {o.point} is under {what} set by {o.by} for the current customer: "
            "end it before the transfer, and set it again for the new customer if still needed"
        )
