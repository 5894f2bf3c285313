"""Notification settings in the console: a site's quiet hours, gateway-offline minutes,
hourly limit and the staff told of staff events (设置 → 站点 → 通知设置), and a
customer's channels, language and muted kinds (from the customer's messages page)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cloud.api.deps import Services, ServicesDep
from cloud.auth import Principal
from cloud.console.delivery import WORDS, kind_title
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import render, signed_form, signed_in
from cloud.console.refusals import explain
from cloud.errors import DomainError, Invalid
from cloud.lifecycle import accounts
from cloud.notify import settings as ns
from cloud.notify.outbox import STAFF_KINDS

router = APIRouter(prefix="/console", include_in_schema=False)

DONE = {
    "saved": N_("Notification settings saved."),
    "staff": N_("Staff member added."),
    "removed": N_("Staff member removed."),
    "preference": N_("The customer's choice is saved."),
}


def _clock(text: str) -> time | None:
    text = text.strip()
    if not text:
        return None
    try:
        return time.fromisoformat(text).replace(second=0, microsecond=0)
    except ValueError:
        raise Invalid(N_("Give the times as hours:minutes, e.g. 22:00.")) from None


def _number(text: str, what: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 5:
        raise Invalid(what)
    return int(text)


async def _site_page(
    request: Request,
    svc: Services,
    who: Principal,
    site_id: uuid.UUID,
    error: str | None = None,
    status: int = 200,
    values: dict[str, Any] | None = None,
    staff_values: dict[str, Any] | None = None,
) -> Response:
    s = await ns.site_notify(svc.db, who, site_id)
    done = request.query_params.get("done", "")
    v = values or {
        "quiet_start": s.quiet_start.strftime("%H:%M") if s.quiet_start else "",
        "quiet_end": s.quiet_end.strftime("%H:%M") if s.quiet_end else "",
        "gateway_offline_minutes": str(s.gateway_offline_minutes),
        "hourly_limit": str(s.hourly_limit),
    }
    ctx = {
        "who": who,
        "s": s,
        "v": v,
        "sv": staff_values or {"language": "zh_CN", "kinds": list(STAFF_KINDS)},
        "error": error,
        "done": _(DONE[done]) if done in DONE else None,
        "staff_kinds": STAFF_KINDS,
        "kind_title": kind_title,
        **WORDS,
    }
    return render(request, svc, "settings_notify.html", ctx, status=status, section="settings")


@router.get("/settings/sites/{site_id}/notifications")
async def site_notify_page(site_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    return await _site_page(request, svc, who, site_id)


@router.post("/settings/sites/{site_id}/notifications")
async def site_notify_save(site_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    values = {k: str(form.get(k) or "")[:10] for k in (
        "quiet_start", "quiet_end", "gateway_offline_minutes", "hourly_limit")}  # fmt: skip
    try:
        draft = ns.SiteNotifyDraft(
            _clock(values["quiet_start"]),
            _clock(values["quiet_end"]),
            _number(values["gateway_offline_minutes"], ns.OFFLINE_RANGE),
            _number(values["hourly_limit"], ns.LIMIT_RANGE),
        )
        await ns.save_site_notify(svc.db, who, site_id, draft, datetime.now(UTC))
    except DomainError as exc:
        if exc.status == 404:
            raise
        return await _site_page(request, svc, who, site_id, explain(exc), exc.status, values)
    where = f"/console/settings/sites/{site_id}/notifications?done=saved"
    return RedirectResponse(where, status_code=303)


@router.post("/settings/sites/{site_id}/notifications/staff")
async def staff_add(site_id: uuid.UUID, request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    draft = ns.StaffDraft(
        str(form.get("name") or "")[:200],
        str(form.get("phone") or "")[:40],
        "sms",
        str(form.get("language") or "zh_CN")[:8],
        tuple(str(k)[:40] for k in form.getlist("kinds")),
    )
    try:
        await ns.add_staff(svc.db, who, site_id, draft, datetime.now(UTC))
    except DomainError as exc:
        if exc.status == 404:
            raise
        typed = {"name": draft.name, "phone": draft.phone, "language": draft.language,
                 "kinds": list(draft.kinds)}  # fmt: skip
        return await _site_page(
            request, svc, who, site_id, explain(exc), exc.status, staff_values=typed
        )
    where = f"/console/settings/sites/{site_id}/notifications?done=staff"
    return RedirectResponse(where, status_code=303)


@router.post("/settings/sites/{site_id}/notifications/staff/{staff_id}/remove")
async def staff_remove(
    site_id: uuid.UUID, staff_id: uuid.UUID, request: Request, svc: ServicesDep
) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, _form_data = got
    await ns.remove_staff(svc.db, who, site_id, staff_id, datetime.now(UTC))
    where = f"/console/settings/sites/{site_id}/notifications?done=removed"
    return RedirectResponse(where, status_code=303)


@router.post("/accounts/{number}/notifications/preference")
async def preference_save(number: str, request: Request, svc: ServicesDep) -> Response:
    got = await signed_form(request, svc)
    if isinstance(got, Response):
        return got
    who, form = got
    page = await accounts.account_page(svc.db, who, number[:20])  # (scope, 404)
    channel = str(form.get("channel") or "")[:10]
    channels = {"sms": ("sms",), "wechat": ("wechat", "sms"), "none": ()}.get(channel)
    where = f"/console/accounts/{page.number}/notifications"
    try:
        if channels is None:
            raise Invalid("Choose the channels from the list.")
        pref = ns.Preference(
            channels,
            str(form.get("language") or "")[:8],
            tuple(str(k)[:40] for k in form.getlist("muted")),
            True,
        )
        await ns.save_preference(svc.db, who, page.customer_id, pref, datetime.now(UTC))
    except DomainError as exc:
        if exc.status == 404:
            raise
        ctx = {"who": who, "message": explain(exc), "refused": True}
        return render(request, svc, "message.html", ctx, status=exc.status, section="accounts")
    return RedirectResponse(f"{where}?done=preference", status_code=303)
