"""The installer's gateway pages: every gateway in the operator's scope with its presence
and config version, and one gateway's meters — the registered ones and those it reports
that nobody has registered yet (their readings wait in quarantine until 装表)."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from cloud.api.deps import Services, ServicesDep
from cloud.console import lists
from cloud.console.format import when
from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.console.pages import render, signed_in
from cloud.errors import NotFound
from cloud.ingest.service import set_aside, unregistered
from cloud.registry.scope import sites_of

router = APIRouter(prefix="/console/gateways", include_in_schema=False)

_GATEWAYS = """
SELECT g.id, g.code, g.name, g.online, g.last_seen_at, g.config_version, g.config_pushed,
       g.heartbeat_at, g.bus_stats, g.queue_depth, g.site_id,
       s.name AS site, s.timezone,
       (SELECT count(*) FROM device d WHERE d.gateway_id = g.id) AS devices,
       (SELECT count(DISTINCT (q.device, q.channel)) FROM reading_quarantine q
         WHERE q.gateway_id = g.id AND q.reason = 'unknown_channel') AS unregistered
FROM gateway g JOIN site s ON s.id = g.site_id
WHERE CAST(:sites AS uuid[]) IS NULL OR g.site_id = ANY(CAST(:sites AS uuid[]))
ORDER BY s.name, g.code
"""
_DEVICES = """
SELECT d.key, d.profile, d.bus, d.address, d.serial, ch.number AS channel,
       sp.name AS point, a.number AS account
FROM device d JOIN channel ch ON ch.device_id = d.id
LEFT JOIN binding b ON b.channel_id = ch.id AND b.removed_at IS NULL
LEFT JOIN service_point sp ON sp.id = b.service_point_id
LEFT JOIN account a ON a.id = sp.account_id
WHERE d.gateway_id = :g ORDER BY d.bus, d.key, ch.number
"""
# The site's points with no meter installed: where an unregistered meter can go
_FREE_POINTS = """
SELECT sp.id, sp.name, a.number AS account FROM service_point sp
JOIN account a ON a.id = sp.account_id
WHERE sp.site_id = :s AND a.status <> 'closed'
  AND NOT EXISTS (SELECT 1 FROM binding b WHERE b.service_point_id = sp.id AND b.removed_at IS NULL)
ORDER BY sp.name LIMIT 500
"""
EXAMPLE_CONFIG = '{\n  "poll_interval_s": 60,\n  "heartbeat_s": 60\n}'
DONE = {
    "installed": N_("The meter is installed: its kept readings are now its history."),
    "pushed": N_("The config is sent; the gateway reports the version it runs when applied."),
}


@router.get("")
async def gateways(
    request: Request, svc: ServicesDep, export: Annotated[str, Query(max_length=8)] = ""
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    who.require("registry.view")
    async with svc.db.tenant(who.tenant_id) as conn:
        sites = await sites_of(conn, who)
        rows = (await conn.execute(sa.text(_GATEWAYS), {"sites": sites})).all()
    if export == "xlsx":
        rows = lists.exported(request, rows, _gateway_texts)
        headers = [
            _("Gateway"), _("Name"), _("Site"), _("Online"), _("Last seen"), _("Meters"),
            _("Unregistered meters"), _("Config version"),
        ]  # fmt: skip
        table = [
            [
                g.code,
                g.name,
                g.site,
                _("online") if g.online else _("offline"),
                when(g.last_seen_at, g.timezone),
                g.devices,
                g.unregistered,
                g.config_version,
            ]
            for g in rows
        ]
        return lists.xlsx("gateways.xlsx", headers, table)
    found = lists.listed(request, rows, _gateway_texts)
    ctx = {"who": who, "gateways": found.items, "page": found.page, "q": found.q}
    return render(request, svc, "gateways.html", ctx, section="settings")


def _gateway_texts(g: sa.Row[Any]) -> str:
    return f"{g.code} {g.name or ''} {g.site}"


#: Why a registered meter's reading is kept unrated, in the installer's words.
SET_ASIDE = {
    "too_old": N_("measured longer ago than the site takes: the meter's clock may be wrong"),
    "future_timestamp": N_("measured ahead of its arrival: the meter's clock runs fast"),
    "before_installation": N_(
        "measured before the meter was installed on its point (装表 or 过户)"
    ),
    "negative_register": N_("a negative register"),
}


@router.get("/{code}")
async def gateway(code: str, request: Request, svc: ServicesDep) -> Response:
    done = request.query_params.get("done", "")
    return await gateway_view(request, svc, code, done=_(DONE[done]) if done in DONE else None)


async def gateway_view(
    request: Request, svc: Services, code: str, *, error: str | None = None,
    done: str | None = None, config_text: str | None = None, status: int = 200,
) -> Response:  # fmt: skip
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    who.require("registry.view")
    async with svc.db.tenant(who.tenant_id) as conn:
        sites = await sites_of(conn, who)
        rows = (await conn.execute(sa.text(_GATEWAYS), {"sites": sites})).all()
        g = next((r for r in rows if r.code == code[:64]), None)
        if g is None:
            raise NotFound(f"gateway {code[:64]} not found")
        devices = (await conn.execute(sa.text(_DEVICES), {"g": g.id})).all()
        free = (await conn.execute(sa.text(_FREE_POINTS), {"s": g.site_id})).all()
    waiting = await unregistered(svc.db, who.tenant_id, g.id)
    aside = await set_aside(svc.db, who.tenant_id, g.id)
    ctx = {
        "who": who,
        "g": g,
        "devices": devices,
        "waiting": waiting,
        "aside": aside,
        "reasons": {k: _(v) for k, v in SET_ASIDE.items()},
        "buses": sorted((g.bus_stats or {}).items()),
        "free": free,
        "error": error,
        "done": done,
        "config_text": config_text if config_text is not None else EXAMPLE_CONFIG,
        "can_install": "meter.install" in who.permissions,
        "can_configure": "gateway.configure" in who.permissions,
    }
    return render(request, svc, "gateway.html", ctx, status=status, section="settings")
