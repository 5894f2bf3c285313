"""The lifecycle's refusals of issue 14 as the clerk reads them in the console: each raised
by the rule itself (so a reworded message that no pattern matches fails here), then worded
by the catalogue in Chinese with the values it names."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from cloud.console import i18n
from cloud.console.refusals import explain
from cloud.errors import DomainError
from cloud.lifecycle import core
from cloud.lifecycle.core import AccountState, ControlOrder, MeterCredit, Settlement

T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
POINT = "A栋-2-201 电"


@pytest.fixture(autouse=True)
def chinese() -> Iterator[None]:
    token = i18n.current.set("zh_CN")
    yield
    i18n.current.reset(token)


def _refusal(call: Callable[[], object]) -> DomainError:
    with pytest.raises(DomainError) as info:
        call()
    return info.value


CASES: list[tuple[Callable[[], object], list[str]]] = [
    (lambda: core.check_first_sale(Decimal("-5.00"), "cash", ["cloud"]), ["首次售电", "-5.00"]),
    (lambda: core.check_first_sale(Decimal("1.001"), "cash", ["cloud"]), ["首次售电", "1.001"]),
    (lambda: core.check_first_sale(Decimal("5"), "wechat", ["cloud"]), ["付款方式", "wechat"]),
    (lambda: core.check_first_sale(Decimal("5"), "cash", ["meter"]), ["本地费控", "装表"]),
    (
        lambda: core.settle(
            AccountState("A000007", "active", Decimal("-3.20")),
            Settlement.MOVE,
            AccountState("A000008", "active", Decimal(0)),
            None,
            False,
            True,
            None,
            transfer=True,
        ),
        ["A000007", "3.20", "过户不会把欠费转给新客户"],
    ),
    (
        lambda: core.check_meter_credit([MeterCredit(POINT, None, None, None)]),
        [POINT, "尚未报告表内余额"],
    ),
    (
        lambda: core.check_meter_credit(
            [MeterCredit(POINT, Decimal(0), T0, T0 + timedelta(seconds=1))]
        ),
        [POINT, "自上次充值后"],
    ),
    (
        lambda: core.check_meter_credit([MeterCredit(POINT, Decimal("19.00"), T0, None)]),
        [POINT, "19.00", "表端扣减", "拆表"],
    ),
    (
        lambda: core.check_no_orders(
            [ControlOrder(POINT, "keep_power", "operator:admin", None)], T0
        ),
        [POINT, "operator:admin", "保电"],
    ),
    (
        lambda: core.check_no_orders([ControlOrder(POINT, "override", "operator:admin", None)], T0),
        [POINT, "operator:admin", "人工干预"],
    ),
]


@pytest.mark.parametrize(("call", "shown"), CASES)
def test_the_refusal_reads_in_chinese(call: Callable[[], object], shown: list[str]) -> None:
    text = explain(_refusal(call))
    for part in shown:
        assert part in text, text
    # nothing of the English sentence is left (the values it names aside)
    rest = text
    for part in shown:
        rest = rest.replace(part, "")
    assert not re.search(r"[a-z]{3,}", rest), text
