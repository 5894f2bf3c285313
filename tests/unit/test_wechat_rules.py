"""WeChat Pay rules (cloud.payments.wechat.rules): top-up amounts, the notification's
headers and whether a transaction is the order we made."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.errors import Invalid
from cloud.payments.wechat import rules

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
LOW, HIGH = Decimal("10.00"), Decimal("5000.00")


@pytest.mark.parametrize(
    ("amount", "why"),
    [
        ("0", "greater than zero"),
        ("-5", "greater than zero"),
        ("30.001", "two decimals"),
        ("9.99", "smallest"),
        ("5000.01", "largest"),
        ("NaN", "greater than zero"),
    ],
)
def test_a_top_up_out_of_bounds_is_refused_saying_why(amount: str, why: str) -> None:
    with pytest.raises(Invalid, match=why):
        rules.check_topup(Decimal(amount), LOW, HIGH)


@given(st.integers(min_value=1000, max_value=500000))
def test_fen_round_trips_every_amount_in_range(cents: int) -> None:
    amount = Decimal(cents) / 100
    assert rules.check_topup(amount, LOW, HIGH) == cents


def _headers(**kw: str) -> dict[str, str]:
    base = {
        "wechatpay-signature": "c2lnbmF0dXJl",
        "wechatpay-timestamp": str(int(NOW.timestamp())),
        "wechatpay-nonce": "n0nce",
        "wechatpay-serial": "PUB_KEY_ID_0001",
    }
    return {**base, **kw}


def test_a_probe_a_stale_timestamp_and_missing_headers_are_refused() -> None:
    rules.check_headers(_headers(), NOW)
    with pytest.raises(rules.Refused, match="probe"):
        rules.check_headers(_headers(**{"wechatpay-signature": "WECHATPAY/SIGNTEST/abc"}), NOW)
    with pytest.raises(rules.Refused, match="5 minutes"):
        stale = str(int(NOW.timestamp()) - 301)
        rules.check_headers(_headers(**{"wechatpay-timestamp": stale}), NOW)
    with pytest.raises(rules.Refused, match="5 minutes"):
        ahead = str(int(NOW.timestamp()) + 301)
        rules.check_headers(_headers(**{"wechatpay-timestamp": ahead}), NOW)
    rules.check_headers(_headers(**{"wechatpay-timestamp": str(int(NOW.timestamp()) - 299)}), NOW)
    with pytest.raises(rules.Refused, match="missing"):
        rules.check_headers(_headers(**{"wechatpay-serial": ""}), NOW)
    with pytest.raises(rules.Refused, match="number"):
        rules.check_headers(_headers(**{"wechatpay-timestamp": "soon"}), NOW)


PARTNER = rules.OrderFacts(
    "PC202612030000000001", "partner", "1900000100", "1900000109", "wxsp", None, 3000
)


def _resource(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "out_trade_no": PARTNER.out_trade_no,
        "sp_mchid": "1900000100",
        "sub_mchid": "1900000109",
        "sp_appid": "wxsp",
        "trade_state": "SUCCESS",
        "amount": {"total": 3000, "payer_total": 3000, "currency": "CNY"},
    }
    return {**base, **kw}


def test_a_transaction_matches_its_order_or_names_what_differs() -> None:
    assert rules.mismatches(PARTNER, _resource()) == []
    assert rules.mismatches(PARTNER, _resource(sub_mchid="1900000999")) == ["sub_mchid"]
    assert rules.mismatches(PARTNER, _resource(amount={"total": 2999})) == ["amount"]
    assert rules.mismatches(PARTNER, _resource(sp_appid="wxother")) == ["sp_appid"]
    assert rules.mismatches(PARTNER, _resource(amount={"total": True})) == ["amount"]
    direct = rules.OrderFacts("PC1", "direct", "1230000109", None, "wxd", None, 500)
    paid = {
        "out_trade_no": "PC1",
        "mchid": "1230000109",
        "appid": "wxd",
        "amount": {"total": 500, "currency": "CNY"},
    }
    assert rules.mismatches(direct, paid) == []
    assert rules.mismatches(direct, {**paid, "mchid": "1900000109"}) == ["mchid"]
    assert rules.mismatches(direct, {**paid, "amount": {"total": 500, "currency": "USD"}}) == [
        "currency"
    ]


def test_days_left_is_the_balance_at_the_average_spend() -> None:
    assert rules.days_left(Decimal("70"), Decimal("140"), 14) == Decimal("7.0")
    assert rules.days_left(Decimal("0"), Decimal("140"), 14) == 0
    assert rules.days_left(Decimal("-3"), Decimal("140"), 14) == 0
    assert rules.days_left(Decimal("50"), Decimal("0"), 14) is None
