"""Rendering a console page: the chosen language, the navigation by task, the CSRF token,
the formatting helpers; and the console's answers to a missing login or a refused form."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud.api.deps import Services, operator
from cloud.auth import Principal
from cloud.console import format as fmt
from cloud.console import i18n
from cloud.console.i18n import gettext as _
from cloud.console.security import (
    CSRF_FIELD,
    csrf_ok,
    csrf_token,
    ensure_csrf_cookie,
    secure_cookie,
)
from cloud.errors import DomainError, Unauthorized

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    extensions=["jinja2.ext.i18n"],
)
_env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
templates = Jinja2Templates(env=_env)
templates.env.globals.update(
    money=fmt.money,
    when=fmt.when,
    number=fmt.number,
    html_lang=i18n.html_lang,
    CSRF_FIELD=CSRF_FIELD,
)


def N_(message: str) -> str:
    """Marks a msgid for extraction; it is translated where it is shown."""
    return message


# Navigation by what the operator does (DESIGN §16); msgids are English.
NAV = (
    ("accounts", N_("Accounts"), "/console/accounts"),
    ("counter", N_("Counter"), "/console/counter"),
    ("monitor", N_("Monitor"), "/console/"),
    ("control", N_("Control"), "/console/control"),
    ("work", N_("Work orders"), "/console/work-orders"),
    ("reports", N_("Reports"), "/console/reports"),
    ("finance", N_("Finance"), "/console/finance"),
    ("settings", N_("Settings"), "/console/settings"),
)


class LocaleMiddleware:
    """Sets the request's language (``?lang=`` or the cookie; zh-CN by default) for the
    console's pages and the messages its routes make."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        lang = i18n.pick(request.cookies.get(i18n.LANG_COOKIE), request.query_params.get("lang"))
        token = i18n.current.set(lang)
        try:
            await self.app(scope, receive, send)
        finally:
            i18n.current.reset(token)


def render(
    request: Request,
    svc: Services,
    name: str,
    ctx: dict[str, Any],
    *,
    status: int = 200,
    section: str = "",
) -> Response:
    context = {
        "csrf": csrf_token(request),
        "lang": i18n.current.get(),
        "nav": NAV,
        "section": section,
        "path": request.url.path,
        **ctx,
    }
    resp = templates.TemplateResponse(request, name, context, status_code=status)
    secure = secure_cookie(request, svc.secure_cookies)
    ensure_csrf_cookie(request, resp, secure)
    chosen = request.query_params.get("lang")
    if chosen in i18n.LOCALES:
        resp.set_cookie(
            i18n.LANG_COOKIE, chosen, max_age=365 * 86400, samesite="lax", secure=secure
        )
    return resp


async def signed_in(request: Request, svc: Services) -> Principal | Response:
    """The operator, or the redirect to the login page."""
    try:
        who: Principal = await operator(request, svc)
    except Unauthorized:
        return RedirectResponse("/console/login", status_code=303)
    return who


async def refused_csrf(request: Request, svc: Services) -> Response | None:
    """None when the form's CSRF token is good; else the page saying what to do."""
    if await csrf_ok(request):
        return None
    msg = _(
        "This form has expired or did not come from this console. Reload the page and try again."
    )
    return render(request, svc, "message.html", {"message": msg, "refused": True}, status=403)


TITLES = {
    400: N_("Request not understood"),
    401: N_("Please log in"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    409: N_("Conflicts with what is already recorded"),
    422: N_("Please correct the input"),
    429: N_("Too many attempts"),
}


# The refusals a clerk meets at the counter and in 营业, worded with what was entered: the
# pattern finds the values, the catalogue holds the sentence (static ones are looked up as
# they are).
_WORDED = (
    (r"account (?P<a>\S+) is closed", N_("account %(a)s is closed")),
    (r"account (?P<a>\S+) not found", N_("account %(a)s not found")),
    (r"sale (?P<r>\S+) not found", N_("sale %(r)s not found")),
    (r"sale (?P<r>\S+) is already reversed", N_("sale %(r)s is already reversed")),
    (
        r"sale (?P<r>\S+) belongs to business day (?P<d>\S+), which has closed: only a "
        r"same-day sale can be reversed",
        N_(
            "sale %(r)s belongs to business day %(d)s, which has closed: only a same-day sale "
            "can be reversed"
        ),
    ),
    (
        r"the cash of business day (?P<d>\S+) has been handed over: sale (?P<r>\S+) can no "
        r"longer be reversed",
        N_(
            "the cash of business day %(d)s has been handed over: sale %(r)s can no longer "
            "be reversed"
        ),
    ),
    (
        r"the meter has already taken the recharge of sale (?P<r>\S+): it cannot be "
        r"reversed \(refund it with a deduction at the meter\)",
        N_(
            "the meter has already taken the recharge of sale %(r)s: it cannot be reversed "
            "(refund it with a deduction at the meter)"
        ),
    ),
    (
        r"the recharge of sale (?P<r>\S+) is on its way to the meter: wait for the meter's "
        r"answer before reversing",
        N_(
            "the recharge of sale %(r)s is on its way to the meter: wait for the meter's "
            "answer before reversing"
        ),
    ),
    (r"service point (?P<p>.+) already has a meter", N_("service point %(p)s already has a meter")),
    (
        r"service point (?P<p>.+) has no meter to (swap|remove)",
        N_("service point %(p)s has no meter"),
    ),
    (r"service point (?P<p>.+) is removed", N_("service point %(p)s is removed")),
    (
        r"account (?P<a>\S+) owes (?P<m>\S+): collect it first, or write it off",
        N_("account %(a)s owes ¥%(m)s: collect it first, or write it off"),
    ),
    (
        r"refund (?P<m>\S+) is more than the balance (?P<b>\S+) of account (?P<a>\S+)",
        N_("the refund ¥%(m)s is more than the balance ¥%(b)s of account %(a)s"),
    ),
    (
        r"installation register (?P<r>\S+) is below the meter's last reading (?P<l>\S+) .*",
        N_("the installation register %(r)s is below the meter's last reading %(l)s"),
    ),
    (
        r"final register (?P<r>\S+) is below the last reading (?P<l>\S+)",
        N_("the final register %(r)s is below the last reading %(l)s"),
    ),
    (
        r"the premises' (?P<u>\w+) is already open on account (?P<a>\S+)",
        N_("this premises' supply is already open on account %(a)s"),
    ),
    (
        r"account (?P<a>\S+) is not in debt: nothing to write off",
        N_("account %(a)s is not in debt: nothing to write off"),
    ),
    (
        r"the first sale (?P<m>\S+) must be more than 0",
        N_("the first sale ¥%(m)s must be more than ¥0"),
    ),
    (
        r"first sale (?P<m>\S+) is not an amount in yuan and fen",
        N_("the first sale %(m)s is not an amount in yuan and fen"),
    ),
    (
        r"refund (?P<m>\S+) is not an amount in yuan and fen",
        N_("the refund %(m)s is not an amount in yuan and fen"),
    ),
    (
        r"payment method (?P<m>.+) is not one of cash, card, transfer",
        N_("payment method %(m)s is not one of cash, card, transfer"),
    ),
    (r"outlet (?P<o>\S+) not found", N_("outlet %(o)s not found")),
    (
        r"idempotency key (?P<k>.+) was already used for a different sale",
        N_("this form was already used for a different sale: open the form again"),
    ),
    (
        r"account (?P<a>\S+) owes (?P<m>\S+): a transfer never moves a debt to the new "
        r"customer; collect it first, or write it off",
        N_(
            "account %(a)s owes ¥%(m)s: a transfer never moves a debt to the new customer; "
            "collect it first, or write it off"
        ),
    ),
    (
        r"the meter of service point (?P<p>.+) has not reported the credit it holds: read the "
        r"meter, then try again",
        N_(
            "the meter of service point %(p)s has not reported the credit it holds: read the "
            "meter, then try again"
        ),
    ),
    (
        r"the meter of service point (?P<p>.+) has not reported its credit since its last "
        r"recharge: read the meter, then try again",
        N_(
            "the meter of service point %(p)s has not reported its credit since its last "
            "recharge: read the meter, then try again"
        ),
    ),
    (
        r"the meter of service point (?P<p>.+) still holds (?P<m>\S+) of credit: deduct it at "
        r"the meter and read it back, or remove the meter first",
        N_(
            "the meter of service point %(p)s still holds ¥%(m)s of credit: deduct it at the "
            "meter and read it back, or remove the meter first"
        ),
    ),
    (
        r"service point (?P<p>.+) is under keep-power set by (?P<b>\S+) for the current "
        r"customer: end it before the transfer, and set it again for the new customer if "
        r"still needed",
        N_(
            "service point %(p)s is under keep-power set by %(b)s for the current customer: "
            "end it before the transfer, and set it again for the new customer if still needed"
        ),
    ),
    (
        r"service point (?P<p>.+) is under a manual override set by (?P<b>\S+) for the "
        r"current customer: end it before the transfer, and set it again for the new "
        r"customer if still needed",
        N_(
            "service point %(p)s is under a manual override set by %(b)s for the current "
            "customer: end it before the transfer, and set it again for the new customer if "
            "still needed"
        ),
    ),
)
_PATTERNS = tuple((re.compile(f"^{p}$"), msg) for p, msg in _WORDED)
STATIC = (
    N_("a reversal needs a reason"),
    N_("a write-off needs a reason"),
    N_("choose the outlet the sale is made at"),
    N_("moving the balance needs the account it moves to"),
    N_("this outlet is outside your scope and no grant for it is in force"),
    N_("writing off arrears needs permission 'account.write_off'"),
    N_("this meter channel is already bound to another service point"),
    N_("the new meter channel is already bound to a service point"),
    N_("no reading of this meter has arrived from its gateway yet: type the register in"),
    N_("permission 'sale.create' required"),
    N_("permission 'sale.reverse' required"),
    N_("permission 'account.open' required"),
    N_("permission 'account.close' required"),
    N_("permission 'meter.install' required"),
    N_("permission 'import.run' required"),
    N_(
        "a meter-controlled point's first sale is made after its meter is installed, "
        "so that the credit is sent to the meter"
    ),
    N_("a transfer goes to another customer"),
)


def _translated(message: str) -> str:
    for pattern, msgid in _PATTERNS:
        if m := pattern.match(message):
            return _(msgid) % m.groupdict()
    return _(message)


def explain(exc: DomainError) -> str:
    """A service's refusal in the operator's language: the catalogue's translation of the
    message (or of its pattern, with the values it names), after a title for its kind."""
    title = _(TITLES.get(exc.status, "Refused"))
    if i18n.current.get() != "zh_CN":
        return f"{title}: {exc}"
    return f"{title}：{_translated(str(exc))}"
