"""The room monitor (监控, DESIGN §16): a site's premises building by building and floor by
floor, coloured by state, filtered by state, utility and tenant name. The page polls
itself: the same route answers ``HX-Request`` with the tiles' block only."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from cloud.api.deps import ServicesDep
from cloud.console import lists
from cloud.console.i18n import N_
from cloud.console.pages import is_fragment, render, render_fragment, signed_in
from cloud.monitor.rooms import UTILITIES, Filters, room_monitor
from cloud.monitor.state import State

router = APIRouter(prefix="/console/monitor", include_in_schema=False)

#: How often the page asks for fresh tiles.
REFRESH_S = 10

STATE_LABELS = {
    State.CREDIT: N_("In credit"),
    State.ALARM1: N_("Alarm 1"),
    State.ALARM2: N_("Alarm 2"),
    State.EMERGENCY: N_("Emergency credit"),
    State.ARREARS: N_("In arrears / cut"),
    State.KEEP_POWER: N_("Keep-power"),
    State.NOT_OPENED: N_("Not opened"),
    State.LOST: N_("Lost contact"),
}
UTILITY_LABELS = {"electricity": N_("Electricity"), "water": N_("Water")}


@router.get("")
async def monitor_page(
    request: Request,
    svc: ServicesDep,
    site: uuid.UUID | None = None,
    state: Annotated[str, Query(max_length=12)] = "",
    utility: Annotated[str, Query(max_length=12)] = "",
    name: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    chosen = State(state) if state in set(State) else None
    filters = Filters(chosen, utility if utility in UTILITIES else "", lists.query(name))
    now = datetime.now(UTC)
    m = await room_monitor(svc.db, who, site, filters, now)
    keep = {"site": str(m.site.id), "state": chosen or "", "utility": filters.utility}
    keep["name"] = filters.name
    ctx = {
        "who": who,
        "m": m,
        "filters": filters,
        "labels": STATE_LABELS,
        "utilities": UTILITY_LABELS,
        "query": urlencode(keep),
        "refresh_s": REFRESH_S,
        "at": now,
    }
    if is_fragment(request):
        return render_fragment(request, "monitor.html", "tiles", ctx)
    resp = render(request, svc, "monitor.html", ctx, section="monitor")
    resp.headers["Vary"] = "HX-Request"
    return resp
