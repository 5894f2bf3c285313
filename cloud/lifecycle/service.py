"""Lifecycle services (DESIGN §12): each loads the state, asks :mod:`cloud.lifecycle.core`,
writes in one transaction with one audit event and, where money moves, one journal entry.

Final readings are rated through the rating core (and the point's open usage window
journaled) before a point leaves; control runs after credit comes in, as a top-up does.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import yaml
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit
from cloud.auth import Principal
from cloud.control import service as control
from cloud.control.service import CommandTiming, after_topup, cut_for_closure
from cloud.db import Database, next_number, pg_array
from cloud.errors import Conflict, Invalid, NotFound
from cloud.ingest.service import MAX_FUTURE, unratable
from cloud.ledger import core as ledger
from cloud.ledger.service import balance_of, ensure_accounts, post
from cloud.lifecycle import core
from cloud.lifecycle.core import (
    AccountState,
    LivePoint,
    Money,
    PointState,
    PointWish,
    Reading,
    Settlement,
)
from cloud.notify import outbox
from cloud.payments.counter import SaleReceipt, SaleRequest, sell_in
from cloud.payments.counter import replay as replay_sale
from cloud.payments.wechat.refunds import ClosingRefund, refund_closing
from cloud.rating.core import RatingMark, RatingOutcome, RegisterReading, flush, rate
from cloud.rating.service import apply_to_points
from cloud.registry import service as registry
from cloud.registry.scope import require_site, sites_of
from contract.mqtt import Reading as WireReading

_FAR = datetime(9999, 1, 1, tzinfo=UTC)  # flush any open usage window of a point that leaves


# -- customers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerData:
    name: str
    phone: str | None = None
    id_number: str | None = None


@dataclass(frozen=True)
class CustomerView:
    id: uuid.UUID
    name: str
    phone: str | None
    id_number: str | None
    accounts: tuple[str, ...] = ()


async def _add_customer(
    conn: AsyncConnection, who: Principal, data: CustomerData, now: datetime
) -> uuid.UUID:
    if not data.name.strip():
        raise Invalid("a customer needs a name")
    customer_id = uuid.uuid4()
    await conn.execute(
        sa.text(
            "INSERT INTO customer (id, tenant_id, name, phone, id_number, created_at) "
            "VALUES (:id, :t, :n, :p, :i, :now)"
        ),
        {
            "id": customer_id,
            "t": who.tenant_id,
            "n": data.name.strip(),
            "p": data.phone,
            "i": data.id_number,
            "now": now,
        },
    )
    return customer_id


async def create_customer(
    db: Database, who: Principal, data: CustomerData, now: datetime
) -> CustomerView:
    who.require("registry.edit")
    async with db.tenant(who.tenant_id) as conn:
        customer_id = await _add_customer(conn, who, data, now)
        await audit.record(
            conn, who.tenant_id, who.actor, "customer.create", f"customer:{customer_id}", now
        )
    return CustomerView(customer_id, data.name.strip(), data.phone, data.id_number)


# A customer a scoped operator may see: one holding an account with a point at their sites,
# or one holding no account yet (just created at the counter).
_CUSTOMER_IN_SCOPE = (
    "(CAST(:sites AS uuid[]) IS NULL OR NOT EXISTS (SELECT 1 FROM account a "
    "WHERE a.customer_id = c.id) OR EXISTS (SELECT 1 FROM account a JOIN service_point sp "
    "ON sp.account_id = a.id WHERE a.customer_id = c.id "
    "AND sp.site_id = ANY(CAST(:sites AS uuid[]))))"
)


def _sites_param(sites: list[uuid.UUID] | None) -> str | None:
    return None if sites is None else pg_array(sites)


async def _customer(conn: AsyncConnection, who: Principal, customer_id: uuid.UUID) -> Any:
    row = (
        await conn.execute(
            sa.text(
                "SELECT c.id, c.name, c.phone, c.id_number, (SELECT array_agg(a.number "
                "ORDER BY a.number) FROM account a WHERE a.customer_id = c.id) AS accounts "
                f"FROM customer c WHERE c.id = :c AND {_CUSTOMER_IN_SCOPE} FOR NO KEY UPDATE"
            ),
            {"c": customer_id, "sites": _sites_param(await sites_of(conn, who))},
        )
    ).first()
    if row is None:
        raise NotFound(f"customer {customer_id} not found")
    return row


async def update_customer(
    db: Database,
    who: Principal,
    customer_id: uuid.UUID,
    changes: dict[str, str | None],
    now: datetime,
) -> CustomerView:
    """Change a customer's name, phone or ID number (keys of ``changes``)."""
    who.require("registry.edit")
    allowed = {"name", "phone", "id_number"}
    if not changes or not set(changes) <= allowed:
        raise Invalid("nothing to change: give name, phone or id_number")
    if "name" in changes and not (changes["name"] or "").strip():
        raise Invalid("a customer needs a name")
    async with db.tenant(who.tenant_id) as conn:
        await _customer(conn, who, customer_id)
        sets = ", ".join(f"{k} = :{k}" for k in sorted(changes))
        await conn.execute(
            sa.text(f"UPDATE customer SET {sets} WHERE id = :c"), {**changes, "c": customer_id}
        )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "customer.update",
            f"customer:{customer_id}",
            now,
            {k: v or "" for k, v in changes.items()},
        )
        row = await _customer(conn, who, customer_id)
    return CustomerView(row.id, row.name, row.phone, row.id_number, tuple(row.accounts or ()))


async def find_customers(
    db: Database, who: Principal, q: str | None, limit: int = 50
) -> list[CustomerView]:
    """Customers by name (substring), phone or ID number."""
    who.require("registry.view")
    async with db.tenant(who.tenant_id) as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT c.id, c.name, c.phone, c.id_number, (SELECT array_agg(a.number "
                "ORDER BY a.number) FROM account a WHERE a.customer_id = c.id) AS accounts "
                "FROM customer c WHERE (CAST(:q AS text) IS NULL OR c.name ILIKE :like "
                "OR c.phone = :q OR c.id_number = :q) "
                f"AND {_CUSTOMER_IN_SCOPE} ORDER BY c.name, c.id LIMIT :lim"
            ),
            {
                "q": q or None,
                "like": f"%{_like(q or '')}%",
                "sites": _sites_param(await sites_of(conn, who)),
                "lim": limit,
            },
        )
        return [
            CustomerView(r.id, r.name, r.phone, r.id_number, tuple(r.accounts or ())) for r in rows
        ]


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- loading --------------------------------------------------------------------------------

_POINTS = """
SELECT sp.id, sp.name, sp.utility, sp.site_id, sp.account_id, sp.control_mode, sp.tariff_id,
       sp.premises_id, sp.credit_limit, sp.emergency_credit, sp.alarm1, sp.alarm2, sp.max_rate,
       sp.floor_area, sp.removed_at, a.number, a.status, a.customer_id, la.balance,
       b.channel_id, b.id AS binding_id, rs.last_measured_at, rs.last_register,
       (SELECT count(*) FROM device_command c WHERE c.state IN ('queued', 'sent')
          AND (c.service_point_id = sp.id OR c.channel_id = b.channel_id)) AS in_flight
FROM service_point sp JOIN account a ON a.id = sp.account_id
JOIN ledger_account la ON la.id = a.wallet_id
LEFT JOIN binding b ON b.service_point_id = sp.id AND b.removed_at IS NULL
LEFT JOIN rating_state rs ON rs.service_point_id = sp.id
WHERE {where} ORDER BY sp.id FOR NO KEY UPDATE OF sp
"""


def _state(r: Any) -> PointState:
    last = (
        Reading(r.last_measured_at, r.last_register)
        if r.last_measured_at is not None and r.last_register is not None
        else None
    )
    return PointState(
        id=r.id,
        name=r.name,
        utility=r.utility,
        account=AccountState(r.number, r.status, r.balance),
        metered=r.channel_id is not None,
        removed=r.removed_at is not None,
        in_flight=int(r.in_flight),
        last=last,
    )


async def _point(conn: AsyncConnection, who: Principal, point_id: uuid.UUID) -> Any:
    row = (await conn.execute(sa.text(_POINTS.format(where="sp.id = :p")), {"p": point_id})).first()
    if row is None:
        raise NotFound(f"service point {point_id} not found")
    await require_site(conn, who, row.site_id)
    return row


@dataclass(frozen=True)
class _Account:
    id: uuid.UUID
    number: str
    status: str
    customer_id: uuid.UUID
    wallet_id: uuid.UUID
    balance: Decimal

    @property
    def state(self) -> AccountState:
        return AccountState(self.number, self.status, self.balance)

    @property
    def wallet(self) -> ledger.AccountRef:
        return ledger.wallet(self.id, self.number)


async def _account(
    conn: AsyncConnection, who: Principal, number: str, lock: bool = True
) -> tuple[_Account, list[Any]]:
    """The account by number (locked) and its points (locked, in id order); NotFound when
    it is another group's or none of its points is in the operator's scope."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT a.id, a.number, a.status, a.customer_id, a.wallet_id, la.balance "
                "FROM account a JOIN ledger_account la ON la.id = a.wallet_id "
                "WHERE a.number = :n" + (" FOR NO KEY UPDATE OF a" if lock else "")
            ),
            {"n": number},
        )
    ).first()
    if row is None:
        raise NotFound(f"account {number} not found")
    points = list(
        await conn.execute(sa.text(_POINTS.format(where="sp.account_id = :a")), {"a": row.id})
    )
    sites = await sites_of(conn, who)
    if sites is not None and not any(p.site_id in sites for p in points):
        raise NotFound(f"account {number} not found")
    return _Account(
        row.id, row.number, row.status, row.customer_id, row.wallet_id, row.balance
    ), points


async def _new_account(
    conn: AsyncConnection, tenant_id: uuid.UUID, customer_id: uuid.UUID, now: datetime
) -> _Account:
    account_id = uuid.uuid4()
    number = f"A{await next_number(conn, tenant_id, 'account'):06d}"
    wallet = ledger.wallet(account_id, number)
    wallet_id = (await ensure_accounts(conn, tenant_id, [wallet]))[wallet.code][0]
    await conn.execute(
        sa.text(
            "INSERT INTO account (id, tenant_id, customer_id, number, wallet_id, status, "
            "opened_at) VALUES (:id, :t, :c, :n, :w, 'active', :now)"
        ),
        {
            "id": account_id,
            "t": tenant_id,
            "c": customer_id,
            "n": number,
            "w": wallet_id,
            "now": now,
        },
    )
    return _Account(account_id, number, "active", customer_id, wallet_id, Decimal("0.00"))


# -- 开户 open account ------------------------------------------------------------------------


# A new point's default name: its premises and the utility as counter staff say it.
UTILITY_NAMES = {"electricity": "电", "water": "水"}


@dataclass(frozen=True)
class PointOrder:
    utility: str
    tariff_id: uuid.UUID
    name: str | None = None
    control_mode: str = "cloud"


@dataclass(frozen=True)
class FirstSale:
    amount: Decimal
    method: str
    outlet_id: uuid.UUID
    idempotency_key: str


@dataclass(frozen=True)
class OpenRequest:
    premises_id: uuid.UUID
    points: tuple[PointOrder, ...]
    customer_id: uuid.UUID | None = None
    customer: CustomerData | None = None
    first_sale: FirstSale | None = None


@dataclass(frozen=True)
class Opened:
    account_number: str
    account_id: uuid.UUID
    customer_id: uuid.UUID
    points: tuple[uuid.UUID, ...]
    sale: SaleReceipt | None = None


async def open_account(
    db: Database, who: Principal, req: OpenRequest, now: datetime, timing: CommandTiming
) -> Opened:
    """开户: customer (existing or new), account, its points at a premises and the first
    sale, if any, in one transaction: the sale is a counter sale like any other
    (:func:`cloud.payments.counter.sell_in`: its receipt number, entry and receipt), and a
    sale the counter refuses opens nothing. The first sale's idempotency key makes the
    opening idempotent too: a repeated request returns the opening it made."""
    who.require("account.open")
    if (req.customer_id is None) == (req.customer is None):
        raise Invalid("give either customer_id or a new customer")
    fs = req.first_sale
    if fs is not None:
        who.require("sale.create")
        core.check_first_sale(fs.amount, fs.method, [o.control_mode for o in req.points])
    async with db.tenant(who.tenant_id) as conn:
        if fs is not None and (done := await _opened_before(conn, fs)) is not None:
            return done
        prem = (
            await conn.execute(
                sa.text(
                    "SELECT p.id, p.site_id, p.floor, p.number, b.name AS building FROM premises p "
                    "JOIN building b ON b.id = p.building_id WHERE p.id = :p FOR NO KEY UPDATE OF p"
                ),
                {"p": req.premises_id},
            )
        ).first()
        if prem is None:
            raise NotFound(f"premises {req.premises_id} not found")
        await require_site(conn, who, prem.site_id)
        live = [
            LivePoint(r.utility, AccountState(r.number, r.status, Decimal(0)))
            for r in await conn.execute(
                sa.text(
                    "SELECT sp.utility, a.number, a.status FROM service_point sp "
                    "JOIN account a ON a.id = sp.account_id "
                    "WHERE sp.premises_id = :p AND sp.removed_at IS NULL"
                ),
                {"p": prem.id},
            )
        ]
        core.check_open([PointWish(o.utility, o.control_mode) for o in req.points], live)
        tariffs = {
            r.id: r
            for r in await conn.execute(
                sa.text(
                    "SELECT id, name, utility, site_id, active FROM tariff "
                    "WHERE id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": pg_array({o.tariff_id for o in req.points})},
            )
        }
        for o in req.points:
            t = tariffs.get(o.tariff_id)
            if t is None or (t.site_id is not None and t.site_id != prem.site_id):
                raise NotFound(f"tariff {o.tariff_id} not found")
            if t.utility != o.utility:
                raise Invalid(f"tariff {t.name} is for {t.utility}, not {o.utility}")
            if not t.active:
                raise Invalid(f"tariff {t.name} is no longer in use")
        if req.customer_id is not None:
            customer_id = (await _customer(conn, who, req.customer_id)).id
        else:
            assert req.customer is not None
            customer_id = await _add_customer(conn, who, req.customer, now)
        acct = await _new_account(conn, who.tenant_id, customer_id, now)
        label = f"{prem.building}-{prem.floor}-{prem.number}"
        point_ids = []
        for o in req.points:
            point_id = uuid.uuid4()
            await conn.execute(
                sa.text(
                    "INSERT INTO service_point (id, tenant_id, site_id, account_id, tariff_id, "
                    "name, utility, control_mode, credit_limit, emergency_credit, common_area, "
                    "premises_id) VALUES (:id, :t, :s, :a, :tar, :n, :u, :m, 0, 0, false, :p)"
                ),
                {
                    "id": point_id,
                    "t": who.tenant_id,
                    "s": prem.site_id,
                    "a": acct.id,
                    "tar": o.tariff_id,
                    "n": o.name or f"{label} {UTILITY_NAMES.get(o.utility, o.utility)}",
                    "u": o.utility,
                    "m": o.control_mode,
                    "p": prem.id,
                },
            )
            point_ids.append(point_id)
        sale = None
        if fs is not None:
            sale = await sell_in(
                conn,
                who,
                SaleRequest(acct.number, fs.amount, fs.method, fs.outlet_id),
                fs.idempotency_key,
                now,
                timing,
            )
            if sale.replayed:  # the key was taken by a concurrent opening: this one is void
                raise Conflict(
                    f"idempotency key {fs.idempotency_key!r} was already used for a different sale"
                )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "account.open",
            f"account:{acct.number}",
            now,
            {
                "customer": str(customer_id),
                "premises": label,
                "points": str(len(point_ids)),
                "receipt": sale.receipt_no if sale else "",
            },
        )
    return Opened(acct.number, acct.id, customer_id, tuple(point_ids), sale)


async def _opened_before(conn: AsyncConnection, fs: FirstSale) -> Opened | None:
    """The opening a first sale's idempotency key already made (its sale replayed; a
    different request under the same key is a Conflict), or None."""
    row = (
        await conn.execute(
            sa.text(
                "SELECT a.id, a.number, a.customer_id, a.opened_at = s.created_at AS opening "
                "FROM counter_sale s JOIN account a ON a.id = s.account_id "
                "WHERE s.idempotency_key = :k"
            ),
            {"k": fs.idempotency_key},
        )
    ).first()
    if row is None:
        return None
    if not row.opening:  # a later sale to some account: not an opening
        raise Conflict(
            f"idempotency key {fs.idempotency_key!r} was already used for a different sale"
        )
    sale = await replay_sale(
        conn,
        fs.idempotency_key,
        SaleRequest(row.number, fs.amount, fs.method, fs.outlet_id),
    )
    points = await conn.scalars(
        sa.text("SELECT id FROM service_point WHERE account_id = :a ORDER BY utility, id"),
        {"a": row.id},
    )
    return Opened(row.number, row.id, row.customer_id, tuple(points), sale)


# -- 装表 install -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceSpec:
    """The meter to install: ``key`` on ``gateway_code``'s bus. ``profile``, ``bus`` and
    ``address`` are needed when the device is not registered yet (by hand or from a scan
    snippet); a device the gateway's pushed config registered is found by its key."""

    gateway_code: str
    key: str
    channel: int = 1
    profile: str | None = None
    bus: str | None = None
    address: str | None = None
    serial: str | None = None


def device_from_snippet(gateway_code: str, snippet: str, key: str, channel: int = 1) -> DeviceSpec:
    """The device ``key`` of a ``prepay-gateway scan`` snippet (the agent's config YAML)."""
    try:
        doc = yaml.safe_load(snippet)
    except yaml.YAMLError as exc:
        raise Invalid(f"the scan snippet is not YAML: {exc}") from None
    buses = doc.get("buses") if isinstance(doc, dict) else None
    if not isinstance(buses, list):
        raise Invalid("the scan snippet has no buses")
    for bus in buses:
        if not isinstance(bus, dict):
            continue
        for d in bus.get("devices") or []:
            if isinstance(d, dict) and d.get("key") == key:
                address = d.get("address") if d.get("address") is not None else d.get("unit")
                if address is None or not d.get("profile") or d.get("profile") == "FILL-IN":
                    raise Invalid(f"device {key} in the snippet has no profile or address")
                return DeviceSpec(
                    gateway_code,
                    key,
                    channel,
                    profile=str(d["profile"]),
                    bus=str(bus.get("name") or ""),
                    address=str(address),
                )
    raise Invalid(f"device {key} is not in the scan snippet")


@functools.cache
def _profiles() -> frozenset[str]:
    from meter_profiles.loader import load_profiles

    return frozenset(load_profiles())


@dataclass(frozen=True)
class InstallRequest:
    device: DeviceSpec
    register: Decimal | None = None
    read: bool = False  # take the newest reading the gateway already sent


@dataclass(frozen=True)
class Installed:
    point_id: uuid.UUID
    channel_id: uuid.UUID
    device_id: uuid.UUID
    install_register: Decimal
    history: int  # quarantined readings moved into the meter's history
    commands: int


async def _device(
    conn: AsyncConnection, tenant_id: uuid.UUID, spec: DeviceSpec, site_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """(gateway, device, channel) of ``spec``, registering the device and channel if new."""
    gw = (
        await conn.execute(
            sa.text("SELECT id, site_id FROM gateway WHERE code = :c"), {"c": spec.gateway_code}
        )
    ).first()
    if gw is None:
        raise NotFound(f"gateway {spec.gateway_code} not found")
    if gw.site_id != site_id:
        raise Invalid(f"gateway {spec.gateway_code} is at another site than the service point")
    if not 1 <= spec.channel <= 64:
        raise Invalid(f"channel {spec.channel} must be between 1 and 64")
    dev = (
        await conn.execute(
            sa.text("SELECT id, profile FROM device WHERE gateway_id = :g AND key = :k"),
            {"g": gw.id, "k": spec.key},
        )
    ).first()
    if dev is not None:
        if spec.profile is not None and spec.profile != dev.profile:
            raise Invalid(f"device {spec.key} is registered with profile {dev.profile}")
        device_id = dev.id
    else:
        if not (spec.profile and spec.bus and spec.address):
            raise Invalid(
                f"device {spec.key} is not registered on {spec.gateway_code}: "
                "give its profile, bus and address"
            )
        if spec.profile not in _profiles():
            raise Invalid(f"unknown meter profile {spec.profile!r}")
        device_id = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO device (id, tenant_id, gateway_id, key, profile, bus, address, "
                "serial, close_only) VALUES (:id, :t, :g, :k, :p, :b, :a, :s, false)"
            ),
            {
                "id": device_id,
                "t": tenant_id,
                "g": gw.id,
                "k": spec.key,
                "p": spec.profile,
                "b": spec.bus,
                "a": spec.address,
                "s": spec.serial,
            },
        )
    channel_id = await conn.scalar(
        sa.text("SELECT id FROM channel WHERE device_id = :d AND number = :n"),
        {"d": device_id, "n": spec.channel},
    )
    if channel_id is None:
        channel_id = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO channel (id, tenant_id, device_id, number) VALUES (:id, :t, :d, :n)"
            ),
            {"id": channel_id, "t": tenant_id, "d": device_id, "n": spec.channel},
        )
    return gw.id, device_id, channel_id


_NEWEST_STORED = sa.text(
    "SELECT measured_at, total FROM reading WHERE channel_id = :c AND total IS NOT NULL "
    "ORDER BY measured_at DESC LIMIT 1"
)


async def _newest(conn: AsyncConnection, channel_id: uuid.UUID) -> Reading | None:
    """The channel's newest stored reading with a register (its quarantined history
    adopted first: see :func:`adopt_quarantine`)."""
    r = (await conn.execute(_NEWEST_STORED, {"c": channel_id})).first()
    return None if r is None else Reading(r.measured_at, r.total)


async def adopt_quarantine(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    gateway_id: uuid.UUID,
    device_key: str,
    channel: int,
    channel_id: uuid.UUID,
    max_age: timedelta,
) -> int:
    """Move the quarantined readings of an unregistered (device, channel) into ``reading``
    as the channel's history, and out of the quarantine. Returns how many moved.

    A reading the ingest would not have stored had the meter been known (measured more
    than ``max_age``, the site's, before it arrived; ahead of its arrival; a negative
    register) stays in the quarantine under that reason instead of ``unknown_channel``."""
    where = (
        "FROM reading_quarantine WHERE gateway_id = :g AND device = :d AND channel = :n "
        "AND reason = 'unknown_channel'"
    )
    key = {"g": gateway_id, "d": device_key, "n": channel}
    rows = (
        await conn.execute(sa.text(f"SELECT measured_at, reading, received_at {where}"), key)
    ).all()
    values = []
    refused: dict[str, list[datetime]] = {}
    for r in rows:
        try:
            w = WireReading.model_validate(r.reading)
        except ValidationError:  # (kept where it is: the ingest stored it as it came)
            continue
        why = unratable(w, r.received_at + MAX_FUTURE, r.received_at - max_age, None)
        if why is not None:
            refused.setdefault(why, []).append(r.measured_at)
            continue
        values.append(
            {
                "c": channel_id,
                "t": tenant_id,
                "m": w.measured_at,
                "q": r.measured_at,
                "rcv": r.received_at,
                "total": w.total,
                "tou": None if w.tou is None else "{" + ",".join(str(v) for v in w.tou) + "}",
                "v": w.voltage,
                "i": w.current,
                "p": w.power,
                "s": None if w.supply is None else w.supply.value == "on",
                "mb": w.meter_balance,
                "pc": w.purchase_count,
            }
        )
    for why, times in refused.items():  # (the app may not update the quarantine: re-keep)
        gone = await conn.execute(
            sa.text(
                f"DELETE {where} AND measured_at = ANY(CAST(:at AS timestamptz[])) "
                "RETURNING measured_at, reading, received_at"
            ),
            {**key, "at": pg_array(times)},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO reading_quarantine (gateway_id, device, channel, measured_at, "
                "tenant_id, reason, reading, received_at) "
                "VALUES (:g, :d, :n, :m, :t, :why, CAST(:r AS jsonb), :rcv)"
            ),
            [
                {
                    **key,
                    "m": g.measured_at,
                    "t": tenant_id,
                    "why": why,
                    "r": json.dumps(g.reading),
                    "rcv": g.received_at,
                }
                for g in gone
            ],
        )
    if not values:
        return 0
    await conn.execute(
        sa.text(
            "INSERT INTO reading (channel_id, tenant_id, measured_at, received_at, total, "
            "tou, voltage, current, power, supply_on, meter_balance, purchase_count) "
            "VALUES (:c, :t, :m, :rcv, :total, CAST(:tou AS numeric[]), :v, :i, :p, :s, "
            ":mb, :pc) ON CONFLICT (channel_id, measured_at) DO NOTHING"
        ),
        values,
    )
    await conn.execute(
        sa.text(f"DELETE {where} AND measured_at = ANY(CAST(:at AS timestamptz[]))"),
        {**key, "at": pg_array(v["q"] for v in values)},
    )
    return len(values)


def _base(at: datetime, register: Decimal) -> Callable[[Any], RatingOutcome]:
    """A rating step making (at, register) the point's base: readings measured before it
    are late (never rated); consumption counts from the register on."""

    def step(p: Any) -> RatingOutcome:
        mark: RatingMark = p.mark
        last = mark.last_measured_at
        return RatingOutcome(
            replace(
                mark,
                last_measured_at=at if last is None or last < at else last,
                last_register=register,
                last_tou=None,
                stuck=False,
            )
        )

    return step


async def install(
    db: Database,
    who: Principal,
    point_id: uuid.UUID,
    req: InstallRequest,
    now: datetime,
    timing: CommandTiming,
) -> Installed:
    """装表: register the device (if new), bind its channel to the point at the
    installation register (typed, or the newest reading its gateway already sent), move
    the channel's quarantined readings into its history; rating counts from the register."""
    who.require("meter.install")
    if req.read == (req.register is not None):
        raise Invalid("give the installation register, or read it from the meter, not both")
    async with db.tenant(who.tenant_id) as conn:
        row = await _point(conn, who, point_id)
        state = _state(row)
        core.check_installable(state)
        gateway_id, device_id, channel_id = await _device(
            conn, who.tenant_id, req.device, row.site_id
        )
        bound = await conn.scalar(
            sa.text(
                "SELECT service_point_id FROM binding WHERE channel_id = :c AND removed_at IS NULL"
            ),
            {"c": channel_id},
        )
        # the history first: the newest reading is then one the ingest would have stored
        max_age = await conn.scalar(
            sa.text("SELECT reading_max_age_days FROM site WHERE id = :s"), {"s": row.site_id}
        )
        history = await adopt_quarantine(
            conn,
            who.tenant_id,
            gateway_id,
            req.device.key,
            req.device.channel,
            channel_id,
            timedelta(days=max_age),
        )
        newest = await _newest(conn, channel_id)
        wanted = req.register if not req.read else (newest.register if newest else None)
        register = core.check_install(state, bound, wanted, newest)
        try:
            await conn.execute(
                sa.text(
                    "INSERT INTO binding (id, tenant_id, service_point_id, channel_id, "
                    "installed_at, install_register) "
                    "VALUES (gen_random_uuid(), :t, :p, :c, :at, :r)"
                ),
                {"t": who.tenant_id, "p": point_id, "c": channel_id, "at": now, "r": register},
            )
        except sa.exc.IntegrityError:  # another installer bound the channel or point just now
            raise core.LifecycleConflict(
                "this meter channel or service point was bound by someone else just now"
            ) from None
        report = await apply_to_points(
            conn,
            who.tenant_id,
            [point_id],
            _base(now, register),
            now,
            timing,
            who.actor,
            channel_id,
        )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "meter.install",
            f"service_point:{point_id}",
            now,
            {
                "gateway": req.device.gateway_code,
                "device": req.device.key,
                "channel": str(req.device.channel),
                "register": str(register),
                "history": str(history),
            },
        )
    return Installed(point_id, channel_id, device_id, register, history, report.commands)


# -- 换表 swap --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwapRequest:
    device: DeviceSpec
    final_register: Decimal
    initial_register: Decimal


@dataclass(frozen=True)
class Swapped:
    point_id: uuid.UUID
    channel_id: uuid.UUID
    charged: Decimal
    credit_moved: Decimal  # meter-controlled: the old meter's credit sent on to the new one
    commands: int


async def swap(
    db: Database,
    who: Principal,
    point_id: uuid.UUID,
    req: SwapRequest,
    now: datetime,
    timing: CommandTiming,
) -> Swapped:
    """换表 (:func:`cloud.registry.service.swap_meter`): the old meter's final reading rated,
    the new meter's initial reading the base; a meter-controlled point's remaining credit
    (the old meter's last reported balance, still in the wallet) is sent on to the new meter
    as a recharge."""
    who.require("meter.install")
    async with db.tenant(who.tenant_id) as conn:
        row = await _point(conn, who, point_id)
        state = _state(row)
        core.check_swap(state, None, req.final_register, req.initial_register)
        _, _, channel_id = await _device(conn, who.tenant_id, req.device, row.site_id)
        bound = await conn.scalar(
            sa.text(
                "SELECT service_point_id FROM binding WHERE channel_id = :c AND removed_at IS NULL"
            ),
            {"c": channel_id},
        )
        core.check_swap(state, bound, req.final_register, req.initial_register)
        report = await registry.swap_meter_in(
            conn,
            who.tenant_id,
            registry.MeterSwap(point_id, channel_id, now, req.final_register, req.initial_register),
            who.actor,
            timing,
        )
        moved = Decimal(0)
        commands = report.commands
        if row.control_mode == "meter":
            credit = await conn.scalar(
                sa.text(
                    "UPDATE control_state cs SET meter_balance = NULL, meter_balance_at = NULL, "
                    "purchase_count = NULL FROM control_state old "
                    "WHERE old.service_point_id = cs.service_point_id AND cs.service_point_id = :p "
                    "RETURNING old.meter_balance"
                ),
                {"p": point_id},
            )
            if credit is not None and credit > 0:
                moved = credit
                commands += await after_topup(
                    conn,
                    who.tenant_id,
                    row.account_id,
                    credit,
                    f"swap:{point_id}",
                    now,
                    timing,
                    who.actor,
                )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "meter.swap",
            f"service_point:{point_id}",
            now,
            {
                "device": req.device.key,
                "final": str(req.final_register),
                "initial": str(req.initial_register),
                "credit_moved": str(moved),
            },
        )
    return Swapped(point_id, channel_id, report.charged, moved, commands)


# -- 拆表 remove, and the final readings of points that leave ---------------------------------


def _final_step(finals: dict[uuid.UUID, Reading | None]) -> Callable[[Any], RatingOutcome]:
    """Rate each point's final reading (None: its newest is final) and journal its open
    usage window: the point is rated no more."""

    def step(p: Any) -> RatingOutcome:
        r = finals.get(p.id)
        out = (
            rate(p.mark, [RegisterReading(r.at, r.register)], p.terms)
            if r is not None
            else RatingOutcome(p.mark)
        )
        mark, posting = flush(out.mark, _FAR)
        if posting is None:
            return out
        return replace(out, mark=mark, postings=(*out.postings, posting))

    return step


async def _end_bindings(
    conn: AsyncConnection,
    rows: Sequence[Any],
    finals: dict[uuid.UUID, Reading | None],
    now: datetime,
    retire: bool,
) -> dict[uuid.UUID, Decimal | None]:
    """End the points' bindings at their final register (and retire the points); returns
    point → final register."""
    out: dict[uuid.UUID, Decimal | None] = {}
    for r in rows:
        final = finals.get(r.id)
        register = final.register if final is not None else r.last_register
        out[r.id] = register
        if r.binding_id is not None:
            await conn.execute(
                sa.text("UPDATE binding SET removed_at = :at, removal_register = :r WHERE id = :b"),
                {"at": now, "r": register, "b": r.binding_id},
            )
        if retire:
            await conn.execute(
                sa.text("UPDATE service_point SET removed_at = :at WHERE id = :p"),
                {"at": now, "p": r.id},
            )
    return out


@dataclass(frozen=True)
class Removed:
    point_id: uuid.UUID
    final_register: Decimal | None
    charged: Decimal


async def remove(
    db: Database,
    who: Principal,
    point_id: uuid.UUID,
    final_register: Decimal | None,
    now: datetime,
    timing: CommandTiming,
) -> Removed:
    """拆表: the final reading (typed, or the newest rated) rated, the binding ended, the
    point unmetered (it stays on its account and may get a meter again)."""
    who.require("meter.install")
    async with db.tenant(who.tenant_id) as conn:
        row = await _point(conn, who, point_id)
        final = core.check_remove(_state(row), final_register, now)
        finals = {point_id: final}
        registers = await _end_bindings(conn, [row], finals, now, retire=False)
        report = await apply_to_points(
            conn, who.tenant_id, [point_id], _final_step(finals), now, timing, who.actor
        )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "meter.remove",
            f"service_point:{point_id}",
            now,
            {"final": str(registers[point_id])},
        )
    return Removed(point_id, registers[point_id], report.charged)


# -- the balance of an account that closes ----------------------------------------------------


@dataclass(frozen=True)
class SettleRequest:
    how: Settlement | None = None
    to_account: str | None = None  # Settlement.MOVE: where the balance goes
    refund_amount: Decimal | None = None  # the cash the operator counts out (checked)
    write_off: bool = False
    reason: str | None = None
    finals: dict[uuid.UUID, Decimal] = field(default_factory=dict)  # typed final registers
    # 消户, Settlement.REFUND: first back to the account's WeChat payments, newest first;
    # whatever they cannot take is refunded in cash
    to_wechat: bool = False


@dataclass(frozen=True)
class Settled:
    account_number: str
    refunded: Decimal
    moved: Decimal
    written_off: Decimal
    to_account: str | None
    receipt_no: str | None  # the refund's receipt, for the counter to print
    entry_id: uuid.UUID | None
    new_account: str | None = None  # 过户: the account the points moved to
    points: tuple[uuid.UUID, ...] = ()  # 过户: the new account's points
    wechat_refunds: tuple[ClosingRefund, ...] = ()  # 消户 to_wechat: WeChat is asked next


def _finals(
    rows: Sequence[Any], typed: dict[uuid.UUID, Decimal], now: datetime
) -> dict[uuid.UUID, Reading | None]:
    ids = {r.id for r in rows}
    unknown = set(typed) - ids
    if unknown:
        raise Invalid(f"service point {sorted(unknown, key=str)[0]} is not on this account")
    out: dict[uuid.UUID, Reading | None] = {}
    for r in rows:
        state = _state(r)
        out[r.id] = core.check_remove(state, typed.get(r.id), now) if state.metered else None
    return out


async def _settle(
    conn: AsyncConnection,
    who: Principal,
    acct: _Account,
    req: SettleRequest,
    target: _Account | None,
    now: datetime,
    cause: str,
) -> tuple[Money, str | None, uuid.UUID | None]:
    """Decide and post what the closing balance becomes (one entry); returns the money,
    the refund's receipt number and the entry."""
    balance = await balance_of(conn, acct.wallet.code)
    money = core.settle(
        replace(acct.state, balance=balance),
        req.how,
        target.state if target is not None else None,
        req.refund_amount,
        req.write_off,
        "account.write_off" in who.permissions,
        req.reason,
        transfer=cause == "transfer",
    )
    receipt = None
    draft = None
    if money.refund:
        receipt = f"R{await next_number(conn, who.tenant_id, 'receipt'):08d}"
        draft = ledger.EntryDraft(
            idempotency_key=f"refund:{cause}:{acct.id}",
            kind=ledger.EntryKind.REFUND,
            actor=who.actor,
            effective_at=now,
            legs=ledger.transfer(
                acct.wallet, ledger.cash_drawer(who.operator_id, who.username), money.refund
            ),
            reason=f"{cause}: balance refunded in cash, receipt {receipt}",
        )
    elif money.moved:
        assert target is not None
        draft = ledger.EntryDraft(
            idempotency_key=f"transfer:{cause}:{acct.id}",
            kind=ledger.EntryKind.TRANSFER,
            actor=who.actor,
            effective_at=now,
            legs=ledger.transfer(acct.wallet, target.wallet, money.moved),
            reason=f"{cause}: balance moved to account {target.number}",
        )
    elif money.written_off:
        draft = ledger.EntryDraft(
            idempotency_key=f"write_off:{acct.id}",
            kind=ledger.EntryKind.WRITE_OFF,
            actor=who.actor,
            effective_at=now,
            legs=ledger.transfer(ledger.adjustments(), acct.wallet, money.written_off),
            reason=f"{cause}: arrears written off: {req.reason}",
        )
    entry = (await post(conn, who.tenant_id, draft)).entry_id if draft is not None else None
    if money.refund:
        await outbox.refund_paid(
            conn, who.tenant_id, acct.id, money.refund, f"refund:{cause}:{acct.id}", now
        )
    return money, receipt, entry


async def _close(conn: AsyncConnection, acct: _Account, now: datetime) -> None:
    await conn.execute(
        sa.text("UPDATE account SET status = 'closed', closed_at = :now WHERE id = :a"),
        {"now": now, "a": acct.id},
    )


async def _target(conn: AsyncConnection, who: Principal, number: str | None) -> _Account | None:
    if number is None:
        return None
    target, _ = await _account(conn, who, number)
    return target


_METER_CREDIT = sa.text(
    "SELECT sp.name, cs.meter_balance, cs.meter_balance_at, "
    "(SELECT max(CASE WHEN c.state = 'acked' THEN coalesce(c.finished_at, c.created_at) "
    "ELSE c.deadline END) FROM device_command c WHERE c.channel_id = b.channel_id "
    "AND c.action = 'recharge' AND c.state IN ('acked', 'expired')) AS recharged_at "
    "FROM service_point sp JOIN binding b ON b.service_point_id = sp.id AND b.removed_at IS NULL "
    "LEFT JOIN control_state cs ON cs.service_point_id = sp.id "
    "WHERE sp.id = ANY(CAST(:ids AS uuid[])) AND sp.control_mode = 'meter' ORDER BY sp.id"
)


async def _meter_credit(conn: AsyncConnection, rows: Sequence[Any]) -> list[core.MeterCredit]:
    """What the meters of the meter-controlled points among ``rows`` (bound now) last said
    about the credit they hold (an acked recharge counts from its ack, an expired one from
    its deadline: it may have reached the meter until then)."""
    ids = [r.id for r in rows if r.control_mode == "meter" and r.channel_id is not None]
    if not ids:
        return []
    return [
        core.MeterCredit(m.name, m.meter_balance, m.meter_balance_at, m.recharged_at)
        for m in await conn.execute(_METER_CREDIT, {"ids": pg_array(ids)})
    ]


async def _orders(conn: AsyncConnection, rows: Sequence[Any]) -> list[core.ControlOrder]:
    """The keep-power and overrides the points' control state holds (expired ones too)."""
    out: list[core.ControlOrder] = []
    for r in await conn.execute(
        sa.text(
            "SELECT sp.name, cs.keep_power_by, cs.keep_power_until, cs.override_by, "
            "cs.override_until FROM control_state cs JOIN service_point sp "
            "ON sp.id = cs.service_point_id WHERE cs.service_point_id = ANY(CAST(:ids AS uuid[])) "
            "AND (cs.keep_power_by IS NOT NULL OR cs.override IS NOT NULL) ORDER BY sp.id"
        ),
        {"ids": pg_array(r.id for r in rows)},
    ):
        if r.keep_power_by is not None:
            out.append(core.ControlOrder(r.name, "keep_power", r.keep_power_by, r.keep_power_until))
        if r.override_by is not None:
            out.append(core.ControlOrder(r.name, "override", r.override_by, r.override_until))
    return out


async def _end_control(conn: AsyncConnection, rows: Sequence[Any]) -> None:
    """Retired points are decided no more: what their control state had pending (a notice
    before a trip, a deferral, a recheck, emergency credit, keep-power, an override) ends
    with them, so no sweep re-decides a closed account's point nor notifies its customer.
    The meter's mirrored balance and purchase count stay (they are the meter's)."""
    await conn.execute(
        sa.text(
            "UPDATE control_state SET notice_at = NULL, deferred_until = NULL, "
            "recheck_at = NULL, emergency = false, keep_power_by = NULL, "
            "keep_power_reason = NULL, keep_power_until = NULL, override = NULL, "
            "override_by = NULL, override_reason = NULL, override_until = NULL, "
            "override_until_credit = false WHERE service_point_id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"ids": pg_array(r.id for r in rows)},
    )


# -- 消户 cancel ------------------------------------------------------------------------------


async def cancel(
    db: Database,
    who: Principal,
    number: str,
    req: SettleRequest,
    now: datetime,
    timing: CommandTiming,
) -> Settled:
    """消户: every point's final reading rated and the point removed; then the balance (after
    those charges) refunded in cash, moved to another account, or — in debt — written off;
    the account closed.

    A meter-controlled point's credit is held on its meter (DESIGN §6), the wallet
    mirroring it; the meter stays at the premises when the account closes. So the balance
    is refunded or moved only once that credit is off the meter: the meter must have
    reported its credit since its last recharge, and it must be nothing — credit still on
    it is first deducted at the meter (DESIGN §7, "a refund with a deduction at the meter";
    with the vendor's tool, the platform having no deduction command yet) and read back,
    or the meter is removed (拆表) first. Otherwise the customer would be paid twice: the
    cash, and the supply the meter still gives on its own credit
    (:func:`cloud.lifecycle.core.check_meter_credit`). Whatever the points' control state
    had pending (a notice, a deferral, keep-power, an override) ends with them, and the
    supply of each cloud-controlled point is cut (:func:`cut_for_closure`): the meter stays,
    and what it supplied after the closure would be charged to nobody."""
    who.require("account.close")
    if req.how is Settlement.MOVE and req.to_account is None:
        raise Invalid("moving the balance needs to_account")
    async with db.tenant(who.tenant_id) as conn:
        acct, rows = await _account(conn, who, number)
        core.check_cancel([_state(r) for r in rows])
        if acct.status == "closed":
            raise core.LifecycleConflict(f"account {number} is closed")
        live = [r for r in rows if r.removed_at is None]
        finals = _finals(live, req.finals, now)
        core.check_meter_credit(await _meter_credit(conn, live))
        target = await _target(conn, who, req.to_account) if req.how is Settlement.MOVE else None
        ended = [o for o in await _orders(conn, live) if o.until is None or o.until > now]
        await _end_control(conn, live)
        cuts = await cut_for_closure(
            conn, who.tenant_id, [r.id for r in live], f"消户 {number}", now, timing, who.actor
        )
        await _end_bindings(conn, live, finals, now, retire=True)
        await apply_to_points(
            conn, who.tenant_id, [r.id for r in live], _final_step(finals), now, timing, who.actor
        )
        wechat = await _refund_to_wechat(conn, who, acct, req, now)
        money, receipt, entry = await _settle(conn, who, acct, req, target, now, "cancel")
        await _close(conn, acct, now)
        if money.moved and target is not None:
            await after_topup(
                conn,
                who.tenant_id,
                target.id,
                money.moved,
                f"transfer:{number}",
                now,
                timing,
                who.actor,
            )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "account.cancel",
            f"account:{number}",
            now,
            {
                "refunded": str(money.refund),
                "moved": str(money.moved),
                "written_off": str(money.written_off),
                "to": req.to_account or "",
                "receipt": receipt or "",
                "wechat_refunded": str(sum((p.amount for p in wechat), Decimal(0))),
                "reason": req.reason or "",
                "orders_ended": ", ".join(f"{o.kind}:{o.point}" for o in ended),
                "supply_cuts": str(cuts),
            },
        )
    return Settled(
        number,
        money.refund,
        money.moved,
        money.written_off,
        req.to_account if money.moved else None,
        receipt,
        entry,
        wechat_refunds=tuple(wechat),
    )


async def _refund_to_wechat(
    conn: AsyncConnection, who: Principal, acct: _Account, req: SettleRequest, now: datetime
) -> list[ClosingRefund]:
    """消户 refunded to WeChat: the part of the balance the account's WeChat payments can
    take back, recorded in this transaction (the rest is left for the cash refund)."""
    if not req.to_wechat:
        return []
    if req.how is not Settlement.REFUND or req.refund_amount is not None:
        raise Invalid("a refund to WeChat Pay refunds the balance; the counter pays the rest")
    held = await balance_of(conn, acct.wallet.code)
    if held <= 0:
        return []
    return await refund_closing(
        conn,
        who.tenant_id,
        acct.id,
        held,
        req.reason or "消户退款",
        who.actor,
        f"close_{acct.id.hex[:20]}",
        now,
    )


# -- 过户 transfer ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferRequest:
    settle: SettleRequest  # how: MOVE (to the new account) or REFUND
    customer_id: uuid.UUID | None = None
    customer: CustomerData | None = None


_SUCCESSOR = sa.text(
    "INSERT INTO service_point (id, tenant_id, site_id, account_id, tariff_id, name, utility, "
    "control_mode, credit_limit, emergency_credit, alarm1, alarm2, max_rate, floor_area, "
    "common_area, premises_id) SELECT :new, tenant_id, site_id, :a, tariff_id, name, utility, "
    "control_mode, credit_limit, emergency_credit, alarm1, alarm2, max_rate, floor_area, "
    "common_area, premises_id FROM service_point WHERE id = :old"
)
# A successor's control state: fresh (nothing pending, no orders), but with what the meter
# last reported of its own balance and purchase count (the meter's, not the customer's).
_SUCCESSOR_CONTROL = sa.text(
    "INSERT INTO control_state (service_point_id, tenant_id, meter_balance, meter_balance_at, "
    "purchase_count) SELECT :new, tenant_id, meter_balance, meter_balance_at, purchase_count "
    "FROM control_state WHERE service_point_id = :old"
)


async def transfer(
    db: Database,
    who: Principal,
    number: str,
    req: TransferRequest,
    now: datetime,
    timing: CommandTiming,
) -> Settled:
    """过户: the account's points move to a new account of another customer (new or
    existing): each point is retired at its final reading and a successor point on the new
    account is bound to the same meter from that register, so the readings, charges and
    entries stay with the old account. The old balance moves to the new account or is
    refunded in cash; the old account closes.

    A debt is the old customer's: it is never moved to the new account; it is collected
    first (a sale to the old account) or written off, with its permission and reason, as
    for 消户. Keep-power and overrides in force are the current customer's orders: the
    transfer is refused until the operator ends them (:func:`core.check_no_orders`).
    Everything else the old points' control state had pending (a notice before a trip, a
    deferral, emergency credit, the alarm level) ends with them: each successor starts
    with a fresh control state, decided at once by the new account's balance, its meter
    converged (keep-power off, supply by the new decision). What the meter itself reported
    — a meter-controlled point's mirrored balance and purchase count — moves with the meter
    to the successor. Refunding the old balance in cash (rather than moving it) needs a
    meter-controlled meter's credit off the meter first, as for 消户: otherwise the new
    customer would draw on credit the old one was paid back."""
    who.require("account.close")
    who.require("account.open")
    if (req.customer_id is None) == (req.customer is None):
        raise Invalid("give either customer_id or a new customer")
    async with db.tenant(who.tenant_id) as conn:
        acct, rows = await _account(conn, who, number)
        if req.customer_id is not None:
            customer_id = (await _customer(conn, who, req.customer_id)).id
        else:
            customer_id = None
        core.check_transfer(acct.state, [_state(r) for r in rows], customer_id == acct.customer_id)
        live = [r for r in rows if r.removed_at is None]
        finals = _finals(live, req.settle.finals, now)
        core.check_no_orders(await _orders(conn, live), now)
        if req.settle.how is not Settlement.MOVE:
            core.check_meter_credit(await _meter_credit(conn, live))
        if customer_id is None:
            assert req.customer is not None
            customer_id = await _add_customer(conn, who, req.customer, now)
        new = await _new_account(conn, who.tenant_id, customer_id, now)
        registers = await _end_bindings(conn, live, finals, now, retire=True)
        await apply_to_points(
            conn, who.tenant_id, [r.id for r in live], _final_step(finals), now, timing, who.actor
        )
        await _end_control(conn, live)
        successors: list[uuid.UUID] = []
        bases: dict[uuid.UUID, Decimal] = {}
        for r in live:
            succ = uuid.uuid4()
            await conn.execute(_SUCCESSOR, {"new": succ, "a": new.id, "old": r.id})
            await conn.execute(_SUCCESSOR_CONTROL, {"new": succ, "old": r.id})
            successors.append(succ)
            if r.channel_id is not None:
                reg = registers[r.id]
                await conn.execute(
                    sa.text(
                        "INSERT INTO binding (id, tenant_id, service_point_id, channel_id, "
                        "installed_at, install_register) "
                        "VALUES (gen_random_uuid(), :t, :p, :c, :at, :r)"
                    ),
                    {"t": who.tenant_id, "p": succ, "c": r.channel_id, "at": now, "r": reg},
                )
                if reg is not None:
                    bases[succ] = reg
        for succ, reg in bases.items():
            await apply_to_points(
                conn, who.tenant_id, [succ], _base(now, reg), now, timing, who.actor
            )
        settle_req = req.settle
        if settle_req.how is Settlement.MOVE:
            settle_req = replace(settle_req, to_account=new.number)
        money, receipt, entry = await _settle(
            conn,
            who,
            acct,
            settle_req,
            new if settle_req.how is Settlement.MOVE else None,
            now,
            "transfer",
        )
        await _close(conn, acct, now)
        # The new account's supply decided at once (its meters already hold any credit a
        # meter-controlled point had: nothing is recharged again).
        await control.evaluate(conn, who.tenant_id, successors, now, timing, actor=who.actor)
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "account.transfer",
            f"account:{number}",
            now,
            {
                "new_account": new.number,
                "customer": str(customer_id),
                "refunded": str(money.refund),
                "moved": str(money.moved),
                "written_off": str(money.written_off),
                "receipt": receipt or "",
            },
        )
    return Settled(
        number,
        money.refund,
        money.moved,
        money.written_off,
        new.number if money.moved else None,
        receipt,
        entry,
        new.number,
        tuple(successors),
    )
