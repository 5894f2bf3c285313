"""WeChat Pay rules over plain values (no database, clock or network): a top-up's amount
against the site's limits, fen, the notification's timestamp and probes, and whether what
WeChat says was paid is the order we made."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from cloud.errors import Invalid

#: WeChat's deliberate probes (签名探测) carry this prefix in Wechatpay-Signature; they are
#: never real notifications and must be refused
SIGNTEST = "WECHATPAY/SIGNTEST/"
#: a notification whose timestamp is further than this from our clock is refused (replay)
MAX_SKEW_S = 300


def fen(amount: Decimal) -> int:
    """An amount in yuan with at most two decimals, in fen."""
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise Invalid("amount has more than two decimals (fen)")
    return int(cents)


def check_topup(amount: Decimal, minimum: Decimal, maximum: Decimal) -> int:
    """The top-up's amount in fen, or Invalid saying why it cannot be paid."""
    if not amount.is_finite() or amount <= 0:
        raise Invalid("amount must be greater than zero")
    value = fen(amount)
    if amount < minimum:
        raise Invalid(f"the smallest top-up at this site is {minimum:.2f}")
    if amount > maximum:
        raise Invalid(f"the largest top-up at this site is {maximum:.2f}")
    return value


class Refused(Exception):
    """A notification refused before it is read: no credit, a 4xx, WeChat may re-send."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.status = status


def check_headers(headers: dict[str, str], now: datetime) -> None:
    """Refuse a probe, a notification without its signature headers, and one whose
    timestamp is more than five minutes from ``now`` (wechatpayv3 checks neither)."""
    signature = headers.get("wechatpay-signature", "")
    if signature.startswith(SIGNTEST):
        raise Refused("signature probe")
    for name in (
        "wechatpay-signature",
        "wechatpay-timestamp",
        "wechatpay-nonce",
        "wechatpay-serial",
    ):
        if not headers.get(name):
            raise Refused(f"{name} missing")
    try:
        stamp = int(headers["wechatpay-timestamp"])
    except ValueError:
        raise Refused("timestamp is not a number") from None
    if abs(now.timestamp() - stamp) > MAX_SKEW_S:
        raise Refused("timestamp more than 5 minutes away")


@dataclass(frozen=True)
class OrderFacts:
    """The order as we made it."""

    out_trade_no: str
    mode: str
    mchid: str
    sub_mchid: str | None
    appid: str
    sub_appid: str | None
    amount_fen: int


@dataclass(frozen=True)
class Paid:
    """A transaction WeChat reports (a notification's decrypted resource, or a query)."""

    out_trade_no: str
    trade_state: str
    transaction_id: str | None
    total_fen: int | None
    success_time: str | None
    raw: dict[str, Any]


def paid_of(resource: dict[str, Any]) -> Paid:
    amount = resource.get("amount") or {}
    total = amount.get("total") if isinstance(amount, dict) else None
    return Paid(
        out_trade_no=str(resource.get("out_trade_no", "")),
        trade_state=str(resource.get("trade_state", "")),
        transaction_id=resource.get("transaction_id"),
        total_fen=total if isinstance(total, int) and not isinstance(total, bool) else None,
        success_time=resource.get("success_time"),
        raw=resource,
    )


def mismatches(order: OrderFacts, resource: dict[str, Any]) -> list[str]:
    """What in WeChat's transaction differs from our order (empty: it is ours)."""
    out: list[str] = []
    paid = paid_of(resource)
    if paid.out_trade_no != order.out_trade_no:
        out.append("out_trade_no")
    if order.mode == "partner":
        expected = {
            "sp_mchid": order.mchid,
            "sub_mchid": order.sub_mchid,
            "sp_appid": order.appid,
        }
        if order.sub_appid:
            expected["sub_appid"] = order.sub_appid
    else:
        expected = {"mchid": order.mchid, "appid": order.appid}
    out.extend(k for k, v in expected.items() if resource.get(k) != v)
    if paid.total_fen != order.amount_fen:
        out.append("amount")
    currency = (resource.get("amount") or {}).get("currency", "CNY")
    if currency != "CNY":
        out.append("currency")
    return out


def days_left(balance: Decimal, spent: Decimal, days: int) -> Decimal | None:
    """Days of credit left at the average daily spend of the last ``days`` days (None:
    nothing was spent, the estimate means nothing; 0 when there is no credit)."""
    if balance <= 0:
        return Decimal(0)
    if spent <= 0 or days <= 0:
        return None
    return (balance / (spent / days)).quantize(Decimal("0.1"))
