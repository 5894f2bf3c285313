"""Meter books in the console (外勤 → 表册): make a book at a site, put the site's points
on its route in order, assign field workers, open a reading cycle. Routes stay thin: the
rules are :mod:`cloud.field.books`'."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cloud.api.deps import Services, ServicesDep
from cloud.auth import Principal
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import render, signed_form, signed_in
from cloud.console.refusals import explain
from cloud.errors import DomainError, Invalid
from cloud.field import books
from cloud.registry import admin

router = APIRouter(prefix="/console/field", include_in_schema=False)

DONE = {
    "route": N_("Route saved."),
    "assigned": N_("Field worker assigned."),
    "cycle": N_("Reading cycle opened."),
}
BOOK_MESSAGES = (
    N_("a meter book needs a code (up to 40 characters) and a name"),
    N_("a point appears twice on the route"),
    N_("permission 'field.books' required"),
)


async def _list_page(
    request: Request, svc: Services, who: Principal, error: str | None = None, status: int = 200,
    form: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    ctx: dict[str, Any] = {
        "who": who,
        "books": await books.list_books(svc.db, who),
        "sites": await admin.list_sites(svc.db, who),
        "error": error,
        "form": form or {},
    }
    return render(request, svc, "field_books.html", ctx, status=status, section="work")


@router.get("/books")
async def books_page(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _list_page(request, svc, who)


@router.post("/books")
async def book_create(request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    values = {k: str(form.get(k) or "")[:200] for k in ("site_id", "code", "name")}
    try:
        site = _uuid(values["site_id"])
        book = await books.create_book(
            svc.db, who, site, values["code"], values["name"], datetime.now(UTC)
        )
    except DomainError as exc:
        return await _list_page(request, svc, who, explain(exc), exc.status, values)
    return RedirectResponse(f"/console/field/books/{book}", status_code=303)


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise Invalid(N_("choose from the list")) from None


async def _book_page(
    request: Request, svc: Services, who: Principal, book_id: uuid.UUID,
    error: str | None = None, status: int = 200,
) -> Response:  # fmt: skip
    detail = await books.book_detail(svc.db, who, book_id)
    done = request.query_params.get("done", "")
    ctx = {
        "who": who,
        "d": detail,
        "error": error,
        "done": _(DONE[done]) if done in DONE else None,
        "today": datetime.now(UTC).date().isoformat(),
    }
    return render(request, svc, "field_book.html", ctx, status=status, section="work")


@router.get("/books/{book_id}")
async def book_page(book_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _book_page(request, svc, who, book_id)


async def _act(request: Request, svc: ServicesDep, book_id: uuid.UUID, action: str) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    now = datetime.now(UTC)
    try:
        if action == "route":
            placed = []
            for key, value in form.multi_items():
                if key.startswith("pos-") and str(value).strip():
                    text = str(value).strip()
                    if not text.isdigit() or len(text) > 5:
                        raise Invalid(N_("a place on the route is a whole number"))
                    placed.append((int(text), _uuid(key[4:])))
            route = [p for _, p in sorted(placed, key=lambda x: x[0])]
            await books.set_route(svc.db, who, book_id, route, now)
        elif action == "assigned":
            await books.assign(svc.db, who, book_id, _uuid(str(form.get("operator_id"))), now)
        else:
            starts = str(form.get("starts_on") or "")[:10]
            try:
                day = date.fromisoformat(starts)
            except ValueError:
                raise Invalid(N_("give the day the cycle starts")) from None
            await books.open_cycle(svc.db, who, book_id, day, now)
    except DomainError as exc:
        if exc.status == 404 and action != "route":
            raise
        return await _book_page(request, svc, who, book_id, explain(exc), exc.status)
    return RedirectResponse(f"/console/field/books/{book_id}?done={action}", status_code=303)


@router.post("/books/{book_id}/route")
async def book_route(book_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    return await _act(request, svc, book_id, "route")


@router.post("/books/{book_id}/workers")
async def book_assign(book_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    return await _act(request, svc, book_id, "assigned")


@router.post("/books/{book_id}/cycles")
async def book_cycle(book_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    return await _act(request, svc, book_id, "cycle")
