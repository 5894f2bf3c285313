"""大写 amounts: the settlement rules' own examples, refusals, and a round trip
through an independent parser written here (Hypothesis)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.payments.capitals import AmountError, amount_in_capitals

KNOWN = [
    # 《支付结算办法》 examples and common cheque cases
    ("1409.50", "壹仟肆佰零玖元伍角整"),
    ("6007.14", "陆仟零柒元壹角肆分"),
    ("1680.32", "壹仟陆佰捌拾元叁角贰分"),
    ("107000.53", "壹拾万柒仟元伍角叁分"),
    ("1234.50", "壹仟贰佰叁拾肆元伍角整"),
    ("16", "壹拾陆元整"),
    ("10", "壹拾元整"),
    ("0", "零元整"),
    ("0.50", "零元伍角整"),
    ("0.05", "零元零伍分"),
    ("0.01", "零元零壹分"),
    ("1.05", "壹元零伍分"),
    ("100", "壹佰元整"),
    ("100.00", "壹佰元整"),
    ("1001", "壹仟零壹元整"),
    ("10010", "壹万零壹拾元整"),
    ("100700", "壹拾万零柒佰元整"),
    ("1070000", "壹佰零柒万元整"),
    ("100000000", "壹亿元整"),
    ("100010000", "壹亿零壹万元整"),
    ("100000001", "壹亿零壹元整"),
    ("1000001000", "壹拾亿零壹仟元整"),
    ("325.04", "叁佰贰拾伍元零肆分"),
    ("999999999999.99", "玖仟玖佰玖拾玖亿玖仟玖佰玖拾玖万玖仟玖佰玖拾玖元玖角玖分"),
]


@pytest.mark.parametrize(("figures", "capitals"), KNOWN)
def test_known_examples(figures: str, capitals: str) -> None:
    assert amount_in_capitals(Decimal(figures)) == capitals


@pytest.mark.parametrize("bad", ["-0.01", "1.234", "0.001", "1000000000000", "NaN", "Infinity"])
def test_refusals(bad: str) -> None:
    with pytest.raises(AmountError):
        amount_in_capitals(Decimal(bad))


def test_refuses_float() -> None:
    with pytest.raises(AmountError):
        amount_in_capitals(1.5)  # type: ignore[arg-type]


_DIG = {c: i for i, c in enumerate("零壹贰叁肆伍陆柒捌玖")}
_UNIT = {"拾": 10, "佰": 100, "仟": 1000}


def _parse_section(text: str) -> int:
    total, digit = 0, 0
    for ch in text:
        if ch in _DIG:
            digit = _DIG[ch]
        elif ch in _UNIT:
            assert digit != 0, f"unit {ch} without a digit in {text}"
            total += digit * _UNIT[ch]
            digit = 0
    return total + digit


def _parse_integer(text: str) -> int:
    value = 0
    if "亿" in text:
        head, text = text.split("亿")
        value += _parse_section(head) * 10**8
    if "万" in text:
        head, text = text.split("万")
        value += _parse_section(head) * 10**4
    return value + _parse_section(text)


def parse_capitals(text: str) -> Decimal:
    """An independent reader of 大写 (not the writer's algorithm run backwards)."""
    integer, frac = text.split("元")
    fen = 0
    if frac != "整":
        assert not frac.endswith("分整"), "整 after 分"
        if "角" in frac:
            j, frac = frac.split("角")
            fen += _DIG[j[-1]] * 10
        if "分" in frac:
            fen += _DIG[frac.replace("分", "")[-1]]
    return Decimal(_parse_integer(integer)) + Decimal(fen) / 100


def _well_formed(text: str) -> None:
    assert "零零" not in text
    assert not text.startswith("零") or text.startswith("零元")
    assert "零万" not in text and "零亿" not in text and "零元" not in text[1:]
    assert text.endswith(("整", "分"))
    assert not text.endswith("分整")


@given(st.integers(min_value=0, max_value=10**14 - 1))
def test_round_trip(fen: int) -> None:
    amount = Decimal(fen) / 100
    text = amount_in_capitals(amount.quantize(Decimal("0.01")))
    _well_formed(text)
    assert parse_capitals(text) == amount
    # 整 exactly when there are no fen
    assert text.endswith("整") == (fen % 10 == 0)
