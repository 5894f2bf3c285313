"""The counter's pure rules: money sources, business days, reversal refusals."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest

from cloud.documents.receipt import money, receipt_escpos, receipt_fields
from cloud.errors import Conflict, Forbidden, Invalid
from cloud.ledger.core import AccountKind
from cloud.payments.core import ReversalFacts, business_day, check_reversal, source_account
from cloud.payments.sales import SaleView

OP = uuid.UUID(int=7)


def test_cash_goes_to_the_operators_drawer_card_and_transfer_to_clearing() -> None:
    assert source_account("cash", OP, "li").code == f"cash:{OP}"
    assert source_account("cash", OP, "li").kind is AccountKind.CASH_DRAWER
    assert source_account("card", OP, "li").code == "clearing:card"
    assert source_account("transfer", OP, "li").code == "clearing:transfer"
    with pytest.raises(Invalid, match="not one of cash, card, transfer"):
        source_account("wechat", OP, "li")


SH = "Asia/Shanghai"  # UTC+8, no daylight saving


@pytest.mark.parametrize(
    ("utc", "cutoff", "day"),
    [
        # midnight cut-off: the local date
        (datetime(2026, 3, 1, 15, 59, 59, tzinfo=UTC), time(0), date(2026, 3, 1)),  # 23:59:59
        (datetime(2026, 3, 1, 16, 0, 0, tzinfo=UTC), time(0), date(2026, 3, 2)),  # 00:00
        # 02:00 cut-off: until 02:00 local it is still yesterday's business day
        (datetime(2026, 3, 1, 17, 30, tzinfo=UTC), time(2), date(2026, 3, 1)),  # 01:30
        (datetime(2026, 3, 1, 17, 59, 59, tzinfo=UTC), time(2), date(2026, 3, 1)),  # 01:59:59
        (datetime(2026, 3, 1, 18, 0, tzinfo=UTC), time(2), date(2026, 3, 2)),  # 02:00
        # a 17:30 cut-off: the day named by its start runs 17:30 → 17:30
        (datetime(2026, 3, 2, 9, 29, tzinfo=UTC), time(17, 30), date(2026, 3, 1)),  # 17:29
        (datetime(2026, 3, 2, 9, 30, tzinfo=UTC), time(17, 30), date(2026, 3, 2)),  # 17:30
        # the UTC date differs from the local one: local decides
        (datetime(2026, 12, 31, 16, 30, tzinfo=UTC), time(0), date(2027, 1, 1)),
    ],
)
def test_business_day_in_shanghai(utc: datetime, cutoff: time, day: date) -> None:
    assert business_day(utc, SH, cutoff) == day


NY = "America/New_York"  # UTC-5, UTC-4 in summer


@pytest.mark.parametrize(
    ("utc", "cutoff", "day"),
    [
        (datetime(2026, 1, 15, 4, 59, tzinfo=UTC), time(0), date(2026, 1, 14)),  # 23:59 EST
        (datetime(2026, 1, 15, 5, 0, tzinfo=UTC), time(0), date(2026, 1, 15)),  # 00:00 EST
        (datetime(2026, 7, 15, 3, 59, tzinfo=UTC), time(0), date(2026, 7, 14)),  # 23:59 EDT
        (datetime(2026, 7, 15, 4, 0, tzinfo=UTC), time(0), date(2026, 7, 15)),  # 00:00 EDT
        (datetime(2026, 7, 15, 6, 0, tzinfo=UTC), time(3), date(2026, 7, 14)),  # 02:00 EDT
        (datetime(2026, 7, 15, 7, 0, tzinfo=UTC), time(3), date(2026, 7, 15)),  # 03:00 EDT
        # the night clocks go forward (8 March 2026, 02:00 → 03:00): 03:00 EDT still cuts
        (datetime(2026, 3, 8, 6, 59, tzinfo=UTC), time(3), date(2026, 3, 7)),  # 01:59 EST
        (datetime(2026, 3, 8, 7, 0, tzinfo=UTC), time(3), date(2026, 3, 8)),  # 03:00 EDT
    ],
)
def test_business_day_in_new_york(utc: datetime, cutoff: time, day: date) -> None:
    assert business_day(utc, NY, cutoff) == day


def test_business_day_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        business_day(datetime(2026, 1, 1), SH, time(0))


DAY = date(2026, 3, 2)
OK = ReversalFacts(
    receipt_no="R00000012",
    permitted=True,
    reason="wrong account",
    reversed_at=None,
    sale_day=DAY,
    today=DAY,
    handed_over=False,
    recharge_state=None,
)


@pytest.mark.parametrize("state", [None, "queued", "failed", "expired", "superseded"])
def test_a_same_day_sale_not_handed_over_may_be_reversed(state: str | None) -> None:
    check_reversal(replace(OK, recharge_state=state))


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"permitted": False}, Forbidden, "sale.reverse"),
        ({"reason": ""}, Invalid, "needs a reason"),
        ({"reason": "  \n "}, Invalid, "needs a reason"),
        ({"reversed_at": datetime(2026, 3, 2, 3, tzinfo=UTC)}, Conflict, "already reversed"),
        ({"today": date(2026, 3, 3)}, Conflict, "business day 2026-03-02, which has closed"),
        ({"handed_over": True}, Conflict, "has been handed over"),
        ({"recharge_state": "acked"}, Conflict, "meter has already taken the recharge"),
        ({"recharge_state": "sent"}, Conflict, "on its way to the meter"),
    ],
)
def test_each_refusal_says_why(change: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message) as info:
        check_reversal(replace(OK, **change))  # type: ignore[arg-type]
    assert "R00000012" in str(info.value) or error in (Forbidden, Invalid)


def test_permission_is_checked_before_anything_else() -> None:
    worst = replace(OK, permitted=False, reason="", handed_over=True, recharge_state="acked")
    with pytest.raises(Forbidden):
        check_reversal(worst)


def _sale(**change: object) -> SaleView:
    at = datetime(2026, 12, 2, 16, 30, tzinfo=UTC)
    base = SaleView(
        id=uuid.UUID(int=1),
        receipt_no="R00000012",
        group_name="滨江物业集团",
        site_name="滨江市场",
        timezone="Asia/Shanghai",
        outlet_id=uuid.UUID(int=2),
        outlet_name="东区营业厅",
        operator="li",
        operator_name="李收银",
        account_number="A000012",
        customer="张三五金店",
        premises="1号楼 2 A-201",
        amount=Decimal("1409.50"),
        method="transfer",
        balance_after=Decimal("1500.00"),
        created_at=at,
        business_day=date(2026, 12, 3),
        grant=None,
        reversed_at=None,
        reversed_by=None,
        reversal_reason=None,
        reversal_entry_id=None,
    )
    return replace(base, **change)  # type: ignore[arg-type]


def test_receipt_fields_format_money_capitals_and_local_time() -> None:
    f = dict(receipt_fields(_sale()).rows)
    assert f["金额"] == "¥1,409.50" and f["金额大写"] == "壹仟肆佰零玖元伍角整"
    assert f["售后余额"] == "¥1,500.00" and f["付款方式"] == "银行转账"
    assert f["时间"] == "2026-12-03 00:30:00 Asia/Shanghai (UTC+08:00)"  # 16:30 UTC
    ny = dict(receipt_fields(_sale(timezone="America/New_York")).rows)
    assert ny["时间"] == "2026-12-02 11:30:00 America/New_York (UTC-05:00)"
    assert money(Decimal("-3.5")) == "-¥3.50"


def test_escpos_bytes_decode_as_gb18030_with_the_reversal() -> None:
    at = datetime(2026, 12, 2, 17, tzinfo=UTC)
    sale = _sale(reversed_at=at, reversed_by="operator:admin", reversal_reason="收错账户")
    raw = receipt_escpos(sale)
    assert raw.startswith(b"\x1c\x26") and raw.endswith(b"\x1dV\x00")
    text = raw.decode("gb18030")
    for shown in [
        "滨江物业集团",
        "东区营业厅",
        "¥1,409.50",
        "壹仟肆佰零玖元伍角整",
        "已冲正",
        "收错账户",
    ]:
        assert shown in text
    assert "异地售电" not in text
    assert "张三五金店".encode("gb18030") in raw  # GB18030, not UTF-8
