"""The operators' console: server-rendered pages (login, service points)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from cloud.api import queries
from cloud.api.deps import SESSION_COOKIE, ServicesDep, operator
from cloud.errors import Unauthorized

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"error": None})


@router.post("/login")
async def login(
    request: Request,
    svc: ServicesDep,
    tenant: Annotated[str, Form()],
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
) -> Response:
    try:
        token = await svc.sessions.login(tenant, username, password)
    except Unauthorized as exc:
        return templates.TemplateResponse(
            request, "login.html", {"error": str(exc), "tenant": tenant}, status_code=401
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
