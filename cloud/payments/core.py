"""Counter rules over plain values (DESIGN §7): where a sale's money sits, which business
day it belongs to, and when a sale may be reversed (冲正). No database, no clock."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from cloud.errors import Conflict, Forbidden, Invalid
from cloud.ledger import core as ledger

METHODS = ("cash", "card", "transfer")
METHOD_NAMES = {"cash": "现金", "card": "刷卡", "transfer": "银行转账"}


def source_account(method: str, operator_id: uuid.UUID, username: str) -> ledger.AccountRef:
    """Where the money taken at the counter sits: the operator's cash drawer for cash,
    the channel's clearing account for a card payment or a bank transfer."""
    if method == "cash":
        return ledger.cash_drawer(operator_id, username)
    if method in ("card", "transfer"):
        return ledger.clearing(method)
    raise Invalid(f"payment method {method!r} is not one of cash, card, transfer")


def business_day(now: datetime, timezone: str, cutoff: time) -> date:
    """The site's business day ``now`` belongs to: the local date of ``now`` shifted back
    by the cut-off. With a 02:00 cut-off, 01:30 on the 3rd (local) is still the 2nd's
    business day and 02:00 starts the 3rd's; with 00:00 it is the local date. The shift is
    on the wall clock, so a daylight-saving change does not move the cut-off."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    local = now.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
    shift = timedelta(hours=cutoff.hour, minutes=cutoff.minute, seconds=cutoff.second)
    return (local - shift).date()


@dataclass(frozen=True)
class ReversalFacts:
    """What the reversal rule looks at, loaded by the service."""

    receipt_no: str
    permitted: bool  # the operator holds sale.reverse
    reason: str
    reversed_at: datetime | None
    sale_day: date  # the sale's business day
    today: date  # the business day of now, at the sale's site
    handed_over: bool  # cash_handover exists for the sale's operator and business day
    recharge_state: str | None  # the sale's recharge command to a meter, if any


def check_reversal(f: ReversalFacts) -> None:
    """Raise why the sale cannot be reversed (Forbidden, Invalid or Conflict), or return."""
    if not f.permitted:
        raise Forbidden("permission 'sale.reverse' required")
    if not f.reason.strip():
        raise Invalid("a reversal needs a reason")
    if f.reversed_at is not None:
        raise Conflict(f"sale {f.receipt_no} is already reversed")
    if f.today != f.sale_day:
        raise Conflict(
            f"sale {f.receipt_no} belongs to business day {f.sale_day.isoformat()}, "
            "which has closed: only a same-day sale can be reversed"
        )
    if f.handed_over:
        raise Conflict(
            f"the cash of business day {f.sale_day.isoformat()} has been handed over: "
            f"sale {f.receipt_no} can no longer be reversed"
        )
    if f.recharge_state == "acked":
        raise Conflict(
            f"the meter has already taken the recharge of sale {f.receipt_no}: "
            "it cannot be reversed (refund it with a deduction at the meter)"
        )
    if f.recharge_state == "sent":
        raise Conflict(
            f"the recharge of sale {f.receipt_no} is on its way to the meter: "
            "wait for the meter's answer before reversing"
        )
