"""The registry administrator's rules (DESIGN §3, §12): what a site's settings, a
building, a premises, a role, an operator and a cross-outlet grant may hold, and what an
operator may hand on to another (no privilege escalation). Pure: no database, no clock —
the service loads what exists and passes it in; every refusal is an ``Invalid`` (422) or a
``Forbidden`` (403) with a message a person can act on."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import available_timezones

from cloud.auth import PERMISSIONS
from cloud.errors import Forbidden, Invalid
from cloud.horizons import GRANT

NAME_MAX = 100
NOTICE_MAX = 7 * 24 * 60  # a week, in minutes
READING_AGE_MAX = 3650  # days a site may take readings back (ten years; migration 0016)
HYSTERESIS_MAX = Decimal(1000)
PRICE_MAX = Decimal("99999999.9999")  # NUMERIC(12, 4)
AREA_MAX = Decimal(1_000_000)
GRANT_MAX = timedelta(days=31)
PASSWORD_MIN = 8
PASSWORD_MAX = 256
PREMISES_KINDS = ("shop", "flat", "office", "unit")
SCOPES = ("tenant", "site", "outlet")
SITE_FIELDS = (
    "name",
    "timezone",
    "business_day_cutoff",
    "friendly_night_start",
    "friendly_night_end",
    "friendly_weekends",
    "friendly_holidays",
    "notice_minutes",
    "alarm_hysteresis",
    "catalogue_price",
    "price_margin",
    "reading_max_age_days",
)

_SLUG = re.compile(r"[a-z0-9-]{2,40}")
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{1,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name(value: str, what: str = "name", limit: int = NAME_MAX) -> str:
    """A name as people see it: trimmed, not empty, at most ``limit`` characters, one line."""
    text = value.strip()
    if not text:
        raise Invalid(f"{what} must not be empty")
    if len(text) > limit:
        raise Invalid(f"{what} is longer than {limit} characters")
    if _CONTROL.search(text):
        raise Invalid(f"{what} must not contain control characters")
    return text


def slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise Invalid(
            f"slug {value!r} must be 2 to 40 lower-case letters, digits or hyphens (a-z 0-9 -)"
        )
    return value


def username(value: str) -> str:
    if not _USERNAME.fullmatch(value):
        raise Invalid(
            "username must be 2 to 64 letters, digits or . _ @ - and start with a letter or digit"
        )
    return value


def password(value: str) -> str:
    if len(value) < PASSWORD_MIN:
        raise Invalid(f"password must be at least {PASSWORD_MIN} characters")
    if len(value) > PASSWORD_MAX:
        raise Invalid(f"password must be at most {PASSWORD_MAX} characters")
    if _CONTROL.search(value):
        raise Invalid("password must not contain control characters")
    return value


def timezone(value: str) -> str:
    """An IANA zone key the tz database lists ("Asia/Shanghai"); not "UTC+8", "CST" or a
    machine's own "localtime"."""
    if value not in _zone_keys():
        raise Invalid(f"unknown time zone {value!r} (use a key such as Asia/Shanghai)")
    return value


@functools.cache
def _zone_keys() -> frozenset[str]:
    """Read from the tz database once, on first use."""
    # some systems list their own aliases, which name no zone of the site
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


def _decimal(
    value: Decimal,
    what: str,
    *,
    places: int,
    low: Decimal,
    high: Decimal,
    low_open: bool = False,
) -> Decimal:
    if not value.is_finite():
        raise Invalid(f"{what} must be a number")
    if value < low or (low_open and value == low):
        raise Invalid(f"{what} must be {'more than' if low_open else 'at least'} {low}")
    if value > high:
        raise Invalid(f"{what} must be at most {high}")
    if value.quantize(Decimal(1).scaleb(-places)) != value:
        raise Invalid(f"{what} has more than {places} decimal places")
    return value.quantize(Decimal(1).scaleb(-places))


def floor_area(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    return _decimal(value, "floor area", places=2, low=Decimal(0), high=AREA_MAX, low_open=True)


@dataclass(frozen=True)
class SiteSettings:
    """A site's settings as stored; the friendly night is both ends or neither."""

    name: str
    timezone: str = "Asia/Shanghai"
    business_day_cutoff: time = time(0)
    friendly_night_start: time | None = time(22)
    friendly_night_end: time | None = time(8)
    friendly_weekends: bool = True
    friendly_holidays: bool = True
    notice_minutes: int = 0
    alarm_hysteresis: Decimal = Decimal("1.00")
    catalogue_price: Decimal | None = None
    price_margin: Decimal = Decimal("0.15")
    # readings measured longer ago are quarantined (too_old), not rated
    reading_max_age_days: int = 365


def _clock_time(value: time | None, what: str) -> time | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        raise Invalid(f"{what} is a local time of the site: give it without a zone")
    return value.replace(microsecond=0)


def site(settings: SiteSettings) -> SiteSettings:
    """The settings checked whole (after a change is merged into what is stored)."""
    start = _clock_time(settings.friendly_night_start, "friendly night start")
    end = _clock_time(settings.friendly_night_end, "friendly night end")
    if (start is None) != (end is None):
        raise Invalid("friendly night needs both a start and an end (or neither)")
    if start is not None and start == end:
        raise Invalid("friendly night start and end must differ")
    cutoff = _clock_time(settings.business_day_cutoff, "business-day cut-off")
    if cutoff is None:
        raise Invalid("business-day cut-off is required")
    notice = settings.notice_minutes
    if isinstance(notice, bool) or not 0 <= notice <= NOTICE_MAX:
        raise Invalid(f"notice minutes must be between 0 and {NOTICE_MAX}")
    age = settings.reading_max_age_days
    if isinstance(age, bool) or not 1 <= age <= READING_AGE_MAX:
        raise Invalid(f"the readings' allowed age must be between 1 and {READING_AGE_MAX} days")
    price = settings.catalogue_price
    return replace(
        settings,
        name=name(settings.name, "site name"),
        timezone=timezone(settings.timezone),
        business_day_cutoff=cutoff,
        friendly_night_start=start,
        friendly_night_end=end,
        alarm_hysteresis=_decimal(
            settings.alarm_hysteresis,
            "alarm hysteresis",
            places=2,
            low=Decimal(0),
            high=HYSTERESIS_MAX,
        ),
        catalogue_price=None
        if price is None
        else _decimal(
            price, "catalogue price", places=4, low=Decimal(0), high=PRICE_MAX, low_open=True
        ),
        price_margin=_decimal(
            settings.price_margin, "price margin", places=4, low=Decimal(0), high=Decimal(1)
        ),
    )


def site_change(current: SiteSettings, changes: Mapping[str, Any]) -> SiteSettings:
    """``current`` with ``changes`` (a PATCH: only the fields sent) merged in and checked."""
    unknown = set(changes) - set(SITE_FIELDS)
    if unknown:
        raise Invalid(f"unknown site setting(s): {', '.join(sorted(unknown))}")
    return site(replace(current, **dict(changes)))


@dataclass(frozen=True)
class PremisesDraft:
    floor: str
    number: str
    kind: str = "shop"
    floor_area: Decimal | None = None


def premises(draft: PremisesDraft) -> PremisesDraft:
    if draft.kind not in PREMISES_KINDS:
        raise Invalid(f"premises kind must be one of {', '.join(PREMISES_KINDS)}")
    return PremisesDraft(
        floor=name(draft.floor, "floor", 20),
        number=name(draft.number, "premises number", 40),
        kind=draft.kind,
        floor_area=floor_area(draft.floor_area),
    )


def permissions(values: Iterable[str]) -> tuple[str, ...]:
    """Known permissions only, each once, in PERMISSIONS order."""
    wanted = set(values)
    unknown = wanted - set(PERMISSIONS)
    if unknown:
        raise Invalid(f"unknown permission(s): {', '.join(sorted(unknown))}")
    return tuple(p for p in PERMISSIONS if p in wanted)


@dataclass(frozen=True)
class Reach:
    """What an operator's scope covers, resolved to ids: ``sites`` None means every site
    (scope tenant); ``outlets`` None means every outlet of the covered sites."""

    scope: str
    sites: frozenset[uuid.UUID] | None
    outlets: frozenset[uuid.UUID] | None


def reach(
    scope: str, scope_ids: Collection[uuid.UUID], outlet_sites: Mapping[uuid.UUID, uuid.UUID]
) -> Reach:
    """An operator's reach; ``outlet_sites`` maps the tenant's outlets to their sites."""
    ids = frozenset(scope_ids)
    if scope == "tenant":
        return Reach(scope, None, None)
    if scope == "site":
        return Reach(scope, ids, None)
    return Reach(scope, frozenset(outlet_sites[o] for o in ids if o in outlet_sites), ids)


def covers(actor: Reach, target: Reach) -> bool:
    """Whether everything ``target`` reaches lies within what ``actor`` reaches."""
    if actor.sites is None:
        return True
    if target.sites is None or not target.sites <= actor.sites:
        return False
    if actor.outlets is None:
        return True
    return target.outlets is not None and target.outlets <= actor.outlets


def scope(
    value: str,
    ids: Collection[uuid.UUID],
    sites: Collection[uuid.UUID],
    outlet_sites: Mapping[uuid.UUID, uuid.UUID],
) -> tuple[str, tuple[uuid.UUID, ...]]:
    """A scope and its ids: none for the tenant, known sites for a site scope, known
    outlets for an outlet scope (``sites``/``outlet_sites``: what the tenant has)."""
    if value not in SCOPES:
        raise Invalid(f"scope must be one of {', '.join(SCOPES)}")
    unique = tuple(dict.fromkeys(ids))
    if value == "tenant":
        if unique:
            raise Invalid("a tenant-wide scope takes no scope ids")
        return value, ()
    if not unique:
        raise Invalid(f"a {value} scope needs at least one {value} id")
    known = set(sites) if value == "site" else set(outlet_sites)
    missing = [str(i) for i in unique if i not in known]
    if missing:
        raise Invalid(f"no such {value}: {', '.join(missing)}")
    return value, unique


def delegation(
    actor_permissions: Collection[str],
    actor: Reach,
    granted_permissions: Collection[str],
    target: Reach,
) -> None:
    """No privilege escalation: an operator hands on only permissions they hold, within
    the scope they have. Forbidden otherwise."""
    beyond = sorted(set(granted_permissions) - set(actor_permissions))
    if beyond:
        raise Forbidden(f"you cannot grant permissions you do not hold: {', '.join(beyond)}")
    if not covers(actor, target):
        raise Forbidden("you cannot give an operator a scope wider than your own")


@dataclass(frozen=True)
class GrantDraft:
    outlet_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    reason: str


def grant(draft: GrantDraft, now: datetime, grantee: Reach, outlet_site: uuid.UUID) -> GrantDraft:
    """A cross-outlet grant: at most 31 days, not over before it is made nor starting more
    than :data:`cloud.horizons.GRANT` ahead, with a reason, for an outlet the grantee's
    scope does not already cover."""
    if draft.starts_at.tzinfo is None or draft.ends_at.tzinfo is None:
        raise Invalid("grant start and end need a time zone")
    if draft.ends_at <= draft.starts_at:
        raise Invalid("a grant must end after it starts")
    if draft.ends_at - draft.starts_at > GRANT_MAX:
        raise Invalid(f"a grant lasts at most {GRANT_MAX.days} days")
    if draft.ends_at <= now:
        raise Invalid("a grant must end in the future")
    if GRANT.problem(draft.starts_at, now) or GRANT.problem(draft.ends_at, now):
        raise Invalid(f"a grant starts and ends at most {GRANT.days} days ahead")
    reason = draft.reason.strip()
    if len(reason) < 3:
        raise Invalid("a grant needs a reason (at least 3 characters)")
    if covers(grantee, Reach("outlet", frozenset({outlet_site}), frozenset({draft.outlet_id}))):
        raise Invalid(f"outlet {draft.outlet_id} is already in this operator's scope")
    return replace(draft, reason=reason)
