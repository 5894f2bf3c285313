"""The tenants' H5 page (``/h5/{group}/``): one page for a phone's browser, on the same API
as the mini-program (``/miniapp/v1``). Its words go through Babel like the console's; the
script reads them from a JSON block (the console's CSP allows no inline script)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response

from cloud.api.deps import ServicesDep
from cloud.console import i18n
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import templates

router = APIRouter(include_in_schema=False)
Slug = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[a-z0-9-]+$")]

# every word the script shows (msgids in English; the page gets them translated)
WORDS = {
    "login": N_("Log in"),
    "phone": N_("Mobile number"),
    "code": N_("Verification code"),
    "send_code": N_("Get code"),
    "resend_in": N_("Again in %(s)s s"),
    "dev_code": N_("Demo: the code is %(code)s"),
    "logout": N_("Log out"),
    "bind_title": N_("Bind your account"),
    "bind_hint": N_(
        "Your account number is on your receipt or contract; "
        "the phone is the one the office has on file."
    ),
    "account": N_("Account number"),
    "phone_on_file": N_("Phone on file"),
    "bind": N_("Bind"),
    "add_account": N_("Bind another account"),
    "unbind": N_("Unbind this account"),
    "unbind_confirm": N_("Unbind this account from your phone?"),
    "balance": N_("Balance"),
    "days_left": N_("About %(d)s days of credit left"),
    "days_unknown": N_("Not enough use yet to estimate the days left"),
    "no_credit": N_("No credit left: top up to restore supply"),
    "supply_on": N_("Supply on"),
    "supply_off": N_("Supply cut"),
    "supply_unknown": N_("Supply not reported yet"),
    "restoring": N_("Restoring supply…"),
    "cutting": N_("Switching…"),
    "keep_power": N_("Kept on by the office"),
    "alarm": N_("Low balance"),
    "electricity": N_("Electricity"),
    "water": N_("Water"),
    "top_up": N_("Top up"),
    "other_amount": N_("Other amount (yuan)"),
    "pay": N_("Pay %(a)s with WeChat Pay"),
    "paying": N_("Waiting for WeChat Pay…"),
    "paid": N_("Paid %(a)s. New balance %(b)s"),
    "supply_back": N_("Supply is back on"),
    "amount_range": N_("Enter an amount from %(min)s to %(max)s yuan, at most two decimals"),
    "usage": N_("Usage"),
    "by_day": N_("By day"),
    "by_month": N_("By month"),
    "kwh": N_("kWh"),
    "m3": N_("m³"),
    "spent": N_("Spent"),
    "topups": N_("Top-ups"),
    "none_yet": N_("None yet"),
    "receipt": N_("Receipt"),
    "wechat": N_("WeChat Pay"),
    "cash": N_("Cash"),
    "card": N_("Card"),
    "transfer": N_("Bank transfer"),
    "reversed": N_("Reversed"),
    "refunded": N_("Refunded"),
    "offline": N_("No signal: retrying…"),
    "error": N_("Something went wrong; try again."),
    "expired": N_("Your session has ended; log in again."),
    "order_closed": N_("The payment was not completed."),
}


@router.get("/h5/{group}", response_model=None)
async def h5_no_slash(group: Slug) -> Response:
    return RedirectResponse(f"/h5/{group}/", status_code=308)


@router.get("/h5/{group}/", response_model=None)
async def h5(group: Slug, request: Request, svc: ServicesDep) -> Response:
    await svc.tenant_login.tenant(group)  # 404 page for a group that does not exist
    words = {k: _(v) for k, v in WORDS.items()}
    ctx = {
        "group": group,
        "lang": i18n.current.get(),
        "words": json.dumps(words, ensure_ascii=False),
    }
    resp = templates.TemplateResponse(request, "h5/app.html", ctx)
    chosen = request.query_params.get("lang")
    if chosen in i18n.LOCALES:
        resp.set_cookie(i18n.LANG_COOKIE, chosen, max_age=365 * 86400, samesite="lax")
    resp.headers["Cache-Control"] = "no-store"
    return resp
