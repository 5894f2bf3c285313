"""公摊 in the console: which points share which common meter and by what (floor area or
their consumption), a month's allocation previewed (each point's share, nothing written)
and posted (one entry per meter and month: posting again changes nothing). ``prepay
worker`` posts each month's by itself once the month has ended."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from cloud.api.deps import Services, ServicesDep
from cloud.auth import Principal
from cloud.common_area import groups as ca
from cloud.common_area.core import AllocationError, Basis
from cloud.common_area.service import Allocation
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import render, signed_form, signed_in
from cloud.console.refusals import explain
from cloud.errors import DomainError
from cloud.registry.scope import sites_of

router = APIRouter(prefix="/console/common-area", include_in_schema=False)

#: The allocation service's refusals, in the operator's words.
ALLOCATION = {
    "a member point has no floor area": N_(
        "A point sharing by floor area has no floor area: set it on the point first."
    ),
    "nothing to share by: every weight is zero": N_(
        "Nothing to share by: the points used nothing this month (or have no floor area)."
    ),
}
BASES = ((Basis.AREA.value, N_("by floor area")), (Basis.CONSUMPTION.value, N_("by consumption")))


class FormError(ValueError):
    pass


_POINTS = """
SELECT sp.id, sp.name, sp.site_id, sp.floor_area, sp.common_area, a.number AS account,
       s.name AS site
FROM service_point sp JOIN account a ON a.id = sp.account_id JOIN site s ON s.id = sp.site_id
WHERE a.status <> 'closed'
  AND (CAST(:sites AS uuid[]) IS NULL OR sp.site_id = ANY(CAST(:sites AS uuid[])))
ORDER BY s.name, sp.name LIMIT 5000
"""


async def _points(svc: Services, who: Principal) -> list[Any]:
    async with svc.db.tenant(who.tenant_id) as conn:
        scope = await sites_of(conn, who)
        return list((await conn.execute(sa.text(_POINTS), {"sites": scope})).all())


def _month(text: str, now: datetime, zone: str) -> str:
    month = text.strip() or ca.previous_month(now, zone)
    try:
        ca.month_span(month, zone)
    except ValueError:
        raise FormError(_("Give the month as year-month, e.g. 2026-11.")) from None
    return month


def _refusal(exc: Exception) -> str:
    if isinstance(exc, DomainError):
        return explain(exc)
    text = str(exc)
    return _(ALLOCATION[text]) if text in ALLOCATION else _("Cannot share: %(why)s") % {"why": text}


async def _list_page(
    request: Request, svc: Services, who: Principal, *, error: str | None = None,
    values: dict[str, Any] | None = None, status: int = 200,
) -> Response:  # fmt: skip
    found = await ca.groups(svc.db, who)
    points = await _points(svc, who)
    names = {p.id: p.name for p in points}
    ctx = {
        "who": who, "groups": found, "points": points, "names": names, "bases": BASES,
        "error": error, "v": values or {},
    }  # fmt: skip
    return render(request, svc, "common_area.html", ctx, status=status, section="settings")


@router.get("")
async def list_page(request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _list_page(request, svc, who)


def _uuid(text: object, message: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(text))
    except ValueError:
        raise FormError(message) from None


@router.post("")
async def save(request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    values = {"common": str(form.get("common", "")), "basis": str(form.get("basis", "")),
              "members": [str(m) for m in form.getlist("members")]}  # fmt: skip
    try:
        common = _uuid(form.get("common"), _("Choose the common meter."))
        basis_text = str(form.get("basis", ""))
        if basis_text not in {b for b, _label in BASES}:
            raise FormError(_("Choose how it is shared: by floor area or by consumption."))
        members = [_uuid(m, _("Choose the points that share it.")) for m in form.getlist("members")]
        if not members:
            raise FormError(_("Choose the points that share it."))
        group_id = await ca.save_group(
            svc.db, who, common, members, Basis(basis_text), datetime.now(UTC),
            monthly=form.get("monthly") == "1",
        )  # fmt: skip
    except FormError as exc:
        return await _list_page(request, svc, who, error=str(exc), values=values, status=422)
    except DomainError as exc:
        return await _list_page(
            request, svc, who, error=explain(exc), values=values, status=exc.status
        )
    return RedirectResponse(f"/console/common-area/{group_id}?done=saved", status_code=303)


async def _group_page(
    request: Request, svc: Services, who: Principal, group_id: uuid.UUID, month_text: str,
    *, error: str | None = None, done: str | None = None, status: int = 200,
) -> Response:  # fmt: skip
    g = await ca.group(svc.db, who, group_id)
    now = datetime.now(UTC)
    points = {p.id: p for p in await _points(svc, who)}
    preview: Allocation | None = None
    month = ca.previous_month(now, g.timezone)
    try:
        month = _month(month_text, now, g.timezone)
        preview = await ca.allocate_month(svc.db, who, g.id, month, now, dry_run=True)
    except FormError as exc:
        error = error or str(exc)
        status = 422 if status == 200 else status
    except (AllocationError, DomainError) as exc:
        error = error or _refusal(exc)
    ctx = {
        "who": who, "g": g, "points": points, "month": month, "preview": preview,
        "error": error, "done": done, "bases": dict(BASES),
        "can_post": ca.PERMISSION in who.permissions,
    }  # fmt: skip
    return render(request, svc, "common_area_group.html", ctx, status=status, section="settings")


DONE = {
    "saved": N_("Saved: these points share the common meter from now on."),
    "posted": N_("Posted: each point's share is on its account statement."),
}


@router.get("/{group_id}")
async def group_page(
    group_id: uuid.UUID, request: Request, svc: ServicesDep,
    month: Annotated[str, Query(max_length=7)] = "",
) -> Response:  # fmt: skip
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    done = request.query_params.get("done", "")
    return await _group_page(
        request, svc, who, group_id, month, done=_(DONE[done]) if done in DONE else None
    )


@router.post("/{group_id}/post")
async def post(group_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    text = str(form.get("month", ""))[:7]
    try:
        g = await ca.group(svc.db, who, group_id)
        month = _month(text, datetime.now(UTC), g.timezone)
        await ca.allocate_month(svc.db, who, group_id, month, datetime.now(UTC), dry_run=False)
    except FormError as exc:
        return await _group_page(request, svc, who, group_id, "", error=str(exc), status=422)
    except (AllocationError, DomainError) as exc:
        if isinstance(exc, DomainError) and exc.status == 404:
            raise
        code = exc.status if isinstance(exc, DomainError) else 422
        return await _group_page(
            request, svc, who, group_id, text, error=_refusal(exc), status=code
        )
    return RedirectResponse(
        f"/console/common-area/{group_id}?month={month}&done=posted", status_code=303
    )
