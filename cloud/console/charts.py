"""A point's consumption chart for its page (ECharts, vendored; drawn by point_chart.js
from a JSON block): figures as strings (never through float on the server), and the links
to the period before and after."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from cloud.console.i18n import N_
from cloud.console.i18n import gettext as _
from cloud.lifecycle.consumption import Consumption, Grain

GRAINS = (
    (Grain.HOUR.value, N_("By hour")),
    (Grain.DAY.value, N_("By day")),
    (Grain.MONTH.value, N_("By month")),
)


def consumption_chart(c: Consumption) -> dict[str, Any]:
    unit = "m³" if c.utility == "water" else "kWh"
    return {
        "categories": [p.label for p in c.periods],
        "used": {"name": _("Consumption (%(unit)s)") % {"unit": unit}, "values": [
            str(p.used) for p in c.periods
        ]},
        "register": {"name": _("Register (%(unit)s)") % {"unit": unit}, "values": [
            None if p.register is None else str(p.register) for p in c.periods
        ]},
    }  # fmt: skip


def _month_shift(d: date, months: int) -> date:
    y, m = divmod(d.year * 12 + d.month - 1 + months, 12)
    return date(y, m + 1, 1)


def chart_steps(c: Consumption) -> dict[str, str]:
    """The day parameters of the previous and next chart of the same grain."""
    if c.grain is Grain.HOUR:
        before, after = c.day - timedelta(days=1), c.day + timedelta(days=1)
    elif c.grain is Grain.DAY:
        before, after = _month_shift(c.day, -1), _month_shift(c.day, 1)
    else:
        before, after = _month_shift(c.day, -12), _month_shift(c.day, 12)
    return {"before": before.isoformat(), "after": after.isoformat()}
