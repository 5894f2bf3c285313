"""The stand-in's trade bill adds up as WeChat's does: the summary row is the sum of the
detail rows, refunds are their own rows, and nothing from another day or merchant shows."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from standins.wechatpay import BillFaults, Merchant, MerchantKeys, Order, Refund, render_trade_bill
from standins.wechatpay.model import CST

KEYS = MerchantKeys("", "SERIAL", "k" * 32, "")
ME = Merchant("1900000001", KEYS, {"wx-app"}, "public_key")
DAY = dt.date(2026, 12, 3)
NOON = dt.datetime(2026, 12, 3, 4, 0, tzinfo=dt.UTC)  # 12:00 in China


def _order(i: int, total: int, mchid: str = ME.mchid, at: dt.datetime = NOON) -> Order:
    order = Order(
        mchid,
        {
            "appid": "wx-app",
            "mchid": mchid,
            "out_trade_no": f"P{i:010d}",
            "description": "电费",
            "amount": {"total": total},
            "payer": {"openid": "o-1"},
        },
        False,
        f"wx{i}",
        at,
    )
    order.state, order.success_time, order.transaction_id = "SUCCESS", at, f"42{i:026d}"
    return order


def _rows(text: str) -> tuple[list[list[str]], list[str]]:
    lines = text.strip("\r\n").split("\r\n")
    cells = [[c.removeprefix("`") for c in line.split(",")] for line in lines[1:-2]]
    return cells, [c.removeprefix("`") for c in lines[-1].split(",")]


@given(
    st.lists(st.tuples(st.integers(1, 10_000_000), st.integers(0, 100)), min_size=1, max_size=20)
)
def test_summary_is_the_sum_of_the_rows(orders_and_refund_pct: list[tuple[int, int]]) -> None:
    orders, refunds = [], []
    for i, (total, pct) in enumerate(orders_and_refund_pct):
        order = _order(i, total)
        orders.append(order)
        fen = total * pct // 100
        if fen:
            refund = Refund(order, f"R{i:010d}", f"50{i:030d}", fen, NOON, None, None)
            refund.status, refund.success_time = "SUCCESS", NOON + dt.timedelta(minutes=5)
            refunds.append(refund)
    orders.append(_order(900, 777, mchid="1900000999"))  # another merchant
    orders.append(_order(901, 555, at=NOON - dt.timedelta(days=1)))  # another day
    text = render_trade_bill(
        orders, refunds, {ME.mchid}, ME, DAY, "ALL", BillFaults(), Decimal("0.006"), NOON
    )
    rows, summary = _rows(text)
    paid = [r for r in rows if r[9] == "SUCCESS"]
    back = [r for r in rows if r[9] == "REFUND"]
    assert len(paid) == len(orders_and_refund_pct) and len(back) == len(refunds)
    assert int(summary[0]) == len(rows)
    assert Decimal(summary[1]) == sum(Decimal(r[12]) for r in paid)
    assert Decimal(summary[2]) == sum(Decimal(r[16]) for r in back)
    assert Decimal(summary[4]) == sum(Decimal(r[22]) for r in rows)
    assert Decimal(summary[1]) * 100 == sum(t for t, _ in orders_and_refund_pct)
    assert all(r[0].startswith("2026-12-03 ") for r in rows)
    assert dt.datetime.strptime(rows[0][0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST) >= NOON
