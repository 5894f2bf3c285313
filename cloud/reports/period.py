"""A report's period: whole local days, first to last inclusive, in each site's zone.

Pure: the caller gives today's date (in the zone the page shows) so nothing here reads a
clock. A refusal names what is wrong, for the console to say in the user's language."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from cloud.errors import Invalid

MAX_DAYS = 366  # the longest period one report covers (a year, leap day included)


class PeriodRefused(Invalid):
    """A period the reports refuse; ``reason`` is one of the constants below."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


NOT_A_DAY = "not_a_day"
REVERSED = "reversed"
FUTURE = "future"
TOO_LONG = "too_long"


@dataclass(frozen=True)
class Period:
    first: date
    last: date  # inclusive

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def end(self) -> date:
        """The day after the last: the period is [first, end) in local days."""
        return self.last + timedelta(days=1)

    def previous(self) -> Period:
        """The period of as many days just before this one (its closing is our opening)."""
        return Period(self.first - timedelta(days=self.days), self.first - timedelta(days=1))


def parse_day(text: str) -> date | None:
    """``YYYY-MM-DD`` (empty: None); PeriodRefused for anything else or a year outside
    2000–2099."""
    text = text.strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise PeriodRefused(NOT_A_DAY, f"{text!r} is not a day (YYYY-MM-DD)") from None
    if not 2000 <= day.year < 2100 or len(text) != 10:
        raise PeriodRefused(NOT_A_DAY, f"{text!r} is not a day (YYYY-MM-DD)")
    return day


def period_of(first: str, last: str, today: date, max_days: int = MAX_DAYS) -> Period:
    """The period typed as two days; by default this month up to today. Refused: a day
    that is not one, a last day before the first, a last day after today (the future has
    no postings yet: a report of it would look complete and is not), more than
    ``max_days`` days."""
    last_day = parse_day(last) or today
    first_day = parse_day(first) or (last_day.replace(day=1) if not first else last_day)
    if first_day > last_day:
        raise PeriodRefused(REVERSED, f"the first day {first_day} is after the last {last_day}")
    if last_day > today:
        raise PeriodRefused(FUTURE, f"the last day {last_day} is after today {today}")
    period = Period(first_day, last_day)
    if period.days > max_days:
        raise PeriodRefused(TOO_LONG, f"{period.days} days is longer than {max_days}")
    return period
