"""Who is told what, as staff set it in the console: a site's quiet hours, how long a
gateway may be offline before staff hear of it, the hourly limit per customer and the
staff to tell (notify_staff); a customer's channels, language and muted kinds
(notify_preference, which the mini-program sets too). Each change is audited."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

import sqlalchemy as sa

from cloud import audit
from cloud.auth import Principal
from cloud.db import Database, pg_text_array
from cloud.errors import Invalid, NotFound
from cloud.notify.outbox import ALL_KINDS, STAFF_KINDS
from cloud.registry.scope import require_site
from notifications import rules

CHANNELS = ("sms", "wechat")
LANGUAGES = ("zh_CN", "en")
#: What a customer may turn off: everything but the cut and the top-up received.
MUTABLE = tuple(
    k for k in ALL_KINDS if k not in STAFF_KINDS and k not in ("supply_cut", "topup_received")
)


async def _own_site(conn: Any, who: Principal, site_id: uuid.UUID) -> None:
    """NotFound unless the site is this group's (row-level security hides the others; a
    foreign key check would not) and within the operator's scope."""
    await require_site(conn, who, site_id)
    if not await conn.scalar(sa.text("SELECT 1 FROM site WHERE id = :s"), {"s": site_id}):
        raise NotFound(f"site {site_id} not found")


@dataclass(frozen=True)
class Staff:
    id: uuid.UUID
    name: str
    phone: str | None
    channel: str
    language: str
    kinds: list[str]


@dataclass(frozen=True)
class SiteNotify:
    site_id: uuid.UUID
    site: str
    quiet_start: time | None
    quiet_end: time | None
    gateway_offline_minutes: int
    hourly_limit: int
    staff: list[Staff]


async def site_notify(db: Database, who: Principal, site_id: uuid.UUID) -> SiteNotify:
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        await _own_site(conn, who, site_id)
        s = (
            await conn.execute(
                sa.text(
                    "SELECT name, quiet_start, quiet_end, gateway_offline_minutes, "
                    "notify_hourly_limit FROM site WHERE id = :s"
                ),
                {"s": site_id},
            )
        ).first()
        if s is None:
            raise NotFound(f"site {site_id} not found")
        staff = await conn.execute(
            sa.text(
                "SELECT id, name, phone, channel, language, kinds FROM notify_staff "
                "WHERE site_id = :s AND active ORDER BY name, id"
            ),
            {"s": site_id},
        )
        return SiteNotify(
            site_id,
            s.name,
            s.quiet_start,
            s.quiet_end,
            s.gateway_offline_minutes,
            s.notify_hourly_limit,
            [Staff(*r) for r in staff],
        )


OFFLINE_RANGE = "A gateway may be offline 1 to 1440 minutes before staff are told."
LIMIT_RANGE = "The hourly limit per customer is 1 to 100 messages."


@dataclass(frozen=True)
class SiteNotifyDraft:
    quiet_start: time | None
    quiet_end: time | None
    gateway_offline_minutes: int
    hourly_limit: int


def check_site_draft(d: SiteNotifyDraft) -> None:
    if (d.quiet_start is None) != (d.quiet_end is None):
        raise Invalid("Give both ends of the quiet hours, or neither (no quiet hours).")
    if d.quiet_start is not None and d.quiet_start == d.quiet_end:
        raise Invalid("The quiet hours must start and end at different times.")
    if not 1 <= d.gateway_offline_minutes <= 1440:
        raise Invalid(OFFLINE_RANGE)
    if not 1 <= d.hourly_limit <= 100:
        raise Invalid(LIMIT_RANGE)


async def save_site_notify(
    db: Database, who: Principal, site_id: uuid.UUID, d: SiteNotifyDraft, now: datetime
) -> None:
    who.require("registry.edit")
    check_site_draft(d)
    async with db.tenant(who.tenant_id) as conn:
        await _own_site(conn, who, site_id)
        await conn.execute(
            sa.text(
                "UPDATE site SET quiet_start = :qs, quiet_end = :qe, "
                "gateway_offline_minutes = :g, notify_hourly_limit = :h WHERE id = :s"
            ),
            {
                "qs": d.quiet_start,
                "qe": d.quiet_end,
                "g": d.gateway_offline_minutes,
                "h": d.hourly_limit,
                "s": site_id,
            },
        )
        detail = {
            "quiet": f"{d.quiet_start or '-'}–{d.quiet_end or '-'}",
            "gateway_offline_minutes": str(d.gateway_offline_minutes),
            "hourly_limit": str(d.hourly_limit),
        }
        await audit.record(
            conn, who.tenant_id, who.actor, "site.notify", f"site:{site_id}", now, detail
        )


@dataclass(frozen=True)
class StaffDraft:
    name: str
    phone: str
    channel: str = "sms"
    language: str = "zh_CN"
    kinds: tuple[str, ...] = STAFF_KINDS


async def add_staff(
    db: Database, who: Principal, site_id: uuid.UUID, d: StaffDraft, now: datetime
) -> uuid.UUID:
    who.require("registry.edit")
    name = d.name.strip()
    if not 1 <= len(name) <= 100:
        raise Invalid("Give the staff member's name (at most 100 characters).")
    try:
        phone = rules.e164(d.phone)
    except rules.BadPhone:
        raise Invalid(
            "Give a mobile number: 11 digits (13800138000) or with its country code (+86…)."
        ) from None
    if d.channel not in ("sms",) or d.language not in LANGUAGES:
        raise Invalid("Staff are told by SMS, in Chinese or English.")
    kinds = [k for k in STAFF_KINDS if k in d.kinds]
    if not kinds:
        raise Invalid("Choose at least one kind of staff message.")
    staff_id = uuid.uuid4()
    async with db.tenant(who.tenant_id) as conn:
        await _own_site(conn, who, site_id)
        await conn.execute(
            sa.text(
                "INSERT INTO notify_staff (id, tenant_id, site_id, name, phone, channel, "
                "language, kinds) VALUES (:id, :t, :s, :n, :p, :c, :l, CAST(:k AS text[]))"
            ),
            {
                "id": staff_id,
                "t": who.tenant_id,
                "s": site_id,
                "n": name,
                "p": phone,
                "c": d.channel,
                "l": d.language,
                "k": pg_text_array(kinds),
            },
        )
        await audit.record(
            conn, who.tenant_id, who.actor, "site.staff_added", f"site:{site_id}", now,
            {"name": name, "phone": phone, "kinds": ",".join(kinds)},
        )  # fmt: skip
    return staff_id


async def remove_staff(
    db: Database, who: Principal, site_id: uuid.UUID, staff_id: uuid.UUID, now: datetime
) -> None:
    who.require("registry.edit")
    async with db.tenant(who.tenant_id) as conn:
        await _own_site(conn, who, site_id)
        # (kept, inactive: the messages they were sent name them)
        gone = await conn.scalar(
            sa.text(
                "UPDATE notify_staff SET active = false WHERE id = :id AND site_id = :s "
                "AND active RETURNING name"
            ),
            {"id": staff_id, "s": site_id},
        )
        if gone is None:
            raise NotFound(f"staff member {staff_id} not found")
        await audit.record(
            conn, who.tenant_id, who.actor, "site.staff_removed", f"site:{site_id}", now,
            {"name": str(gone)},
        )  # fmt: skip


@dataclass(frozen=True)
class Preference:
    channels: tuple[str, ...]  # in order of preference; empty: tell them nothing
    language: str
    muted: tuple[str, ...]
    set: bool  # a preference is on file (else: SMS in Chinese)


async def preference(db: Database, who: Principal, customer_id: uuid.UUID) -> Preference:
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        r = (
            await conn.execute(
                sa.text(
                    "SELECT channels, language, muted FROM notify_preference WHERE customer_id = :c"
                ),
                {"c": customer_id},
            )
        ).first()
    if r is None:
        return Preference(("sms",), "zh_CN", (), False)
    return Preference(tuple(r.channels), r.language, tuple(r.muted), True)


async def save_preference(
    db: Database,
    who: Principal,
    customer_id: uuid.UUID,
    p: Preference,
    now: datetime,
) -> None:
    """The customer's choice as the clerk records it (the mini-program's own is the same
    row: the latest wins)."""
    who.require("account.open")
    if any(c not in CHANNELS for c in p.channels) or len(set(p.channels)) != len(p.channels):
        raise Invalid("Choose the channels from the list.")
    if p.language not in LANGUAGES:
        raise Invalid("Choose Chinese or English.")
    if any(k not in MUTABLE for k in p.muted):
        raise Invalid("Supply cuts and top-ups received are always told.")
    async with db.tenant(who.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO notify_preference (tenant_id, customer_id, channels, language, "
                "muted, updated_at) VALUES (:t, :c, CAST(:ch AS text[]), :l, "
                "CAST(:m AS text[]), :now) ON CONFLICT (customer_id) DO UPDATE SET "
                "channels = EXCLUDED.channels, language = EXCLUDED.language, "
                "muted = EXCLUDED.muted, updated_at = EXCLUDED.updated_at"
            ),
            {
                "t": who.tenant_id,
                "c": customer_id,
                "ch": pg_text_array(p.channels),
                "l": p.language,
                "m": pg_text_array(p.muted),
                "now": now,
            },
        )
        await audit.record(
            conn, who.tenant_id, who.actor, "customer.notify", f"customer:{customer_id}", now,
            {"channels": ",".join(p.channels) or "-", "language": p.language,
             "muted": ",".join(p.muted)},
        )  # fmt: skip
