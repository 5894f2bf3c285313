"""An account's statement in the console (对账单), from the account page: every journal
line on its wallet with its cause, the running balance and the receipt that paid it; as a
page (newest first) or one Excel file."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cloud.api.deps import ServicesDep
from cloud.console import lists
from cloud.console.format import when
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import render, signed_in
from cloud.ledger.statement import account_statement

router = APIRouter(prefix="/console/accounts", include_in_schema=False)

#: A journal entry's kind in the clerk's words.
KINDS = {
    "topup": N_("top-up"),
    "usage": N_("usage"),
    "fixed_charge": N_("monthly fee"),
    "common_area": N_("common-area share (公摊)"),
    "reversal": N_("reversal"),
    "adjustment": N_("adjustment"),
    "refund": N_("refund"),
    "opening": N_("opening balance"),
    "write_off": N_("write-off"),
    "transfer": N_("transfer"),
}


@router.get("/{number}/statement")
async def statement_page(
    number: str, request: Request, svc: ServicesDep, offset: lists.Offset = 0,
    export: lists.Export = "",
) -> Response:  # fmt: skip
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    st = await account_statement(svc.db, who, number[:20])
    kinds = {k: _(v) for k, v in KINDS.items()}
    newest = list(reversed(st.lines))
    if export == "xlsx":
        headers = [
            _("Effective at"), _("Kind"), _("Cause"), _("By"), _("Amount (¥)"),
            _("Balance after (¥)"), _("Receipt"), _("WeChat order"),
        ]  # fmt: skip
        rows = [
            [
                when(li.effective_at, st.timezone), kinds.get(li.kind, li.kind), li.reason,
                li.actor, li.amount, li.balance, li.receipt_no or "", li.order_no or "",
            ]
            for li in newest[: lists.EXPORT_LIMIT]
        ]  # fmt: skip
        return lists.xlsx(f"statement-{st.number}.xlsx", headers, rows)
    page = lists.page_of(offset, len(newest))
    ctx = {
        "who": who,
        "st": st,
        "lines": newest[page.offset : page.offset + page.limit],
        "page": page,
        "kinds": kinds,
        "zone": st.timezone,
    }
    return render(request, svc, "statement.html", ctx, section="accounts")
