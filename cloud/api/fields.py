"""Text and dates the API accepts: one annotated type per kind, so every request model and
path parameter refuses what PostgreSQL cannot hold (NUL), what no person types (other
control characters), and dates out of reason (before 2000, or further ahead than the kind
allows: :mod:`cloud.horizons`), within a bound length, with a 422 that names the field."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime, Field

from cloud import horizons

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def has_control(value: str, *, lines: bool = False) -> bool:
    """Whether ``value`` holds a control character (NUL and the like); ``lines``: line
    breaks and tabs are allowed (a reason, a comment). The console's forms use it too."""
    return (_CONTROL_BUT_LINES if lines else _CONTROL).search(value) is not None


def _line(value: str) -> str:
    if has_control(value):
        raise ValueError("must not contain control characters (such as NUL or a line break)")
    return value


def _note(value: str) -> str:
    if has_control(value, lines=True):
        raise ValueError("must not contain control characters (such as NUL)")
    return value


#: Identifiers in paths and bodies: account numbers, gateway codes, group slugs, usernames.
Key = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_line)]
#: A reason or a comment: several lines allowed, no other control characters.
Reason = Annotated[str, Field(min_length=3, max_length=500), AfterValidator(_note)]
#: A password: any characters but control ones, bounded (argon2 hashes it whole).
Password = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_line)]
#: A key in a path (``/accounts/{number}``, ``/gateways/{code}``).
PathKey = Annotated[str, Path(min_length=1, max_length=64), AfterValidator(_line)]


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
ReportDay = Annotated[date, AfterValidator(_day_within(horizons.REPORT_DAY))]
