"""The one place the console formats money, numbers and times (DESIGN §16): money as ¥
with two decimals, unit prices as ¥ with four, times in the site's zone with the zone
shown."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from babel.numbers import format_decimal

from cloud.console.i18n import babel_locale


def money(amount: Decimal | str | None) -> str:
    if amount is None or amount == "":
        return "—"
    amount = Decimal(amount)
    text = format_decimal(abs(amount), format="#,##0.00", locale=babel_locale())
    return f"-¥{text}" if amount < 0 else f"¥{text}"


def price(value: Decimal | str | None) -> str:
    """A unit price (per kWh or m³): ¥ with four decimals, as tariffs are priced."""
    if value is None or value == "":
        return "—"
    text = format_decimal(Decimal(value), format="#,##0.0000", locale=babel_locale())
    return f"¥{text}"


def number(value: Decimal | str | None, places: int = 2) -> str:
    if value is None or value == "":
        return "—"
    value = Decimal(value)
    return format_decimal(value, format="#,##0." + "0" * places, locale=babel_locale())


def when(at: datetime | None, zone: str = "Asia/Shanghai") -> str:
    """``2026-12-03 00:47 (Asia/Shanghai)``: the site's local time with its zone."""
    if at is None:
        return "—"
    local = format_datetime(at, "yyyy-MM-dd HH:mm", tzinfo=ZoneInfo(zone), locale=babel_locale())
    return f"{local} ({zone})"
