"""The operators' console (DESIGN §16): login, password change, the navigation by task,
the monitor (service points, paginated, searchable, exported to Excel) and a point's
control page. Every POST carries the CSRF token; routes stay thin."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from cloud.api import queries
from cloud.api.deps import SESSION_COOKIE, ServicesDep, session_token
from cloud.api.fields import has_control
from cloud.auth import Principal
from cloud.console import lists
from cloud.console.charts import GRAINS, chart_steps, consumption_chart
from cloud.console.format import when
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import refused_csrf, render, signed_in
from cloud.console.refusals import explain
from cloud.console.security import secure_cookie
from cloud.control.operator import ControlAction, ControlRequest, control_view, operate_point
from cloud.errors import DomainError, TooManyAttempts, Unauthorized
from cloud.lifecycle.consumption import Grain, point_consumption
from cloud.lifecycle.point_record import point_record

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/login")
async def login_page(request: Request, svc: ServicesDep) -> Response:
    return render(request, svc, "login.html", {"error": None})


@router.post("/login")
async def login(
    request: Request,
    svc: ServicesDep,
    tenant: Annotated[str, Form(max_length=64)],
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
) -> Response:
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    if any(has_control(v) for v in (tenant, username, password)):
        msg = _("Property group, user and password cannot hold control characters.")
        return render(request, svc, "login.html", {"error": msg}, status=422)
    address = request.client.host if request.client else None
    try:
        token = await svc.sessions.login(tenant, username, password, address)
    except TooManyAttempts as exc:
        minutes = (exc.retry_after_s + 59) // 60
        msg = _(
            "Too many failed logins: this login is locked for %(minutes)s more minutes. "
            "Other operators can still log in."
        ) % {"minutes": minutes}
        ctx = {"error": msg, "tenant": tenant}
        return render(request, svc, "login.html", ctx, status=exc.status)
    except Unauthorized as exc:
        msg = _("Unknown property group, user or password.")
        return render(
            request, svc, "login.html", {"error": msg, "tenant": tenant}, status=exc.status
        )
    resp = RedirectResponse("/console/", status_code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=secure_cookie(request, svc.secure_cookies),
        max_age=svc.sessions.max_age_s,
        path="/",
    )
    return resp


@router.post("/logout")
async def logout(request: Request, svc: ServicesDep) -> Response:
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    if token := session_token(request):
        await svc.sessions.logout(token)
    resp = RedirectResponse("/console/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/password")
async def password_page(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return render(request, svc, "password.html", {"who": who, "error": None})


@router.post("/password")
async def change_password(
    request: Request,
    svc: ServicesDep,
    current: Annotated[str, Form(max_length=256)],
    new: Annotated[str, Form(max_length=256)],
    again: Annotated[str, Form(max_length=256)],
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    error = None
    if new != again:
        error = _("The two new passwords differ.")
    else:
        try:
            await svc.sessions.change_password(who, current, new)
        except DomainError as exc:
            error = explain(exc)
    if error:
        return render(request, svc, "password.html", {"who": who, "error": error}, status=422)
    resp = RedirectResponse("/console/login?changed=1", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/")
async def monitor(
    request: Request,
    svc: ServicesDep,
    q: Annotated[str, Query(max_length=100)] = "",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    export: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    points = await queries.service_points(svc.db, who.tenant_id, who)
    if q:
        needle = q.casefold()
        points = [p for p in points if needle in p.name.casefold() or needle in p.account_number]
    if export == "xlsx":
        headers = [
            _("Service point"),
            _("Account"),
            _("Balance (¥)"),
            _("Supply"),
            _("Last reading"),
            _("Read at"),
        ]
        rows = (
            [
                p.name,
                p.account_number,
                p.balance,
                p.reported or "",
                p.last_total,
                when(p.last_reading_at, p.site_timezone),
            ]
            for p in points[: lists.EXPORT_LIMIT]
        )
        return lists.xlsx("service-points.xlsx", headers, rows)
    page = lists.page_of(offset, len(points))
    shown = points[page.offset : page.offset + page.limit]
    ctx = {"who": who, "points": shown, "page": page, "q": q}
    return render(request, svc, "service_points.html", ctx, section="monitor")


PLACEHOLDERS = {
    "control": (
        N_("Control"),
        N_(
            "Batch control by building and floor comes with the site operations issue; "
            "a single point is controlled from its page in Monitor."
        ),
    ),
    "work-orders": (N_("Work orders"), N_("Work orders come with the field work issue.")),
    "finance": (
        N_("Finance"),
        N_("Finance HQ (reconciliation, handovers, settlement) comes with the finance issue."),
    ),
}


async def _placeholder(page: str, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    title, text = PLACEHOLDERS[page]
    section = "work" if page == "work-orders" else page
    ctx = {"who": who, "title": _(title), "message": _(text)}
    return render(request, svc, "placeholder.html", ctx, section=section)


def _placeholder_route(page: str) -> None:
    async def show(request: Request, svc: ServicesDep) -> Response:
        return await _placeholder(page, request, svc)

    router.add_api_route(f"/{page}", show, methods=["GET"], name=f"placeholder-{page}")


for _name in PLACEHOLDERS:
    _placeholder_route(_name)


async def _page(
    request: Request,
    svc: ServicesDep,
    who: Principal,
    point_id: uuid.UUID,
    message: str = "",
    refused: bool = False,
    status: int = 200,
    grain: Grain = Grain.DAY,
    day: date | None = None,
) -> Response:
    now = datetime.now(UTC)
    view = await control_view(svc.db, who, point_id, now)
    zone = (await queries.service_point(svc.db, who.tenant_id, point_id, who)).site_timezone
    usage = await point_consumption(svc.db, who, point_id, grain, day, now)
    record = await point_record(svc.db, who, point_id)
    ctx = {
        "v": view,
        "who": who,
        "message": message,
        "refused": refused,
        "zone": zone,
        "usage": usage,
        "record": record,
        "chart": consumption_chart(usage),
        "unit": "m³" if usage.utility == "water" else "kWh",
        "grains": GRAINS,
        "steps": chart_steps(usage),
    }
    return render(request, svc, "point_control.html", ctx, status=status, section="monitor")


@router.get("/points/{point_id}")
async def point_control(
    point_id: uuid.UUID,
    request: Request,
    svc: ServicesDep,
    grain: Annotated[str, Query(max_length=8)] = "day",
    day: Annotated[str, Query(max_length=10)] = "",
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    try:
        chosen, on = Grain(grain), lists.day_param(day)
    except ValueError:
        msg = _(
            "Choose the chart by hour, day or month, and give the day as year-month-day, "
            "e.g. 2026-12-01, between 2000 and 2099."
        )
        ctx = {"who": who, "message": msg, "refused": True}
        return render(request, svc, "message.html", ctx, status=422, section="monitor")
    return await _page(request, svc, who, point_id, grain=chosen, day=on)


@router.post("/points/{point_id}/control")
async def point_control_action(
    point_id: uuid.UUID,
    request: Request,
    svc: ServicesDep,
    action: Annotated[ControlAction, Form()],
    reason: Annotated[str, Form(max_length=500)],
    override: Annotated[bool, Form()] = False,
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    if (bad := await refused_csrf(request, svc)) is not None:
        return bad
    if has_control(reason, lines=True):
        msg = _("The reason cannot hold control characters.")
        return await _page(request, svc, who, point_id, msg, True, 422)
    req = ControlRequest(action, reason, override)
    try:
        done = await operate_point(svc.db, who, point_id, req, datetime.now(UTC), svc.timing)
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await _page(request, svc, who, point_id, explain(exc), True, exc.status)
    return await _page(request, svc, who, point_id, _(done.message))
