"""Rendering a console page: the chosen language, the navigation by task, the CSRF token,
the formatting helpers; and the console's answers to a missing login or a refused form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud.api.deps import Services, operator
from cloud.auth import Principal
from cloud.console import format as fmt
from cloud.console import i18n
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.security import (
    CSRF_FIELD,
    csrf_ok,
    csrf_token,
    ensure_csrf_cookie,
    secure_cookie,
)
from cloud.errors import Unauthorized

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    extensions=["jinja2.ext.i18n"],
)
_env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
templates = Jinja2Templates(env=_env)
templates.env.globals.update(
    money=fmt.money,
    price=fmt.price,
    when=fmt.when,
    number=fmt.number,
    html_lang=i18n.html_lang,
    CSRF_FIELD=CSRF_FIELD,
)


# Navigation by what the operator does (DESIGN §16); msgids are English.
NAV = (
    ("accounts", N_("Accounts"), "/console/accounts"),
    ("counter", N_("Counter"), "/console/counter"),
    ("monitor", N_("Monitor"), "/console/monitor"),
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


def render_fragment(request: Request, name: str, block: str, ctx: dict[str, Any]) -> Response:
    """One block of a page for htmx (the same route answering ``HX-Request``), as
    jinja2-fragments does; the page and the fragment vary by that header."""
    template = templates.env.get_template(name)
    context = template.new_context({"request": request, "lang": i18n.current.get(), **ctx})
    html = "".join(template.blocks[block](context))
    return HTMLResponse(html, headers={"Vary": "HX-Request"})


def is_fragment(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


async def signed_in(request: Request, svc: Services) -> Principal | Response:
    """The operator, or the redirect to the login page."""
    try:
        who: Principal = await operator(request, svc)
    except Unauthorized:
        return RedirectResponse("/console/login", status_code=303)
    return who


async def signed_form(request: Request, svc: Services) -> tuple[Principal, Any] | Response:
    """A form's POST: the operator and the form, or the login redirect or the refusal of a
    form without a good CSRF token."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    return who, await request.form()


async def refused_csrf(request: Request, svc: Services) -> Response | None:
    """None when the form's CSRF token is good; else the page saying what to do."""
    if await csrf_ok(request):
        return None
    msg = _(
        "This form has expired or did not come from this console. Reload the page and try again."
    )
    return render(request, svc, "message.html", {"message": msg, "refused": True}, status=403)


# the services' refusals in the clerk's language: cloud.console.refusals
