"""A trade bill against our books, as plain values: every difference is one ``Difference``
— theirs only, ours only, amount differs, status differs, refund mismatched, or a line we
could not read — with what it does to the merchant's clearing account if written off
(``clearing_delta_fen``: WeChat's figure less ours, signed; positive means WeChat holds
more than our clearing account shows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cloud.reconcile.bill import Bill, BillRow

PAID = "paid"
REFUND_PENDING = ("requested", "processing")  # WeChat's news may simply not be here yet
REFUND_GIVEN_BACK = ("closed", "failed", "abnormal")


@dataclass(frozen=True, slots=True)
class OurOrder:
    out_trade_no: str
    status: str  # created | paid | closed
    amount_fen: int
    paid_on_day: bool  # paid (by our books) on the bill's day


@dataclass(frozen=True, slots=True)
class OurRefund:
    out_refund_no: str
    out_trade_no: str
    amount_fen: int
    status: str  # requested | processing | success | closed | failed | abnormal
    settled_on_day: bool  # success, settled on the bill's day


@dataclass(frozen=True)
class Difference:
    kind: str
    ref: str  # what it is about: out_trade_no, out_refund_no or line-N (unique per kind)
    out_trade_no: str | None = None
    out_refund_no: str | None = None
    line_no: int | None = None
    ours_fen: int | None = None
    theirs_fen: int | None = None
    clearing_delta_fen: int = 0
    creditable: bool = False  # theirs only, and the order is ours: credit it the normal way
    detail: dict[str, str] = field(default_factory=dict)


def match(
    bill: Bill, orders: Mapping[str, OurOrder], refunds: Mapping[str, OurRefund]
) -> list[Difference]:
    """The differences between ``bill`` and our books. ``orders`` holds our orders paid on
    the day and every order the bill names; ``refunds`` our refunds settled on the day and
    every refund the bill names."""
    out = [
        Difference(
            "malformed",
            f"line-{b.line_no}",
            line_no=b.line_no,
            detail={"why": b.why, "line": b.text},
        )
        for b in bill.bad
    ]
    paid_in_bill: set[str] = set()
    refunds_in_bill: set[str] = set()
    for row in bill.rows:
        if row.out_refund_no is not None:
            refunds_in_bill.add(row.out_refund_no)
            ours_refund = refunds.get(row.out_refund_no)
            if (d := _refund(row, ours_refund)) is not None:
                out.append(d)
            continue
        paid_in_bill.add(row.out_trade_no)
        if (d := _payment(row, orders.get(row.out_trade_no))) is not None:
            out.append(d)
    for no, ours in orders.items():
        if ours.status == PAID and ours.paid_on_day and no not in paid_in_bill:
            out.append(
                Difference(
                    "ours_only",
                    no,
                    out_trade_no=no,
                    ours_fen=ours.amount_fen,
                    clearing_delta_fen=-ours.amount_fen,
                )
            )
    for no, r in refunds.items():
        if r.status == "success" and r.settled_on_day and no not in refunds_in_bill:
            out.append(
                Difference(
                    "refund_mismatch",
                    no,
                    out_trade_no=r.out_trade_no,
                    out_refund_no=no,
                    ours_fen=r.amount_fen,
                    clearing_delta_fen=r.amount_fen,
                    detail={"why": "ours_only"},
                )
            )
    return out


def _payment(row: BillRow, ours: OurOrder | None) -> Difference | None:
    """A payment row against our order: WeChat took ``settle_fen``."""
    theirs = row.settle_fen
    no = row.out_trade_no
    if row.state != "SUCCESS":
        if ours is None or ours.status != PAID:
            return None  # neither side counts it as paid
        return Difference(
            "status_differs",
            no,
            out_trade_no=no,
            line_no=row.line_no,
            ours_fen=ours.amount_fen,
            theirs_fen=theirs,
            detail={"ours": PAID, "theirs": row.state},
        )
    if ours is None or ours.status != PAID:
        return Difference(
            "theirs_only",
            no,
            out_trade_no=no,
            line_no=row.line_no,
            theirs_fen=theirs,
            clearing_delta_fen=theirs,
            creditable=ours is not None,
            detail={"ours": ours.status if ours else "", "transaction_id": row.transaction_id},
        )
    if ours.amount_fen != theirs:
        return Difference(
            "amount_differs",
            no,
            out_trade_no=no,
            line_no=row.line_no,
            ours_fen=ours.amount_fen,
            theirs_fen=theirs,
            clearing_delta_fen=theirs - ours.amount_fen,
        )
    return None


def _refund(row: BillRow, ours: OurRefund | None) -> Difference | None:
    """A refund row against our refund: WeChat refunded ``refund_fen``."""
    theirs = row.refund_fen
    no = row.out_refund_no or ""

    def diff(kind: str, ref: str, delta: int, detail: dict[str, str]) -> Difference:
        return Difference(
            kind,
            ref,
            out_trade_no=row.out_trade_no,
            out_refund_no=no,
            line_no=row.line_no,
            ours_fen=ours.amount_fen if ours else None,
            theirs_fen=theirs,
            clearing_delta_fen=delta,
            detail=detail,
        )

    if ours is None:
        return diff("refund_mismatch", no, -theirs, {"why": "theirs_only"})
    if ours.amount_fen != theirs:  # our clearing falls by ours (once settled), WeChat's by theirs
        why = {"why": "amount", "ours_status": ours.status}
        return diff("refund_mismatch", no, ours.amount_fen - theirs, why)
    if ours.status in REFUND_GIVEN_BACK:  # we gave it back to the wallet, WeChat paid it out
        return diff("refund_mismatch", no, -theirs, {"why": "status", "ours_status": ours.status})
    if row.state != "REFUND":
        return diff("status_differs", f"refund:{no}", 0, {"ours": ours.status, "theirs": row.state})
    return None  # settled, or pending (its notification or the sweep's query settles it)
