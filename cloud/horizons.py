"""How far back and ahead a date a person enters may lie (issue 22, item 7): one table
that the API's fields (:mod:`cloud.api.fields`), the console's forms and the services share,
so no path stores an absurd date (a keep-power ``until`` in year 4496, a tariff starting in
year 9999, a grant dated year 1). Pure: the caller passes ``now``.

=====================  ===========================  ==========================================
kind                   earliest                     latest
=====================  ===========================  ==========================================
keep-power / override  after now (the service's)    366 days ahead (longer: leave it open)
``until``
cross-outlet grant     2000-01-01 (and it must end  366 days ahead, both (it lasts at most
starts / ends          in the future)               31 days)
tariff version start   now (60 s of skew allowed)   5 years ahead (1,827 days)
report day (filter)    2000-01-01                   366 days ahead
=====================  ===========================  ==========================================

Readings are bounded elsewhere: the wire contract refuses a time before 2000 or from 2100
(``contract.mqtt.EARLIEST`` / ``LATEST``), and the ingest quarantines one older than its
site takes or from before its meter's installation (``cloud.ingest.service``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

#: Nothing the platform keeps is older: no person means a date before it.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
EARLIEST_DAY = EARLIEST.date()


@dataclass(frozen=True)
class Horizon:
    """How far ahead of now a kind of date may lie (it may never lie before
    :data:`EARLIEST`; a service may ask more, such as a start not in the past)."""

    ahead: timedelta

    @property
    def days(self) -> int:
        return self.ahead.days

    def problem(self, value: datetime, now: datetime) -> str | None:
        """What is wrong with ``value`` (an aware datetime), or None. Comparisons only: an
        aware time near year 1 or 9999 compares, though converting it to UTC overflows."""
        if value < EARLIEST:
            return f"must not be before {EARLIEST_DAY.isoformat()}"
        if value > now + self.ahead:
            return f"must not be more than {self.days} days ahead"
        return None

    def day_problem(self, value: date, today: date) -> str | None:
        """The same for a calendar day (a report's day, in the site's calendar)."""
        if value < EARLIEST_DAY:
            return f"must not be before {EARLIEST_DAY.isoformat()}"
        if value > today + self.ahead:
            return f"must not be more than {self.days} days ahead"
        return None


#: keep-power (保电) or an override: when it ends by itself.
KEEP_POWER = Horizon(timedelta(days=366))
#: a cross-outlet grant's start and end.
GRANT = Horizon(timedelta(days=366))
#: when a tariff version takes effect: price changes are announced, not planned for decades.
TARIFF_START = Horizon(timedelta(days=5 * 365 + 2))
#: a day a report or a list is asked for.
REPORT_DAY = Horizon(timedelta(days=366))
