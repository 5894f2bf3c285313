"""The counter's pure rules: money sources, business days, reversal refusals."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, time

import pytest

from cloud.errors import Conflict, Forbidden, Invalid
from cloud.ledger.core import AccountKind
from cloud.payments.core import ReversalFacts, business_day, check_reversal, source_account

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
