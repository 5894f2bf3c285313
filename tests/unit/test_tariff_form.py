"""The console's price-plan fields read into the API's spec (cloud.console.tariff_form):
tiers with the last one open, time-of-use rows that cover the day (one over midnight
split at 00:00), and each mistake refused naming its row, in Chinese by default."""

from __future__ import annotations

import pytest

from cloud.console.tariff_form import plan_from_form
from cloud.errors import Invalid
from cloud.tariffs.rules import valid_plan


def _tou(*rows: tuple[str, str, str, str]) -> dict[str, str]:
    form = {"kind": "tou"}
    for n, (start, end, period, price) in enumerate(rows, 1):
        form |= {
            f"tou_start_{n}": start,
            f"tou_end_{n}": end,
            f"tou_period_{n}": period,
            f"tou_price_{n}": price,
        }
    return form


def test_tiers_become_blocks_the_rules_accept() -> None:
    form = {"kind": "tiered", "cycle": "month", "tier_up_1": "200", "tier_price_1": "0.56",
            "tier_up_3": "400", "tier_price_3": "0.61", "tier_price_4": "0.86"}  # fmt: skip
    plan = plan_from_form(form, "electricity")
    assert plan.spec == {
        "cycle": "month",
        "blocks": [
            {"up_to": "200", "price": "0.56"},
            {"up_to": "400", "price": "0.61"},
            {"up_to": None, "price": "0.86"},
        ],
    }  # an empty row between is skipped
    valid_plan("electricity", plan.kind, plan.spec)


def test_a_period_over_midnight_is_split_at_midnight() -> None:
    plan = plan_from_form(
        _tou(("22:00", "08:00", "valley", "0.3"), ("08:00", "22:00", "peak", "1.1")), None
    )
    assert plan.spec["windows"] == [
        {"start": "00:00", "period": "valley"},
        {"start": "08:00", "period": "peak"},
        {"start": "22:00", "period": "valley"},
    ]
    valid_plan("electricity", plan.kind, plan.spec)


@pytest.mark.parametrize(
    ("form", "said"),
    [
        ({"kind": "tiered", "tier_up_1": "100", "tier_price_1": "0.6"}, "最后一档的上限请留空"),
        ({"kind": "tiered", "tier_price_1": "0.6", "tier_price_2": "0.7"}, "第 1 行：只有最后一档"),
        ({"kind": "tiered", "tier_up_1": "1.0001", "tier_price_1": "0.6", "tier_price_2": "1"},
         "最多 3 位小数"),
        ({"kind": "tiered"}, "请至少填写一档阶梯"),
        ({"kind": "flat", "unit_price": "-1"}, "单价须大于零"),
        ({"kind": "flat"}, "请填写单价"),
        ({"kind": "json", "plan": "{}"}, "请选择价格方案"),
        (_tou(("00:00", "12:00", "peak", "1"), ("13:00", "00:00", "valley", "0.5")),
         "第 1 行在 12:00 结束，但下一时段（第 2 行）从 13:00 开始"),
        (_tou(("01:00", "00:00", "peak", "1")), "第一个时段须从 00:00 开始"),
        (_tou(("00:00", "12:00", "peak", "1"), ("12:00", "23:00", "valley", "0.5")),
         "最后一个时段（第 2 行）须在 00:00 结束"),
        (_tou(("00:00", "12:00", "peak", "1"), ("12:00", "00:00", "peak", "2")),
         "同一时段只能有一个单价"),
        (_tou(("00:00", "00:00", "", "1")), "请选择尖、峰、平或谷"),
        (_tou(("8点", "00:00", "peak", "1")), "须为时间，如 08:00"),
    ],
)  # fmt: skip
def test_each_mistake_names_its_row(form: dict[str, str], said: str) -> None:
    with pytest.raises(Invalid) as refused:
        plan_from_form(form, "electricity")
    assert said in str(refused.value)


def test_water_is_not_priced_by_time_of_use() -> None:
    with pytest.raises(Invalid, match="不能分时"):
        plan_from_form(_tou(("00:00", "00:00", "flat", "3")), "water")
