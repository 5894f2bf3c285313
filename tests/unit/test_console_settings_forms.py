"""Reading the Settings pages' forms: times in the site's zone, the margin percentage,
a flat price or a plan in rows, and refusals worded for the clerk."""

from __future__ import annotations

from datetime import time, timedelta
from decimal import Decimal

import pytest

from cloud.console import i18n
from cloud.console import settings as s
from cloud.console.refusals import MARGIN_HINT, explain
from cloud.errors import Conflict, Invalid
from cloud.registry import admin_core as core


def test_site_form_round_trip() -> None:
    form = s._site_form(core.SiteSettings(name="滨江", catalogue_price=Decimal("0.9")))
    assert form["price_margin"] == "15" and form["friendly_night_start"] == "22:00"
    back = s._site_settings(form)
    assert back.price_margin == Decimal("0.15") and back.catalogue_price == Decimal("0.9")
    assert back.friendly_night_end == time(8) and back.friendly_weekends


def test_site_form_empty_fields() -> None:
    form = {"name": "x", "friendly_night_start": "", "friendly_night_end": ""}
    got = s._site_settings(form)
    assert got.friendly_night_start is None and got.catalogue_price is None
    assert got.business_day_cutoff == time(0) and not got.friendly_holidays
    assert got.price_margin == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("notice_minutes", "ten"),
        ("notice_minutes", "-5"),
        ("business_day_cutoff", "25:99"),
        ("alarm_hysteresis", "abc"),
        ("catalogue_price", "NaN"),
        ("price_margin", "x%"),
    ],
)
def test_site_form_refuses_what_is_not_a_number_or_time(field: str, value: str) -> None:
    with pytest.raises(Invalid):
        s._site_settings({"name": "x", field: value})


def test_local_time_is_read_in_the_sites_zone() -> None:
    at = s._local("2026-12-03T08:30", "Asia/Shanghai", "bad")
    assert at is not None and at.utcoffset() == timedelta(hours=8)
    assert s._local("", "Asia/Shanghai", "bad") is None
    with pytest.raises(Invalid):
        s._local("tomorrow", "Asia/Shanghai", "bad")


def test_a_flat_version() -> None:
    v = s._version(
        {"kind": "flat", "unit_price": "1.2", "monthly_fee": "3"}, "Asia/Shanghai", "electricity"
    )
    assert v.kind == "flat" and v.spec == {"unit_price": "1.2"} and v.monthly_fee == 3
    assert v.effective_from is None and v.margin_reason is None


def test_a_tiered_version_in_rows() -> None:
    form = {"kind": "tiered", "tier_up_1": "100", "tier_price_1": "0.6", "tier_price_2": "0.9"}
    v = s._version(form, "Asia/Shanghai", "water")
    assert v.kind == "tiered" and v.spec["cycle"] == "month" and len(v.spec["blocks"]) == 2


@pytest.mark.parametrize(
    ("form", "said"),
    [
        ({"kind": "json", "plan": "{}"}, "请选择价格方案"),
        ({"kind": "flat", "unit_price": "abc"}, "单价须为数字"),
        ({"kind": "flat", "unit_price": "1.23456"}, "单价最多 4 位小数"),
        ({"kind": "tiered"}, "请至少填写一档阶梯"),
        ({"kind": "tou"}, "请填写一天的各时段"),
    ],
)
def test_a_bad_plan_is_refused(form: dict[str, str], said: str) -> None:
    with pytest.raises(Invalid, match=said):
        s._version(form, "Asia/Shanghai", "electricity")


def test_the_margin_needs_a_reason_once_acknowledged() -> None:
    form = {"kind": "flat", "unit_price": "2", "margin_ack": "on", "margin_reason": "x"}
    with pytest.raises(Invalid):
        s._version(form, "Asia/Shanghai", "electricity")
    v = s._version({**form, "margin_reason": "老合同价"}, "Asia/Shanghai", "electricity")
    assert v.margin_reason == "老合同价"
    ignored = s._version(
        {**form, "margin_ack": "", "margin_reason": "x"}, "Asia/Shanghai", "electricity"
    )
    assert ignored.margin_reason is None


def test_refusals_worded_for_the_clerk() -> None:
    token = i18n.current.set("zh_CN")
    try:
        margin = Invalid(
            "unit price 1.5 is above the ceiling 1.1500 at site 滨江 (catalogue price 1.0000 "
            "plus 15% margin): acknowledge it with a reason (margin_reason) to accept it"
        )
        text = explain(margin)
        assert text.startswith("请更正输入：单价 1.5 高于站点“滨江”的上限 1.1500")
        assert s._(MARGIN_HINT) in text
        assert (
            explain(Conflict("role '收费员' already exists"))
            == "与已有记录冲突：角色“收费员”已存在。"
        )
        assert explain(Invalid("a grant lasts at most 31 days")) == "请更正输入：授权最长 31 天"
    finally:
        i18n.current.reset(token)
    token = i18n.current.set("en")
    try:
        assert explain(Conflict("username 'a1' is taken")).endswith("The user name a1 is taken.")
    finally:
        i18n.current.reset(token)
