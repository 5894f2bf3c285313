"""WeChat Pay's trade bill (交易账单) read as plain values: no database, clock or network.

The file WeChat serves (gzip or not) is CSV-like: a header row, one detail row per payment
and per refund of the day (China time), then the summary header and its row. Every field
is prefixed by a backtick (so a number keeps its leading zeros in Excel); fields are split
on ",`", which keeps a comma inside a goods name. Columns are found by their names, so the
direct merchant's layout (商户号, 特约商户号 "0") and the service provider's (特约商户号 /
子商户号 filled) both read, as do the older names (总金额). A line that cannot be read is a
``BadLine`` of its own, never an error for the whole bill."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

CST = timezone(timedelta(hours=8), "Asia/Shanghai")  # WeChat's bill day is China time

#: our name → the names WeChat has used for that column (the first found is taken)
COLUMNS: dict[str, tuple[str, ...]] = {
    "at": ("交易时间",),
    "appid": ("公众账号ID",),
    "mchid": ("商户号",),
    "sub_mchid": ("特约商户号", "子商户号"),
    "transaction_id": ("微信订单号",),
    "out_trade_no": ("商户订单号",),
    "state": ("交易状态",),
    "settle": ("应结订单金额", "总金额"),
    "refund_id": ("微信退款单号",),
    "out_refund_no": ("商户退款单号",),
    "refund": ("退款金额",),
    "refund_status": ("退款状态",),
    "fee": ("手续费",),
    "order": ("订单金额",),
}
REQUIRED = ("at", "mchid", "out_trade_no", "state", "settle", "out_refund_no", "refund")
SUMMARY_FIRST = "总交易单数"
SUMMARY_COLUMNS: dict[str, tuple[str, ...]] = {
    "count": ("总交易单数",),
    "settle": ("应结订单总金额", "总交易额"),
    "refund": ("退款总金额",),
    "fee": ("手续费总金额",),
}
NONE = ("", "0")  # how the bill writes "no refund", "no sub-merchant"
FEN = Decimal("0.01")


class BillError(Exception):
    """The file as a whole is not a trade bill we can read (not text, no known header)."""


@dataclass(frozen=True, slots=True)
class BillRow:
    """One detail row: a payment (``out_refund_no`` None) or a refund of one."""

    line_no: int
    at: datetime
    mchid: str
    sub_mchid: str | None
    transaction_id: str
    out_trade_no: str
    state: str
    settle_fen: int
    out_refund_no: str | None
    refund_id: str | None
    refund_fen: int
    refund_status: str
    fee: Decimal

    @property
    def is_refund(self) -> bool:
        return self.out_refund_no is not None


@dataclass(frozen=True, slots=True)
class BadLine:
    line_no: int
    text: str  # the line as it came (cut to 500 characters)
    why: str


@dataclass(frozen=True)
class Summary:
    count: int
    settle_fen: int
    refund_fen: int
    fee: Decimal


@dataclass
class Bill:
    rows: list[BillRow] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    summary: Summary | None = None

    @property
    def lines(self) -> int:
        return len(self.rows) + len(self.bad)

    @property
    def settle_fen(self) -> int:
        return sum(r.settle_fen for r in self.rows if not r.is_refund)

    @property
    def refund_fen(self) -> int:
        return sum(r.refund_fen for r in self.rows if r.is_refund)

    @property
    def fee(self) -> Decimal:
        return sum((r.fee for r in self.rows), Decimal(0))


def unpack(data: bytes) -> bytes:
    """The bill's file as WeChat means it: gunzipped when it is gzip (by its magic bytes,
    whatever was asked for), else as it came."""
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise BillError(f"the gzip file is damaged: {exc}") from None
    return data


def digest(data: bytes, hash_type: str = "SHA1") -> str:
    """The hash WeChat gives as ``hash_value`` (SHA1 of the decompressed file)."""
    if hash_type.upper() != "SHA1":
        raise BillError(f"unknown hash type {hash_type!r}")
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def hash_ok(data: bytes, hash_type: str, hash_value: str) -> bool:
    return digest(data, hash_type) == hash_value.strip().lower()


def _cells(line: str) -> list[str]:
    if not line.startswith("`"):
        raise ValueError("a field does not start with a backtick")
    return line[1:].split(",`")


def _fen(text: str, name: str) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{name} {text!r} is not an amount") from None
    if not value.is_finite() or value < 0 or value != value.quantize(FEN):
        raise ValueError(f"{name} {text!r} is not an amount in yuan and fen")
    return int(value * 100)


def _fee(text: str) -> Decimal:
    try:
        value = Decimal(text or "0")
    except InvalidOperation:
        raise ValueError(f"fee {text!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"fee {text!r} is not a number")
    return value


def _at(text: str) -> datetime:
    # (fromisoformat is ten times strptime's speed; the shape is checked first, as it
    # takes other forms too)
    if len(text) != 19 or text[10] != " " or not text[:4].isdigit():
        raise ValueError(f"trade time {text!r} is not YYYY-MM-DD hh:mm:ss")
    try:
        return datetime.fromisoformat(text).replace(tzinfo=CST)
    except ValueError:
        raise ValueError(f"trade time {text!r} is not YYYY-MM-DD hh:mm:ss") from None


def _index(header: list[str], names: dict[str, tuple[str, ...]]) -> dict[str, int]:
    found: dict[str, int] = {}
    for ours, theirs in names.items():
        for name in theirs:
            if name in header:
                found[ours] = header.index(name)
                break
    return found


def parse(text: str) -> Bill:
    """The bill in ``text``; BillError when it has no header we know."""
    lines = text.lstrip("\ufeff").splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise BillError("the bill is empty")
    _, head = numbered[0]
    header = [h.strip().lstrip("`") for h in head.split(",")]
    col = _index(header, COLUMNS)
    if missing := [c for c in REQUIRED if c not in col]:
        raise BillError("the bill's header lacks " + ", ".join(COLUMNS[c][0] for c in missing))
    width = len(header)
    bill = Bill()
    seen: set[tuple[str, str]] = set()
    body = numbered[1:]
    for i, (n, line) in enumerate(body):
        if line.startswith(SUMMARY_FIRST):
            bill.summary = _summary(bill, line, body[i + 1 :], n)
            return bill
        try:
            row = _row(n, _cells(line), col, width)
        except ValueError as exc:
            bill.bad.append(BadLine(n, line[:500], str(exc)))
            continue
        key = (row.out_trade_no, row.out_refund_no or "")
        if key in seen:
            bill.bad.append(BadLine(n, line[:500], "the same payment or refund appears again"))
            continue
        seen.add(key)
        bill.rows.append(row)
    bill.bad.append(BadLine(len(lines) + 1, "", "the bill has no summary (总交易单数)"))
    return bill


def _row(n: int, cells: list[str], col: dict[str, int], width: int) -> BillRow:
    if len(cells) != width:
        raise ValueError(f"{len(cells)} fields where the header has {width}")

    def get(name: str) -> str:
        return cells[col[name]].strip() if name in col else ""

    no = get("out_trade_no")
    if not no or no in NONE:
        raise ValueError("no 商户订单号 (out_trade_no)")
    out_refund_no = get("out_refund_no")
    refund = out_refund_no not in NONE
    sub = get("sub_mchid")
    return BillRow(
        line_no=n,
        at=_at(get("at")),
        mchid=get("mchid"),
        sub_mchid=None if sub in NONE else sub,
        transaction_id=get("transaction_id"),
        out_trade_no=no,
        state=get("state"),
        settle_fen=_fen(get("settle"), "应结订单金额"),
        out_refund_no=out_refund_no if refund else None,
        refund_id=(get("refund_id") or None) if refund else None,
        refund_fen=_fen(get("refund"), "退款金额") if refund else 0,
        refund_status=get("refund_status"),
        fee=_fee(get("fee")),
    )


def _summary(bill: Bill, head: str, rest: list[tuple[int, str]], head_no: int) -> Summary | None:
    """The summary row, checked against the detail rows (a summary that does not add up
    is a bad line: the bill was cut or changed)."""
    header = [h.strip().lstrip("`") for h in head.split(",")]
    col = _index(header, SUMMARY_COLUMNS)
    if not rest or len(col) < len(SUMMARY_COLUMNS):
        bill.bad.append(BadLine(head_no, head[:500], "the summary row is missing or unreadable"))
        return None
    n, line = rest[0]
    for extra_no, extra in rest[1:]:
        bill.bad.append(BadLine(extra_no, extra[:500], "a line after the summary"))
    try:
        cells = _cells(line)
        if len(cells) != len(header):
            raise ValueError(f"{len(cells)} fields where the summary header has {len(header)}")
        count_text = cells[col["count"]].strip()
        if not count_text.isdigit():
            raise ValueError(f"总交易单数 {count_text!r} is not a count")
        summary = Summary(
            int(count_text),
            _fen(cells[col["settle"]].strip(), "应结订单总金额"),
            _fen(cells[col["refund"]].strip(), "退款总金额"),
            _fee(cells[col["fee"]].strip()),
        )
    except ValueError as exc:
        bill.bad.append(BadLine(n, line[:500], str(exc)))
        return None
    if summary.count != bill.lines:
        why = f"the summary counts {summary.count} rows, the bill has {bill.lines}"
        bill.bad.append(BadLine(n, line[:500], why))
    elif not bill.bad and (summary.settle_fen, summary.refund_fen) != (
        bill.settle_fen,
        bill.refund_fen,
    ):
        bill.bad.append(BadLine(n, line[:500], "the summary's totals are not the rows' sums"))
    return summary
