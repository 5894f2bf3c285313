"""The FastAPI application factory (nothing is built at import time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

from cloud.api.admin_routes import router as admin_router
from cloud.api.deps import Services
from cloud.api.fields import in_words
from cloud.api.import_routes import router as import_router
from cloud.api.lifecycle_routes import router as lifecycle_router
from cloud.api.problems import with_problem_422
from cloud.api.routes import router as api_router
from cloud.api.sales_routes import router as sales_router
from cloud.api.tariff_routes import router as tariff_router
from cloud.console.common_area import router as common_area_router
from cloud.console.delivery import router as delivery_router
from cloud.console.dunning import router as dunning_router
from cloud.console.field import router as field_router
from cloud.console.field_books import router as field_books_router
from cloud.console.gateways import router as gateways_router
from cloud.console.i18n import gettext as _
from cloud.console.imports import router as imports_router
from cloud.console.installer import gateway_router as installer_gateway_router
from cloud.console.installer import router as installer_router
from cloud.console.monitor import router as monitor_router
from cloud.console.notify_settings import router as notify_settings_router
from cloud.console.office import router as office_router
from cloud.console.pages import LocaleMiddleware, render
from cloud.console.readings import router as readings_router
from cloud.console.reconcile import router as reconcile_router
from cloud.console.refusals import explain
from cloud.console.reports import router as reports_router
from cloud.console.routes import router as console_router
from cloud.console.security import SecurityHeaders
from cloud.console.settings import router as settings_router
from cloud.console.settings_edit import router as settings_edit_router
from cloud.console.statement import router as statement_router
from cloud.errors import DomainError, TooManyAttempts
from miniapp_api import problems as miniapp_problems
from miniapp_api.h5 import router as h5_router
from miniapp_api.routes import router as miniapp_router
from notifications.callbacks import router as notify_callbacks

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class _App(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = with_problem_422(super().openapi())
        return self.openapi_schema


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path (Starlette's 405 names only
    the first route's, when GET and POST of one path are two routes)."""
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    return [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


_NAMES: dict[int, list[str]] = {}  # a route's query parameter names (routes live forever)


async def each_once(request: Request) -> None:
    """A query parameter of the route given more than once is a 422 naming it (Starlette
    would take the last and ignore the others, which the client may not mean)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.scope.get("query_string"):
        return
    names = _NAMES.get(id(dependant))
    if names is None:
        names = _NAMES[id(dependant)] = sorted(_query_names(dependant))
    errors = [
        {
            "type": "repeated",
            "loc": ["query", name],
            "msg": "must be given at most once",
            "input": given,
        }
        for name in names
        if len(given := request.query_params.getlist(name)) > 1
    ]
    if errors:
        raise RequestValidationError(errors)


def create_app(services: Services, tenant_app_only: bool = False) -> FastAPI:
    """The API and the console; ``tenant_app_only`` (``prepay miniapp``): the tenant app
    alone — /miniapp/v1 and the H5 pages — to run and scale apart from the console."""
    title = "PrepayCloud tenant app API" if tenant_app_only else "PrepayCloud API"
    app = _App(title=title, version="0.1.0")
    app.state.services = services
    once = [Depends(each_once)]  # (none of the API's query parameters is a list)
    if not tenant_app_only:
        _operators(app, once)
    app.include_router(miniapp_router, dependencies=once)
    app.include_router(h5_router)
    static = Path(__file__).parent.parent / "console" / "static"
    app.mount("/console/static", StaticFiles(directory=static), name="console-static")
    app.add_middleware(LocaleMiddleware)
    app.add_middleware(SecurityHeaders)
    _handlers(app, services)
    home = "/h5/" if tenant_app_only else "/console/"

    @app.get("/", include_in_schema=False)
    async def _root() -> Response:
        return RedirectResponse(home)

    @app.get("/healthz", include_in_schema=False)
    async def _health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    async def _metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _operators(app: FastAPI, once: list[Any]) -> None:
    """The operators' REST API and the console."""
    app.include_router(api_router, dependencies=once)
    app.include_router(lifecycle_router, dependencies=once)
    app.include_router(sales_router, dependencies=once)
    app.include_router(admin_router, dependencies=once)
    app.include_router(import_router, dependencies=once)
    app.include_router(tariff_router, dependencies=once)
    app.include_router(office_router)
    app.include_router(gateways_router)
    app.include_router(common_area_router)
    app.include_router(installer_router)
    app.include_router(installer_gateway_router)
    app.include_router(dunning_router)
    app.include_router(delivery_router)
    app.include_router(reports_router)  # after delivery's /reports/notifications
    app.include_router(notify_settings_router)
    app.include_router(readings_router)
    app.include_router(statement_router)
    app.include_router(field_router)
    app.include_router(field_books_router)
    app.include_router(reconcile_router)
    app.include_router(monitor_router)
    app.include_router(imports_router)
    app.include_router(settings_router)
    app.include_router(settings_edit_router)
    app.include_router(console_router)
    app.include_router(notify_callbacks)


def _handlers(app: FastAPI, services: Services) -> None:
    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> Response:
        if request.url.path.startswith("/console/"):  # a person: a page, in their language
            ctx = {"message": explain(exc), "refused": True}
            return render(request, services, "message.html", ctx, status=exc.status)
        headers = (
            {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, TooManyAttempts) else None
        )
        problem = {"title": type(exc).__name__, "status": exc.status, "detail": str(exc)}
        if request.url.path.startswith(miniapp_problems.PREFIX):  # a tenant's phone
            problem["message"] = miniapp_problems.domain_message(exc)
        return JSONResponse(
            problem,
            status_code=exc.status,
            media_type="application/problem+json",
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/console/"):  # a person: a page, not JSON
            names = sorted({str(e["loc"][-1]) for e in exc.errors() if e.get("loc")})
            message = _(
                "The address holds a value this page cannot use (%(fields)s): go back and "
                "choose it on the page."
            ) % {"fields": ", ".join(names)}
            ctx = {"message": message, "refused": True}
            return render(request, services, "message.html", ctx, status=422)
        errors = [in_words(e) for e in exc.errors()]
        body: dict[str, Any] = {"detail": jsonable_encoder(errors)}
        if request.url.path.startswith(miniapp_problems.PREFIX):
            body["message"] = miniapp_problems.invalid_message(errors)
        return JSONResponse(body, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400:  # a body FastAPI could not read: as invalid JSON is
            error = {"type": "body_unreadable", "loc": ["body"], "msg": str(exc.detail)}
            return JSONResponse({"detail": [error]}, status_code=422)
        if exc.status_code != 405:
            return await http_exception_handler(request, exc)
        allow = ", ".join(allowed_methods(request))
        if request.method == "OPTIONS":  # RFC 9110 §9.3.7: what the resource supports
            return Response(status_code=204, headers={"Allow": f"{allow}, OPTIONS"})
        exc.headers = {**(exc.headers or {}), "Allow": allow}
        return await http_exception_handler(request, exc)
