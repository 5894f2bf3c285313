"""The console's reading history of a service point (抄表记录), from the account page:
what its meters reported day by day in the site's zone, with the consumption between
readings, a page at a time or as one Excel file."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from cloud.api.deps import ServicesDep
from cloud.console import lists
from cloud.console.format import when
from cloud.console.i18n import gettext as _
from cloud.console.pages import render, signed_in
from cloud.lifecycle.history import Window, point_history

router = APIRouter(prefix="/console/points", include_in_schema=False)

Text = Annotated[str, Query(max_length=10)]


@router.get("/{point_id}/readings")
async def readings_page(
    point_id: uuid.UUID,
    request: Request,
    svc: ServicesDep,
    first: Text = "",
    last: Text = "",
    offset: lists.Offset = 0,
    export: lists.Export = "",
) -> Response:
    who = await signed_in(request, svc)
    if isinstance(who, Response):
        return who
    try:
        window = Window(lists.day_param(first), lists.day_param(last))
    except ValueError:
        message = _("Give the days as year-month-day, e.g. 2026-12-01, between 2000 and 2099.")
        ctx = {"who": who, "message": message, "refused": True}
        return render(request, svc, "message.html", ctx, status=422, section="accounts")
    now = datetime.now(UTC)
    if export == "xlsx":
        h = await point_history(svc.db, who, point_id, window, now, 0, lists.EXPORT_LIMIT)
        zone = h.point.timezone
        headers = [
            _("Measured at"), _("Meter"), _("Register"), _("Used since the previous reading"),
            _("Power (kW)"), _("Voltage (V)"), _("Current (A)"), _("Supply"),
            _("Balance on the meter (¥)"), _("Received at"),
        ]  # fmt: skip
        rows = [
            [
                when(r.measured_at, zone), r.meter, r.total, r.used, r.power, r.voltage,
                r.current, "" if r.supply_on is None else _("on") if r.supply_on else _("off"),
                r.meter_balance, when(r.received_at, zone),
            ]
            for r in h.rows
        ]  # fmt: skip
        name = f"readings-{h.point.account_number}-{h.first:%Y%m%d}-{h.last:%Y%m%d}.xlsx"
        return lists.xlsx(name, headers, rows)
    h = await point_history(svc.db, who, point_id, window, now, offset)
    keep = {"first": h.first.isoformat(), "last": h.last.isoformat()}
    ctx = {
        "who": who,
        "h": h,
        "zone": h.point.timezone,
        "page": lists.page_of(offset, h.total),
        "keep": urlencode(keep),
        "filters": keep,
        "unit": "m³" if h.point.utility == "water" else "kWh",
    }
    return render(request, svc, "readings.html", ctx, section="accounts")
