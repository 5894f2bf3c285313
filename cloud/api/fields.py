"""Text and dates the API accepts: one annotated type per kind, so every request model and
path parameter refuses what PostgreSQL cannot hold (NUL), what no person types (other
control characters), and dates out of reason (before 2000, or further ahead than the kind
allows: :mod:`cloud.horizons`), within a bound length, with a 422 that names the field.

The rules are JSON Schema ``pattern`` and length constraints, so the OpenAPI document
tells clients (and the schemathesis run of tests/integration/test_schemathesis.py) what
is accepted, and a narrower or wider length composes: ``Annotated[Key, Field(max_length=
120)]`` is a key of up to 120 characters (a validator function in the type would keep
its own bound, whatever the wrapper says)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, WithJsonSchema

from cloud import horizons

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

#: One line: no control character at all (NUL, line breaks, tabs…).
LINE = r"^[^\u0000-\u001f\u007f]*$"
#: Several lines: line breaks and tabs allowed, no other control character.
NOTE = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*$"


_SAID = {
    LINE: "must not contain control characters (such as NUL or a line break)",
    NOTE: "must not contain control characters (such as NUL)",
}


def in_words(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error of FastAPI's list, its message in words when it is one of the
    patterns above (pydantic would quote the regular expression)."""
    said = _SAID.get((error.get("ctx") or {}).get("pattern", ""))
    if error.get("type") == "string_pattern_mismatch" and said:
        return {**error, "msg": f"String {said}"}
    return error


def has_control(value: str, *, lines: bool = False) -> bool:
    """Whether ``value`` holds a control character (NUL and the like); ``lines``: line
    breaks and tabs are allowed (a reason, a comment). The console's forms use it too."""
    return (_CONTROL_BUT_LINES if lines else _CONTROL).search(value) is not None


#: Identifiers in paths and bodies: account numbers, gateway codes, group slugs, usernames.
Key = Annotated[str, Field(min_length=1, max_length=64, pattern=LINE)]
#: A reason or a comment: several lines allowed, no other control characters.
Reason = Annotated[str, Field(min_length=3, max_length=500, pattern=NOTE)]
#: A password: any characters but control ones, bounded (argon2 hashes it whole).
Password = Annotated[str, Field(min_length=1, max_length=256, pattern=LINE)]
#: A key in a path (``/accounts/{number}``, ``/gateways/{code}``).
PathKey = Annotated[str, Path(min_length=1, max_length=64, pattern=LINE)]

_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_day(value: Any) -> Any:
    if isinstance(value, str) and not _ISO_DAY.fullmatch(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


#: A calendar day as ISO 8601 ``YYYY-MM-DD`` only (pydantic alone also takes ``0`` as
#: 1970-01-01, a count of seconds).
Day = Annotated[date, BeforeValidator(_iso_day)]

_CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"


def _clock(value: Any) -> Any:
    if isinstance(value, str) and not re.fullmatch(_CLOCK_PATTERN, value):
        raise ValueError("must be a local time as HH:MM or HH:MM:SS, without a zone")
    return value


#: A wall-clock time of a site (its own zone): ``22:00``. JSON Schema's ``time`` format
#: would require a zone offset, which such a time does not have.
ClockTime = Annotated[
    time,
    BeforeValidator(_clock),
    WithJsonSchema({"type": "string", "pattern": _CLOCK_PATTERN, "examples": ["22:00"]}),
]


def _within(horizon: horizons.Horizon) -> Callable[[datetime], datetime]:
    # The request's own clock: the service checks again against the ``now`` it is given.
    def check(value: datetime) -> datetime:
        if (why := horizon.problem(value, datetime.now(UTC))) is not None:
            raise ValueError(why)
        return value

    return check


def _day_within(horizon: horizons.Horizon) -> Callable[[date], date]:
    def check(value: date) -> date:
        if (why := horizon.day_problem(value, datetime.now(UTC).date())) is not None:
            raise ValueError(why)
        return value

    return check


#: When keep-power or an override ends: at most 366 days ahead.
Until = Annotated[AwareDatetime, AfterValidator(_within(horizons.KEEP_POWER))]
#: A cross-outlet grant's start or end: from 2000, at most 366 days ahead.
GrantTime = Annotated[AwareDatetime, AfterValidator(_within(horizons.GRANT))]
#: When a tariff version takes effect: at most five years ahead.
TariffStart = Annotated[AwareDatetime, AfterValidator(_within(horizons.TARIFF_START))]
#: A day a list or report is asked for: from 2000-01-01, at most 366 days ahead.
ReportDay = Annotated[
    date, BeforeValidator(_iso_day), AfterValidator(_day_within(horizons.REPORT_DAY))
]
