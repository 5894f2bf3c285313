"""Reading WeChat Pay's trade bill and matching it against our books (pure): the stand-in's
real-format bills read back row for row, gzip or not, the hash checked, every bad line its
own exception, and each deliberate difference found once and nothing else."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from cloud.reconcile import bill as bills
from cloud.reconcile.match import OurOrder, OurRefund, match
from standins.wechatpay import (
    BillFaults,
    Merchant,
    MerchantKeys,
    Order,
    PayError,
    Refund,
    render_trade_bill,
)

KEYS = MerchantKeys("", "SERIAL", "k" * 32, "")
ME = Merchant("1900000001", KEYS, {"wx-app"}, "public_key")
DAY = dt.date(2026, 12, 3)
NOON = dt.datetime(2026, 12, 3, 4, 0, tzinfo=dt.UTC)  # 12:00 in China


def _order(i: int, total: int) -> Order:
    order = Order(
        ME.mchid,
        {
            "appid": "wx-app",
            "mchid": ME.mchid,
            "out_trade_no": f"P{i:010d}",
            "description": "电费,预付费",  # a comma inside a field
            "amount": {"total": total},
            "payer": {"openid": "o-1"},
        },
        False,
        f"wx{i}",
        NOON,
    )
    order.state, order.success_time, order.transaction_id = "SUCCESS", NOON, f"42{i:026d}"
    return order


def _refund(order: Order, i: int, fen: int) -> Refund:
    refund = Refund(order, f"R{i:010d}", f"50{i:030d}", fen, NOON, None, None)
    refund.status, refund.success_time = "SUCCESS", NOON + dt.timedelta(minutes=5)
    return refund


def _render(orders: list[Order], refunds: list[Refund], faults: BillFaults | None = None) -> str:
    return render_trade_bill(
        orders, refunds, {ME.mchid}, ME, DAY, "ALL", faults or BillFaults(), Decimal("0.006"), NOON
    )


def _books(
    orders: list[Order], refunds: list[Refund]
) -> tuple[dict[str, OurOrder], dict[str, OurRefund]]:
    ours = {o.out_trade_no: OurOrder(o.out_trade_no, "paid", o.total, True) for o in orders}
    back = {
        r.out_refund_no: OurRefund(r.out_refund_no, r.order.out_trade_no, r.amount, "success", True)
        for r in refunds
    }
    return ours, back


def _world(n: int = 5) -> tuple[list[Order], list[Refund]]:
    orders = [_order(i, 1000 + i) for i in range(n)]
    return orders, [_refund(orders[0], 0, 300)]


@given(
    st.lists(st.tuples(st.integers(1, 10_000_000), st.integers(0, 100)), min_size=1, max_size=30)
)
def test_a_clean_bill_reads_back_and_matches_our_books(totals: list[tuple[int, int]]) -> None:
    orders, refunds = [], []
    for i, (total, pct) in enumerate(totals):
        orders.append(_order(i, total))
        if fen := total * pct // 100:
            refunds.append(_refund(orders[-1], i, fen))
    bill = bills.parse(_render(orders, refunds))
    assert bill.bad == []
    assert bill.lines == len(orders) + len(refunds)
    assert bill.settle_fen == sum(t for t, _ in totals)
    assert bill.summary is not None and bill.summary.count == bill.lines
    paid = {r.out_trade_no: r for r in bill.rows if not r.is_refund}
    assert {no: r.settle_fen for no, r in paid.items()} == {o.out_trade_no: o.total for o in orders}
    assert all(r.at.date() == DAY for r in bill.rows)
    assert match(bill, *_books(orders, refunds)) == []


def test_the_four_deliberate_differences_are_exactly_four_exceptions() -> None:
    orders, refunds = _world()
    faults = BillFaults(
        extra_rows=1, missing={orders[1].out_trade_no}, amounts={orders[2].out_trade_no: 999},
        refunds={refunds[0].out_refund_no: 250},
    )  # fmt: skip
    found = match(bills.parse(_render(orders, refunds, faults)), *_books(orders, refunds))
    kinds = sorted((d.kind, d.ref, d.clearing_delta_fen) for d in found)
    assert kinds == [
        ("amount_differs", orders[2].out_trade_no, 999 - 1002),
        ("ours_only", orders[1].out_trade_no, -1001),
        ("refund_mismatch", refunds[0].out_refund_no, 300 - 250),
        ("theirs_only", "GHOST000000", 100),
    ]
    ghost = next(d for d in found if d.kind == "theirs_only")
    assert not ghost.creditable  # no order of ours: it can only be written off


def test_a_payment_we_never_heard_of_is_creditable_when_the_order_is_ours() -> None:
    orders, _ = _world(2)
    ours, _ = _books(orders, [])
    ours[orders[0].out_trade_no] = OurOrder(orders[0].out_trade_no, "created", 1000, False)
    (d,) = match(bills.parse(_render(orders, [])), ours, {})
    assert (d.kind, d.creditable, d.theirs_fen) == ("theirs_only", True, 1000)


def test_status_differs_and_pending_refunds() -> None:
    orders, refunds = _world(3)
    faults = BillFaults(states={orders[1].out_trade_no: "REVOKED"})
    ours, back = _books(orders, refunds)
    # our refund still processing, WeChat's bill shows it paid: its news is on the way
    back = {k: OurRefund(v.out_refund_no, v.out_trade_no, v.amount_fen, "processing", False)
            for k, v in back.items()}  # fmt: skip
    found = match(bills.parse(_render(orders, refunds, faults)), ours, back)
    assert [(d.kind, d.ref) for d in found] == [("status_differs", orders[1].out_trade_no)]


def test_a_refund_we_gave_back_but_wechat_paid_is_mismatched() -> None:
    orders, refunds = _world(1)
    ours, back = _books(orders, refunds)
    no = refunds[0].out_refund_no
    back[no] = OurRefund(no, orders[0].out_trade_no, 300, "closed", False)
    (d,) = match(bills.parse(_render(orders, refunds)), ours, back)
    assert (d.kind, d.clearing_delta_fen, d.detail["why"]) == ("refund_mismatch", -300, "status")


def test_bad_lines_are_exceptions_of_their_own() -> None:
    orders, refunds = _world(3)
    lines = _render(orders, refunds).split("\r\n")
    lines[1] = lines[1].replace("`10.00", "`ten")  # not an amount
    lines[2] = "garbage without backticks"
    lines[3] = lines[3] + ",`extra"
    bill = bills.parse("\r\n".join(lines))
    assert [b.line_no for b in bill.bad][:3] == [2, 3, 4]
    assert len(bill.rows) == 1  # the one good line still counts
    found = match(bill, *_books(orders, refunds))
    malformed = [d for d in found if d.kind == "malformed"]
    assert [d.line_no for d in malformed][:3] == [2, 3, 4]
    assert all(d.detail["why"] for d in malformed)


def test_a_summary_that_does_not_add_up_is_a_bad_line() -> None:
    orders, refunds = _world(2)
    lines = _render(orders, refunds).rstrip("\r\n").split("\r\n")
    cells = lines[-1].split(",")
    cells[0] = "`9"
    lines[-1] = ",".join(cells)
    bill = bills.parse("\r\n".join(lines))
    assert [b.why for b in bill.bad] == ["the summary counts 9 rows, the bill has 3"]
    assert bills.parse("\r\n".join(lines[:-2])).bad[-1].why.startswith("the bill has no summary")


def test_the_service_providers_layout_reads() -> None:
    header = (
        "交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
        "交易状态,付款银行,货币种类,总金额,代金券或立减优惠金额,微信退款单号,商户退款单号,"
        "退款金额,代金券或立减优惠退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率"
    )
    row = (
        "`2026-12-03 09:15:00,`wx-sp,`1900000100,`1900000101,`,`4200000001,`PC1,`o-1,`JSAPI,"
        "`SUCCESS,`OTHERS,`CNY,`30.00,`0.00,`0,`0,`0.00,`0.00,`,`,`电费,`,`0.18000,`0.60%"
    )
    summary = "总交易单数,总交易额,总退款金额,总代金券或立减优惠退款金额,手续费总金额"
    text = "\n".join(
        [header, row, summary.replace("总退款金额", "退款总金额"), "`1,`30.00,`0.00,`0.00,`0.18000"]
    )
    bill = bills.parse(text)
    assert bill.bad == []
    (r,) = bill.rows
    assert (r.sub_mchid, r.out_trade_no, r.settle_fen, r.is_refund) == (
        "1900000101",
        "PC1",
        3000,
        False,
    )


def test_an_unknown_header_refuses_the_whole_file() -> None:
    try:
        bills.parse("a,b,c\n`1,`2,`3\n")
    except bills.BillError as exc:
        assert "商户订单号" in str(exc)
    else:
        raise AssertionError("an unknown layout must be refused")


def test_gzip_or_not_and_the_hash_of_the_decompressed_file() -> None:
    raw = _render(*_world(2)).encode()
    sha1 = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
    assert bills.unpack(gzip.compress(raw)) == raw == bills.unpack(raw)
    assert bills.hash_ok(bills.unpack(gzip.compress(raw)), "SHA1", sha1.upper())
    assert not bills.hash_ok(raw + b"x", "SHA1", sha1)
    try:
        bills.unpack(gzip.compress(raw)[:30])
    except bills.BillError:
        pass
    else:
        raise AssertionError("a cut gzip file must be refused")


@given(st.data())
def test_every_injected_difference_is_found_once_and_nothing_else(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 25))
    orders = [_order(i, data.draw(st.integers(100, 100_000))) for i in range(n)]
    refunds = [_refund(o, i, o.total // 2) for i, o in enumerate(orders) if i % 3 == 0]
    nos = [o.out_trade_no for o in orders]
    missing = data.draw(st.sets(st.sampled_from(nos), max_size=n))
    changed = data.draw(st.sets(st.sampled_from(nos), max_size=n)) - missing
    back = {r.out_refund_no for r in refunds if r.order.out_trade_no not in missing}
    refund_changed = (
        data.draw(st.sets(st.sampled_from(sorted(back)), max_size=len(back))) if back else set()
    )
    extra = data.draw(st.integers(0, 3))
    faults = BillFaults(
        extra_rows=extra, missing=missing, amounts={no: 1 for no in changed},
        refunds={no: 1 for no in refund_changed},
    )  # fmt: skip
    ours, ours_back = _books(orders, refunds)
    try:
        bill = bills.parse(_render(orders, refunds, faults))
    except PayError:  # nothing left to show: WeChat has no bill that day (NO_STATEMENT_EXIST)
        bill = bills.Bill()
    found = match(bill, ours, ours_back)
    expected = (
        {("ours_only", no) for no in missing}
        | {("amount_differs", no) for no in changed}
        | {("refund_mismatch", no) for no in refund_changed}
        # a refund of a payment left out is left out too: ours only
        | {("refund_mismatch", r.out_refund_no) for r in refunds if r.order.out_trade_no in missing}
        | {("theirs_only", f"GHOST{i:06d}") for i in range(extra)}
    )
    assert sorted((d.kind, d.ref) for d in found) == sorted(expected)
