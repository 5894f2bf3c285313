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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from annotated_types import GroupedMetadata
from fastapi import Path
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, Strict, WithJsonSchema

from cloud import horizons

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

#: One line: no control character at all (NUL, line breaks, tabs…).
LINE = r"^[^\u0000-\u001f\u007f]*$"
#: Several lines: line breaks and tabs allowed, no other control character.
NOTE = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*$"


#: One line with something in it but spaces (a name: it is kept trimmed).
WORDS = r"^[^\u0000-\u001f\u007f]*[^\s\u0000-\u001f\u007f][^\u0000-\u001f\u007f]*$"


_SAID = {
    LINE: "must not contain control characters (such as NUL or a line break)",
    WORDS: "must not be blank nor contain control characters (such as NUL or a line break)",
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
#: A name people read (a site's, a customer's): not blank, one line.
Words = Annotated[str, Field(min_length=1, max_length=64, pattern=WORDS)]
#: A new operator's username (cloud.registry.admin_core.username).
Username = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{1,63}$")]
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


#: A password being set: at least 8 characters (cloud.registry.admin_core.PASSWORD_MIN).
NewPassword = Annotated[str, Field(min_length=8, max_length=256, pattern=LINE)]


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


@dataclass(frozen=True)
class Whole(GroupedMetadata):
    """A whole number in a body, from ``ge`` to ``le``: a JSON integer (``24.0`` is one, as
    JSON Schema has it), not a string of digits nor a fraction:
    ``Annotated[int, Whole(ge=1, le=64)]``."""

    ge: int
    le: int

    def __iter__(self) -> Iterator[Any]:
        yield Strict()
        yield Field(ge=self.ge, le=self.le)  # (before the validator: in the JSON Schema)
        yield BeforeValidator(_whole)


#: A flag in a body: ``true`` or ``false`` only (pydantic alone reads ``0`` and ``"yes"``).
Flag = Annotated[bool, Strict()]


def _decimal_pattern(digits: int, places: int, above_zero: bool, power: int | None) -> str:
    """The written forms of a decimal of at most ``digits`` digits before the point (no
    leading zero) and ``places`` after, above zero or at least zero; ``power``: at most
    10**power (then ``digits`` is ``power``)."""
    fraction = rf"(\.[0-9]{{1,{places}}})?" if places else ""
    forms = [rf"[1-9][0-9]{{0,{digits - 1}}}{fraction}"] if digits else []
    if above_zero:
        if places:
            tails = [f"0{{{k}}}[1-9][0-9]{{0,{places - 1 - k}}}" for k in range(places)]
            forms.append(rf"0\.({'|'.join(tails)})")
    else:
        forms.append(f"0{fraction}")
    if power is not None:
        forms.append(f"10{{{power}}}" + (rf"(\.0{{1,{places}}})?" if places else ""))
    return "^(" + "|".join(forms) + ")$"


@dataclass(frozen=True)
class Written(GroupedMetadata):
    """A decimal the API accepts as a string written plainly (``"50.00"``: no sign, no
    exponent, no leading zero, at most ``digits`` digits before the point and ``places``
    after) or as a JSON integer in range; not as a JSON fraction (``0.1`` is a binary
    float, not a tenth). ``above_zero``: more than 0 (else at least 0); ``at_most``: a
    power of ten, the largest value (``digits`` then follows from it). The JSON Schema
    says exactly that, so a client (and schemathesis) knows what is refused:
    ``Annotated[Decimal, Written(digits=10, places=2, above_zero=True)]``."""

    digits: int = 0
    places: int = 2
    above_zero: bool = False
    at_most: int | None = None
    example: str = "12.50"

    def __iter__(self) -> Iterator[Any]:
        digits, power = self.digits, None
        if self.at_most is not None:
            power = len(str(self.at_most)) - 1
            assert self.at_most == 10**power, "at_most is a power of ten"
            digits = power
        places = self.places
        pattern = _decimal_pattern(digits, places, self.above_zero, power)
        largest = self.at_most if self.at_most is not None else 10**digits - 1  # integers
        smallest = 1 if self.above_zero else 0
        bound = f"at most {self.at_most}" if power is not None else f"{digits} digits at most"
        said = (
            f'must be a decimal number written as a string such as "{self.example}"'
            f" ({'more than' if self.above_zero else 'at least'} 0, {bound}"
            f"{f', with at most {places} decimal places' if places else ', a whole number'})"
        )
        check = re.compile(pattern)

        def written(value: Any) -> Any:
            if isinstance(value, bool):
                raise ValueError(said)
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(said)
                value = int(value)
            if isinstance(value, int) and not smallest <= value <= largest:
                raise ValueError(said)
            if isinstance(value, str) and not check.fullmatch(value):
                raise ValueError(said)
            return value

        yield BeforeValidator(written)
        yield Field(
            gt=0 if self.above_zero else None,
            ge=None if self.above_zero else 0,
            le=self.at_most,
            decimal_places=places,
            allow_inf_nan=False,
        )
        yield WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": pattern},
                    {"type": "integer", "minimum": smallest, "maximum": largest},
                ],
                "examples": [self.example],
            }
        )
