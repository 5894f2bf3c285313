"""WeChat Pay's trade bill (交易账单) as WeChat writes it: the header row, one row per
payment and per refund settled that day (China time), every field prefixed by a backtick,
then the summary header and row; with ``BillFaults`` for reconciliation tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from standins.wechatpay.model import CST, Merchant, Order, PayError, Refund, yuan


@dataclass
class BillFaults:
    """Differences to put in a trade bill, for reconciliation tests."""

    extra_rows: int = 0  # rows of payments WeChat knows and we do not
    missing: set[str] = field(default_factory=set)  # out_trade_no left out
    amounts: dict[str, int] = field(default_factory=dict)  # out_trade_no → fen shown
    states: dict[str, str] = field(default_factory=dict)  # out_trade_no → state shown
    wrong_hash: bool = False
    refunds: dict[str, int] = field(default_factory=dict)  # out_refund_no → fen shown
    bad_lines: list[str] = field(default_factory=list)  # raw lines put among the rows


BILL_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
    "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,"
    "费率备注"
)
BILL_SUMMARY_HEADER = (
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额"
)


def render_trade_bill(
    orders: Iterable[Order],
    refunds: Iterable[Refund],
    receivers: set[str],
    merchant: Merchant,
    bill_date: dt.date,
    bill_type: str,
    faults: BillFaults,
    fee_rate: Decimal,
    now: dt.datetime,
) -> str:
    """The bill of ``receivers`` (mchids) for ``bill_date``; ``bill_type`` ALL, SUCCESS or
    REFUND. ``NO_STATEMENT_EXIST`` when there is nothing to show."""
    rows: list[list[str]] = []
    totals = {"count": 0, "settle": 0, "refund": 0, "order": 0, "ask": 0}
    fees = [Decimal(0)]

    def fee_of(fen: int) -> Decimal:
        return (Decimal(fen) * fee_rate / 100).quantize(Decimal("0.01"), ROUND_HALF_UP)

    def row(order: Order, at: dt.datetime, refund: Refund | None) -> None:
        if bill_type != "ALL" and (bill_type == "REFUND") != (refund is not None):
            return
        req = order.request
        shown = faults.amounts.get(order.out_trade_no, order.total)
        state = faults.states.get(order.out_trade_no, "REFUND" if refund else "SUCCESS")
        back = faults.refunds.get(refund.out_refund_no, refund.amount) if refund else 0
        fee = -fee_of(back) if refund else fee_of(shown)
        payer = req["payer"]
        cells = [
            at.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S"),
            req.get("sp_appid") or req.get("appid", ""),
            req.get("sp_mchid") or req.get("mchid", ""),
            order.receiver if order.partner else "0",
            "",
            order.transaction_id or "",
            order.out_trade_no,
            payer.get("openid") or payer.get("sp_openid") or payer.get("sub_openid", ""),
            "JSAPI",
            state,
            "OTHERS",
            "CNY",
            yuan(shown),
            "0.00",
            refund.refund_id if refund else "0",
            refund.out_refund_no if refund else "0",
            yuan(back) if refund else "0.00",
            "0.00",
            "ORIGINAL" if refund else "",
            "SUCCESS" if refund else "",
            req.get("description", ""),
            req.get("attach", ""),
            f"{fee:.5f}",
            f"{fee_rate * 100:.2f}%",
            yuan(shown),
            yuan(back) if refund else "0.00",
            "",
        ]
        rows.append(cells)
        totals["count"] += 1
        if refund:
            totals["refund"] += back
            totals["ask"] += back
        else:
            totals["settle"] += shown
            totals["order"] += shown
        fees.append(fee)

    for order in orders:
        if order.receiver not in receivers or order.success_time is None:
            continue
        if order.out_trade_no in faults.missing:
            continue
        if order.success_time.astimezone(CST).date() == bill_date:
            row(order, order.success_time, None)
    for refund in refunds:
        at = refund.success_time
        if refund.order.receiver in receivers and at and at.astimezone(CST).date() == bill_date:
            if refund.order.out_trade_no not in faults.missing:
                row(refund.order, at, refund)
    for i in range(faults.extra_rows):
        ghost = Order(
            merchant.mchid,
            {
                "appid": next(iter(merchant.appids), ""),
                "mchid": merchant.mchid,
                "out_trade_no": f"GHOST{i:06d}",
                "description": "stand-in extra row",
                "amount": {"total": 100 + i},
                "payer": {"openid": "o-ghost"},
            },
            False,
            "",
            now,
            "SUCCESS",
            f"4200009{i:021d}",
        )
        noon = dt.datetime.combine(bill_date, dt.time(12, 0), CST)
        row(ghost, noon, None)
    if not rows:
        raise PayError(400, "NO_STATEMENT_EXIST", "账单文件不存在")
    rows.sort(key=lambda cells: cells[0])
    lines = [BILL_HEADER]
    lines += [",".join("`" + c for c in cells) for cells in rows]
    lines[2:2] = faults.bad_lines  # (after the first row; the summary counts them as rows)
    totals["count"] += len(faults.bad_lines)
    lines.append(BILL_SUMMARY_HEADER)
    summary = [
        str(totals["count"]),
        yuan(totals["settle"]),
        yuan(totals["refund"]),
        "0.00",
        f"{sum(fees):.5f}",
        yuan(totals["order"]),
        yuan(totals["ask"]),
    ]
    lines.append(",".join("`" + c for c in summary))
    return "\r\n".join(lines) + "\r\n"
