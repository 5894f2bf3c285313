"""Amounts of money in Chinese capitals (大写金额), as written on receipts and cheques.

Pure functions, no I/O. The rules are those of the People's Bank's settlement
rules (《支付结算办法》附件 正确填写票据和结算凭证的基本规定):

- digits 零壹贰叁肆伍陆柒捌玖, units 拾佰仟, groups 万 and 亿, then 元角分;
- 壹拾 is written in full (¥16 → 壹拾陆元整), as on a cheque;
- one 零 stands for a run of zeros inside the number (¥1,409.50 → 壹仟肆佰零玖元伍角整,
  ¥100,010,000 → 壹亿零壹万元整); zeros at the end of a 万/亿 group are absorbed by
  the group's name (¥107,000 → 壹拾万柒仟元整);
- 整 follows 元 or 角 when there are no 分; never after 分;
- 零 is written when 角 is zero but 分 is not (¥1.05 → 壹元零伍分); when only the
  元 digit is zero before 角 the 零 is optional in the rules and is not written here
  (¥1,680.32 → 壹仟陆佰捌拾元叁角贰分, the rules' own second form);
- zero yuan is written 零元 (¥0.50 → 零元伍角整), so a receipt's line always
  starts with a yuan figure.

Chosen over a library: `cn2an` (the only maintained candidate in the package
lists) converts numbers for reading aloud; its "rmb" mode is not documented
against these settlement rules, and a receipt is a money document.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

DIGITS = "零壹贰叁肆伍陆柒捌玖"
UNITS = ("", "拾", "佰", "仟")
GROUPS = ("", "万", "亿")
# 10^12 yuan: well beyond any prepaid sale; larger groups (万亿) are not needed.
MAX_YUAN = 10**12


class AmountError(ValueError):
    """The amount cannot be written in capitals (negative, sub-fen, too large)."""


def _integer_capitals(n: int) -> str:
    if n == 0:
        return "零"
    digits = [int(c) for c in str(n)]
    count = len(digits)
    out: list[str] = []
    zero_pending = False
    group_nonzero = False
    for idx, d in enumerate(digits):
        pos = count - 1 - idx
        if d == 0:
            if out:
                zero_pending = True
        else:
            if zero_pending:
                out.append("零")
                zero_pending = False
            out.append(DIGITS[d] + UNITS[pos % 4])
            group_nonzero = True
        if pos % 4 == 0 and pos > 0:
            if group_nonzero:
                out.append(GROUPS[pos // 4])
                zero_pending = False
            group_nonzero = False
    return "".join(out)


def amount_in_capitals(amount: Decimal) -> str:
    """¥ amount → 大写, e.g. Decimal("1234.50") → "壹仟贰佰叁拾肆元伍角整".

    Raises AmountError for a negative amount, more than two decimals (a fen is
    the smallest unit), a non-finite value, or ¥10^12 and above.
    """
    if not isinstance(amount, Decimal):
        raise AmountError("amount must be a Decimal")
    if not amount.is_finite():
        raise AmountError("amount must be a finite number")
    if amount < 0:
        raise AmountError("amount must not be negative")
    try:
        fen_total = amount * 100
        if fen_total != fen_total.to_integral_value():
            raise AmountError("amount has more than two decimals")
        fen_int = int(fen_total)
    except InvalidOperation as exc:  # pragma: no cover - guarded by is_finite
        raise AmountError("amount is not a number") from exc
    yuan, rest = divmod(fen_int, 100)
    if yuan >= MAX_YUAN:
        raise AmountError("amount is too large")
    jiao, fen = divmod(rest, 10)
    text = _integer_capitals(yuan) + "元"
    if jiao == 0 and fen == 0:
        return text + "整"
    if fen == 0:
        return text + DIGITS[jiao] + "角整"
    if jiao == 0:
        return text + "零" + DIGITS[fen] + "分"
    return text + DIGITS[jiao] + "角" + DIGITS[fen] + "分"
