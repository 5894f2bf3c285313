"""The delivery rules, pure (no database, clock or network): quiet hours in the site's
time zone, the per-customer hourly limit, phone numbers, and the retry schedule."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

#: what goes out during quiet hours too (DESIGN §8)
QUIET_EXEMPT = frozenset({"supply_cut", "topup_received"})
#: what the hourly limit never holds back
LIMIT_EXEMPT = QUIET_EXEMPT
STAFF_KINDS = frozenset({"gateway_offline", "work_order_assigned"})

RETRY_FIRST = timedelta(seconds=30)
RETRY_MAX = timedelta(minutes=30)
MAX_ATTEMPTS = 10  # then failed, the provider's last answer kept

_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
_CN_MOBILE = re.compile(r"^1[3-9][0-9]{9}$")


class BadPhone(ValueError):
    pass


def e164(phone: str | None) -> str:
    """The number in E.164 (``+8613800138000``). A mainland mobile number written as
    operators type it (11 digits starting with 1, spaces or dashes allowed) is taken as
    +86; anything else must already be E.164. Raises :class:`BadPhone` saying why."""
    if phone is None or not phone.strip():
        raise BadPhone("no phone number on file")
    compact = re.sub(r"[\s\-()]", "", phone)
    if _CN_MOBILE.match(compact):
        return "+86" + compact
    if compact.startswith("0086"):
        compact = "+" + compact[2:]
    if not _E164.match(compact):
        raise BadPhone(f"phone number {phone!r} is not E.164 (+ country code and number)")
    return compact


@dataclass(frozen=True)
class QuietHours:
    start: time | None  # local; None: no quiet hours at the site
    end: time | None
    timezone: str = "Asia/Shanghai"

    def _quiet(self, local: time) -> bool:
        s, e = self.start, self.end
        if s is None or e is None or s == e:
            return False
        return (s <= local < e) if s < e else (local >= s or local < e)

    def release(self, kind: str, now: datetime) -> datetime | None:
        """When a message of ``kind`` due at ``now`` may go: None for at once, otherwise
        the end of the quiet period (the next ``end`` in the site's zone)."""
        if kind in QUIET_EXEMPT or self.end is None:
            return None
        zone = ZoneInfo(self.timezone)
        local = now.astimezone(zone)
        if not self._quiet(local.timetz().replace(tzinfo=None)):
            return None
        end = datetime.combine(local.date(), self.end, tzinfo=zone)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=zone)
        return end.astimezone(now.tzinfo)


def over_limit(
    kind: str, sent_last_hour: list[datetime], limit: int, now: datetime
) -> datetime | None:
    """The per-customer hourly limit: None when a message may go now, otherwise when the
    oldest of the last hour's messages leaves the window."""
    if kind in LIMIT_EXEMPT or len(sent_last_hour) < limit:
        return None
    window = sorted(t for t in sent_last_hour if t > now - timedelta(hours=1))
    if len(window) < limit:
        return None
    return window[len(window) - limit] + timedelta(hours=1)


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failed ones: 30 s, 1, 2, 4… min, ≤ 30 min."""
    wait: timedelta = RETRY_FIRST * (2 ** max(attempts - 1, 0))
    return min(wait, RETRY_MAX)
