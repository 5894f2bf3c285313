"""The console's 催费 (dunning) page, under 营业: the accounts in arrears by site, building
or floor with what each owes and for how many days, exported to Excel, and the dunning
notices (催费通知单) of the list or of a selection as one PDF, a page per customer."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from cloud.api.deps import Services, ServicesDep
from cloud.auth import Principal
from cloud.console import forms, lists
from cloud.console.delivery import WORDS
from cloud.console.format import when
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import render, signed_form, signed_in
from cloud.console.refusals import explain
from cloud.documents import dunning as notices
from cloud.dunning.arrears import ArrearsQuery, every_arrears, list_arrears
from cloud.dunning.remind import REMIND_MAX, remind, sending
from cloud.errors import DomainError, Invalid
from cloud.registry import admin

router = APIRouter(prefix="/console/arrears", include_in_schema=False)
#: At most this many notices in one PDF (a print run; narrow the list for more).
NOTICES_MAX = 2_000

Text = Annotated[str, Query(max_length=64)]


def _id(text: str) -> uuid.UUID | None:
    """A filter's id: empty is "all"; anything else must be an id (Invalid otherwise)."""
    if not text.strip():
        return None
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise Invalid(N_("Choose the site and the building from their lists.")) from None


def _query(site: str, building: str, floor: str, q: str, days: int, **page: Any) -> ArrearsQuery:
    return ArrearsQuery(
        site_id=_id(site),
        building_id=_id(building),
        floor=floor.strip() or None,
        q=q.strip() or None,
        min_days=days,
        **page,
    )


async def _places(svc: Services, who: Principal) -> tuple[list[Any], list[Any]]:
    """The sites and buildings the operator sees, for the filters."""
    sites = await admin.list_sites(svc.db, who)
    buildings = [(s, b) for s in sites for b in await admin.list_buildings(svc.db, who, s.id)]
    return sites, buildings


@router.get("")
async def arrears_page(
    request: Request,
    svc: ServicesDep,
    site: Text = "",
    building: Text = "",
    floor: Text = "",
    q: Text = "",
    days: Annotated[int, Query(ge=0, le=36_500)] = 0,
    offset: lists.Offset = 0,
    export: lists.Export = "",
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    now = datetime.now(UTC)
    try:
        query = _query(site, building, floor, q, days)
    except Invalid as exc:
        ctx = {"who": who, "message": explain(exc), "refused": True}
        return render(request, svc, "message.html", ctx, status=422, section="accounts")
    if export == "xlsx":
        rows = await every_arrears(svc.db, who, query, now, lists.EXPORT_LIMIT)
        headers = [
            _("Account"), _("Customer"), _("Phone"), _("Site"), _("Premises"),
            _("Service points"), _("Owed (¥)"), _("In arrears since"), _("Days in arrears"),
        ]  # fmt: skip
        table = [
            [
                r.account_number, r.customer, r.phone or "", r.site, r.premises, r.points,
                r.owed, when(r.since, r.timezone), r.days,
            ]
            for r in rows
        ]  # fmt: skip
        return lists.xlsx("arrears.xlsx", headers, table)
    paged = replace(query, offset=offset)
    found = await list_arrears(svc.db, who, paged, now)
    sites, buildings = await _places(svc, who)
    filters = {
        "site": str(query.site_id or ""),
        "building": str(query.building_id or ""),
        "floor": floor,
        "q": q,
        "days": str(days),
    }
    ctx = {
        "who": who,
        "found": found,
        "page": lists.page_of(offset, found.total),
        "filters": filters,
        "keep": urlencode(filters),
        "sites": sites,
        "buildings": buildings,
        "notices_max": NOTICES_MAX,
    }
    return render(request, svc, "arrears.html", ctx, section="accounts")


@router.get("/notices.pdf")
async def notices_pdf(
    request: Request,
    svc: ServicesDep,
    site: Text = "",
    building: Text = "",
    floor: Text = "",
    q: Text = "",
    days: Annotated[int, Query(ge=0, le=36_500)] = 0,
    account: Annotated[list[str] | None, Query(max_length=NOTICES_MAX)] = None,
) -> Response:
    """The notices of the ticked accounts, or of the whole list as filtered."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    now = datetime.now(UTC)
    try:
        query = _query(site, building, floor, q, days)
        if account:
            query = ArrearsQuery(account_ids=_accounts(account))
    except (Invalid, ValueError):
        message = _("Choose the accounts from the arrears list.")
        return render(request, svc, "message.html", {"who": who, "message": message}, status=422)
    rows = await every_arrears(svc.db, who, query, now, NOTICES_MAX)
    if not rows:
        message = _("No account in this list is in arrears: there is no notice to print.")
        return render(request, svc, "message.html", {"who": who, "message": message}, status=404)
    async with svc.db.tenant(who.tenant_id) as conn:
        group = await conn.scalar(
            sa.text("SELECT name FROM tenant WHERE id = :t"), {"t": who.tenant_id}
        )
        outlets = await conn.execute(sa.text("SELECT site_id, name FROM outlet ORDER BY name"))
        by_site: dict[uuid.UUID, list[str]] = {}
        for o in outlets:
            by_site.setdefault(o.site_id, []).append(o.name)
    fields = [
        notices.notice_fields(str(group or ""), r, by_site.get(r.site_id, []), now) for r in rows
    ]
    pdf = notices.notices_pdf(fields)
    stamp = now.strftime("%Y%m%d")
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="dunning-{stamp}.pdf"'},
    )


# -- 催费 reminders to a selection, through the notification outbox ---------------------------


def _accounts(values: list[str]) -> tuple[uuid.UUID, ...]:
    try:
        return tuple(dict.fromkeys(uuid.UUID(a[:64]) for a in values))
    except ValueError:
        raise Invalid(N_("Choose the accounts from the arrears list.")) from None


@router.get("/remind")
async def remind_confirm(
    request: Request,
    svc: ServicesDep,
    account: Annotated[list[str] | None, Query(max_length=REMIND_MAX)] = None,
) -> Response:
    """The ticked accounts as they stand now, and the button that sends them a reminder."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    try:
        ids = _accounts(account or [])
        if not ids:
            raise Invalid(N_("Tick the accounts to remind in the arrears list first."))
        who.require("dunning.send")
    except DomainError as exc:
        ctx = {"who": who, "message": explain(exc), "refused": True}
        return render(request, svc, "message.html", ctx, status=exc.status, section="accounts")
    rows = await every_arrears(
        svc.db, who, ArrearsQuery(account_ids=ids), datetime.now(UTC), REMIND_MAX
    )
    ctx = {"who": who, "rows": rows, "form_key": forms.new_key(), "chosen": len(ids)}
    return render(request, svc, "arrears_remind.html", ctx, section="accounts")


@router.post("/remind")
async def remind_send(request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    key = str(form.get("form_key") or "")[:64]
    now = datetime.now(UTC)
    try:
        ids = _accounts([v for v in form.getlist("account") if isinstance(v, str)])
        if not key:
            raise Invalid(N_("This form has expired. Reload the page and try again."))
        claim = await forms.claim(svc.db, who, key, now)
        if not claim.first:
            return RedirectResponse(claim.result or f"/console/arrears/sent/{key}", 303)
        try:
            await remind(svc.db, who, ids, key, now)
        except DomainError:
            await forms.release(svc.db, who, key)
            raise
    except DomainError as exc:
        ctx = {"who": who, "message": explain(exc), "refused": True}
        return render(request, svc, "message.html", ctx, status=exc.status, section="accounts")
    where = f"/console/arrears/sent/{key}"
    await forms.finish(svc.db, who, key, where)
    return RedirectResponse(where, status_code=303)


@router.get("/sent/{batch}")
async def remind_sent(
    batch: Annotated[str, Path(max_length=64, pattern="^[0-9a-f]+$")],
    request: Request,
    svc: ServicesDep,
) -> Response:
    """One sending's reminders, account by account, with what became of each."""
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    rows = await sending(svc.db, who, batch)
    if not rows:
        message = _("No reminder of this sending was found.")
        return render(request, svc, "message.html", {"who": who, "message": message}, status=404)
    ctx = {"who": who, "rows": rows, **WORDS}
    return render(request, svc, "arrears_sent.html", ctx, section="accounts")
