"""The pure parts of notifications: SMS segments, quiet hours, the hourly limit, phone
numbers, backoff, and the templates with their zh_CN catalogue."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from babel.messages.pofile import read_po
from hypothesis import given
from hypothesis import strategies as st

from notifications import rules, segments, templates

SH = ZoneInfo("Asia/Shanghai")


def test_gsm7_segments_160_then_153() -> None:
    assert segments.segments("a" * 160) == 1
    assert segments.segments("a" * 161) == 2
    assert segments.segments("a" * 306) == 2
    assert segments.segments("a" * 307) == 3
    assert segments.segments("") == 1


def test_gsm7_extension_characters_take_two_septets_and_are_not_split() -> None:
    assert segments.encoding("{[€]}") == "GSM-7"
    assert segments.segments("€" * 80) == 1  # 160 septets
    assert segments.segments("€" * 81) == 2
    # 152 plain + one escape pair would be 154: the pair starts the next segment
    assert segments.segments("a" * 152 + "€" + "a" * 10) == 2
    assert segments.segments("a" * 152 + "€" + "a" * 152) == 3


def test_chinese_is_ucs2_70_then_67() -> None:
    assert segments.encoding("余额不足") == "UCS-2"
    assert segments.segments("电" * 70) == 1
    assert segments.segments("电" * 71) == 2
    assert segments.segments("电" * 134) == 2
    assert segments.segments("电" * 135) == 3
    # one Chinese character makes an English text UCS-2
    assert segments.segments("a" * 69 + "电") == 1
    assert segments.segments("a" * 70 + "电") == 2


def test_characters_outside_the_bmp_are_two_units_never_split() -> None:
    assert segments.segments("😀" * 35) == 1
    assert segments.segments("😀" * 36) == 2
    assert segments.segments("a" * 66 + "😀" + "a" * 66) == 3  # the pair moves on: 66, 67, 1


@given(st.text(max_size=600))
def test_segments_cover_the_text(text: str) -> None:
    n = segments.segments(text)
    part = 153 if segments.is_gsm7(text) else 67
    units = sum(2 if (c in segments.GSM_EXTENSION or ord(c) > 0xFFFF) else 1 for c in text)
    assert n >= 1
    assert n * part >= units or n == 1


def _at(h: int, m: int) -> datetime:
    return datetime(2026, 12, 3, h, m, tzinfo=SH).astimezone(UTC)


def test_quiet_hours_hold_alarms_until_morning_but_not_cuts_or_topups() -> None:
    quiet = rules.QuietHours(time(22), time(8), "Asia/Shanghai")
    morning = datetime(2026, 12, 4, 8, 0, tzinfo=SH)
    assert quiet.release("low_balance_1", _at(23, 10)) == morning
    assert quiet.release("supply_cut", _at(23, 30)) is None
    assert quiet.release("topup_received", _at(3, 0)) is None
    assert quiet.release("low_balance_2", _at(3, 0)) == datetime(2026, 12, 3, 8, tzinfo=SH)
    assert quiet.release("low_balance_1", _at(8, 0)) is None
    assert quiet.release("low_balance_1", _at(21, 59)) is None
    assert rules.QuietHours(None, None).release("low_balance_1", _at(23, 10)) is None
    day = rules.QuietHours(time(12), time(14), "Asia/Shanghai")  # a siesta, not overnight
    assert day.release("arrears_notice", _at(13, 0)) == datetime(2026, 12, 3, 14, tzinfo=SH)
    assert day.release("arrears_notice", _at(23, 0)) is None


def test_the_hourly_limit_waits_for_the_oldest_to_leave_the_window() -> None:
    now = _at(12, 0)
    sent = [now - timedelta(minutes=m) for m in (50, 40, 30)]
    assert rules.over_limit("low_balance_1", sent, 4, now) is None
    assert rules.over_limit("low_balance_1", sent, 3, now) == now + timedelta(minutes=10)
    assert rules.over_limit("supply_cut", sent, 3, now) is None
    old = [now - timedelta(minutes=90)] * 5
    assert rules.over_limit("low_balance_1", old, 3, now) is None


def test_phone_numbers() -> None:
    assert rules.e164("+8613800138000") == "+8613800138000"
    assert rules.e164("138 0013 8000") == "+8613800138000"
    assert rules.e164("008613800138000") == "+8613800138000"
    for bad in ("12345", "0755-1234567", "+0123456789", "phone", ""):
        with pytest.raises(rules.BadPhone):
            rules.e164(bad)
    with pytest.raises(rules.BadPhone, match="no phone"):
        rules.e164(None)


def test_backoff_doubles_up_to_half_an_hour() -> None:
    assert [rules.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert rules.backoff(20) == timedelta(minutes=30)


def test_every_msgid_has_a_chinese_translation_with_the_same_fields() -> None:
    path = templates._DIR / "zh_CN" / "LC_MESSAGES" / "notifications.po"
    with path.open("rb") as f:
        catalog = read_po(f, locale="zh_CN")
    have = {m.id: m.string for m in catalog if m.id}
    for msgid in templates.msgids():
        assert have.get(msgid), f"no zh_CN msgstr for {msgid!r}"
        assert templates.fields(have[msgid]) == templates.fields(msgid), msgid
    assert set(have) == set(templates.msgids()), "the catalogue has msgids no template uses"


def test_render_in_both_languages_and_refuse_a_missing_variable() -> None:
    v = {"site": "河畔市场", "point": "A栋-1-101 电", "account": "A000001", "balance": "4.50"}
    zh = templates.render("low_balance_1", "zh_CN", {**v, "days_left": "3"})
    assert zh.text.startswith(
        "【河畔市场】A栋-1-101 电（户号A000001）余额不足：剩余¥4.50，约可用3天"
    )
    en = templates.render("low_balance_1", "en", v)
    assert en.text.startswith(
        "河畔市场: credit of A栋-1-101 电 (account A000001) is low: ¥4.50 left."
    )
    assert "Top up" in en.text
    with pytest.raises(templates.MissingVariable, match="template variable missing: balance"):
        templates.render("supply_cut", "zh_CN", {k: v[k] for k in ("site", "point", "account")})
    data = templates.wechat_data(zh)
    assert data["amount2"] == {"value": "¥4.50"}
    assert data["thing3"] == {"value": "余额不足"}
    for kind in templates.TEMPLATES:  # every template renders with its own fields
        fields = templates.fields(templates.TEMPLATES[kind].text) - {"days"}
        templates.render(kind, "en", dict.fromkeys(fields, "x"))
