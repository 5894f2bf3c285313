"""The installer's gateway pages: every gateway in the operator's scope with its presence
and config version, and one gateway's meters — the registered ones and those it reports
that nobody has registered yet (their readings wait in quarantine until 装表)."""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from cloud.api.deps import ServicesDep
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
    waiting = await unregistered(svc.db, who.tenant_id, g.id)
    aside = await set_aside(svc.db, who.tenant_id, g.id)
    ctx = {
        "who": who,
        "g": g,
        "devices": devices,
        "waiting": waiting,
        "aside": aside,
        "reasons": {k: _(v) for k, v in SET_ASIDE.items()},
    }
    return render(request, svc, "gateway.html", ctx, section="settings")
