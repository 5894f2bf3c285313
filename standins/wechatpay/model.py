"""What the WeChat Pay stand-in holds: merchants, orders, refunds, notifications sent, and
WeChat's error answer."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from standins.wechatpay.keys import MerchantKeys

SIGN_TYPE = "WECHATPAY2-SHA256-RSA2048"
PROBE_PREFIX = "WECHATPAY/SIGNTEST/"
CST = dt.timezone(dt.timedelta(hours=8))
OUT_NO = re.compile(r"^[0-9A-Za-z_\-|*]{6,32}$")
BAD_KINDS = (
    "forged_signature",
    "tampered_body",
    "other_key",
    "stale_timestamp",
    "probe",
    "amount_differs",
)


def yuan(fen: int) -> str:
    return str((Decimal(fen) / 100).quantize(Decimal("0.01")))


def cst(moment: dt.datetime) -> str:
    return moment.astimezone(CST).isoformat(timespec="seconds")


@dataclass
class Merchant:
    mchid: str
    keys: MerchantKeys
    appids: set[str]
    platform_serial: str  # "public_key" or "certificate": how its answers are signed
    sp_mchid: str | None = None  # a sub-merchant's service provider
    sub_appid: str | None = None


@dataclass
class Delivery:
    """One notification POSTed to our side and what it answered."""

    event_type: str
    url: str
    headers: dict[str, str]
    body: str
    kind: str = "genuine"
    out_trade_no: str | None = None
    out_refund_no: str | None = None
    status: int | None = None
    answer: str = ""
    error: str | None = None


@dataclass
class Order:
    receiver: str  # mchid (direct) or sub_mchid (partner)
    request: dict[str, Any]
    partner: bool
    prepay_id: str
    created: dt.datetime
    state: str = "NOTPAY"
    transaction_id: str | None = None
    success_time: dt.datetime | None = None
    payer_total: int | None = None
    refunded: int = 0
    notification: str | None = None

    @property
    def out_trade_no(self) -> str:
        return str(self.request["out_trade_no"])

    @property
    def total(self) -> int:
        return int(self.request["amount"]["total"])


@dataclass
class Refund:
    order: Order
    out_refund_no: str
    refund_id: str
    amount: int
    created: dt.datetime
    notify_url: str | None
    reason: str | None
    status: str = "PROCESSING"
    success_time: dt.datetime | None = None


class PayError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
