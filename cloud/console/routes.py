"""The operators' console: server-rendered pages (login, service points, a point's control:
the pre-disconnection check, twin, commands, events, and the trip/restore/keep-power form)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from cloud.api import queries
from cloud.api.deps import SESSION_COOKIE, ServicesDep, operator
from cloud.api.fields import has_control
from cloud.auth import Principal
from cloud.control.operator import ControlAction, ControlRequest, control_view, operate_point
from cloud.errors import DomainError, TooManyAttempts, Unauthorized

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"error": None})


@router.post("/login")
async def login(
    request: Request,
    svc: ServicesDep,
    tenant: Annotated[str, Form(max_length=64)],
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
) -> Response:
    if any(has_control(v) for v in (tenant, username, password)):
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": "property group, user and password cannot hold control characters"},
            status_code=422,
        )
    address = request.client.host if request.client else None
    try:
        token = await svc.sessions.login(tenant, username, password, address)
    except (Unauthorized, TooManyAttempts) as exc:
        return templates.TemplateResponse(
            request, "login.html", {"error": str(exc), "tenant": tenant}, status_code=exc.status
        )
    resp = RedirectResponse("/console/", status_code=303)
    resp.set_cookie(
        SESSION_COOKIE, token, httponly=True, samesite="lax", max_age=svc.sessions.max_age_s
    )
    return resp


@router.post("/logout")
async def logout() -> Response:
    resp = RedirectResponse("/console/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


@router.get("/", response_class=HTMLResponse)
async def service_points(request: Request, svc: ServicesDep) -> Response:
    try:
        who = await operator(request, svc)
    except Unauthorized:
        return RedirectResponse("/console/login", status_code=303)
    points = await queries.service_points(svc.db, who.tenant_id)
    return templates.TemplateResponse(
        request, "service_points.html", {"points": points, "who": who}
    )


async def _page(
    request: Request,
    svc: ServicesDep,
    who: Principal,
    point_id: uuid.UUID,
    message: str = "",
    refused: bool = False,
    status: int = 200,
) -> Response:
    view = await control_view(svc.db, who, point_id, datetime.now(UTC))
    ctx = {"v": view, "who": who, "message": message, "refused": refused}
    return templates.TemplateResponse(request, "point_control.html", ctx, status_code=status)


@router.get("/points/{point_id}", response_class=HTMLResponse)
async def point_control(point_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    try:
        who = await operator(request, svc)
    except Unauthorized:
        return RedirectResponse("/console/login", status_code=303)
    return await _page(request, svc, who, point_id)


@router.post("/points/{point_id}/control", response_class=HTMLResponse)
async def point_control_action(
    point_id: uuid.UUID,
    request: Request,
    svc: ServicesDep,
    action: Annotated[ControlAction, Form()],
    reason: Annotated[str, Form(max_length=500)],
    override: Annotated[bool, Form()] = False,
) -> Response:
    try:
        who = await operator(request, svc)
    except Unauthorized:
        return RedirectResponse("/console/login", status_code=303)
    if has_control(reason, lines=True):
        msg = "the reason cannot hold control characters"
        return await _page(request, svc, who, point_id, msg, True, 422)
    req = ControlRequest(action, reason, override)
    try:
        done = await operate_point(svc.db, who, point_id, req, datetime.now(UTC), svc.timing)
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await _page(request, svc, who, point_id, str(exc), True, exc.status)
    return await _page(request, svc, who, point_id, done.message)
