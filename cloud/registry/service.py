"""Provisioning a property group: the tenant (platform level) and its registry."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel

from cloud import schema
from cloud.auth import PERMISSIONS, hash_password
from cloud.control.service import CommandTiming
from cloud.db import Database, next_number
from cloud.errors import Conflict
from cloud.ledger import core as ledger
from cloud.ledger.service import post
from cloud.rating.core import swap_meter as rate_swap
from cloud.rating.service import RatingReport, apply_to_points

#: A seeded group's tariff and meters date from then (see GroupSpec.installed_at).
SEEDED_SINCE = datetime(2020, 1, 1, tzinfo=UTC)


async def create_tenant(db: Database, slug: str, name: str) -> uuid.UUID:
    """Platform operator only: the tenant row is written with the owner connection."""
    tenant_id = uuid.uuid4()
    async with db.owner.begin() as conn:
        inserted = await conn.scalar(
            sa.text(
                "INSERT INTO tenant (id, slug, name) VALUES (:id, :s, :n) "
                "ON CONFLICT (slug) DO NOTHING RETURNING id"
            ),
            {"id": tenant_id, "s": slug, "n": name},
        )
    if inserted is None:
        raise Conflict(f"property group {slug!r} already exists")
    return tenant_id


async def _add(conn: AsyncConnection, model: type[SQLModel], **values: Any) -> uuid.UUID:
    table: sa.Table = model.__table__  # type: ignore[attr-defined]
    values.setdefault("id", uuid.uuid4())
    await conn.execute(sa.insert(table).values(**values))
    new_id = values["id"]
    assert isinstance(new_id, uuid.UUID)
    return new_id


@dataclass
class MeterSpec:
    key: str
    unit: int
    customer: str
    opening_balance: Decimal
    profile: str = "acrel-ddsy1352-modbus"


@dataclass
class GroupSpec:
    slug: str
    name: str
    site: str = "Riverside Market"
    timezone: str = "Asia/Shanghai"
    gateway_code: str = "gw-demo-1"
    bus: str = "bus1"
    unit_price: Decimal = Decimal("1.2000")
    max_rate: Decimal | None = None  # kW a point can draw (None: the utility's default)
    # Friendly hours (no cut at night, weekends, public holidays) as a new site has them;
    # False for a site that may be cut at any hour (tests, the demo).
    friendly_hours: bool = True
    alarms: tuple[Decimal, Decimal] | None = None  # low-balance levels 1 and 2
    admin_username: str = "admin"
    admin_password: str = "demo-admin"  # noqa: S105 - demo seed only; printed by `prepay demo`
    meters: list[MeterSpec] = field(default_factory=list)
    # When the meters were bound to their points, as the group stands when seeded: since
    # its tariff began (readings measured before it are quarantined, not rated).
    installed_at: datetime = SEEDED_SINCE
    reading_max_age_days: int = 365  # the site's: older readings are quarantined


@dataclass
class Seeded:
    tenant_id: uuid.UUID
    site_id: uuid.UUID
    outlet_id: uuid.UUID
    gateway_id: uuid.UUID
    operator_id: uuid.UUID
    accounts: dict[str, str]  # meter key → account number
    points: dict[str, uuid.UUID]  # meter key → service point
    channels: dict[str, uuid.UUID]  # meter key → channel


async def seed_group(db: Database, spec: GroupSpec) -> Seeded:
    """Create a property group with one site, outlet, admin, flat tariff, gateway and meters."""
    tenant_id = await create_tenant(db, spec.slug, spec.name)
    now = datetime.now(UTC)
    async with db.tenant(tenant_id) as conn:
        t = {"tenant_id": tenant_id}
        friendly: dict[str, Any] = (
            {}
            if spec.friendly_hours
            else {
                "friendly_night_start": None,
                "friendly_night_end": None,
                "friendly_weekends": False,
                "friendly_holidays": False,
            }
        )
        site = await _add(
            conn,
            schema.Site,
            name=spec.site,
            timezone=spec.timezone,
            reading_max_age_days=spec.reading_max_age_days,
            **friendly,
            **t,
        )
        outlet = await _add(conn, schema.Outlet, site_id=site, name="Counter 1", **t)
        role = await _add(
            conn, schema.Role, name="administrator", permissions=list(PERMISSIONS), **t
        )
        operator = await _add(
            conn,
            schema.Operator,
            username=spec.admin_username,
            display_name="Administrator",
            password_hash=hash_password(spec.admin_password),
            role_id=role,
            active=True,
            **t,
        )
        tariff = await _add(conn, schema.Tariff, name="Commercial flat", utility="electricity", **t)
        await _add(
            conn,
            schema.TariffVersion,
            tariff_id=tariff,
            effective_from=SEEDED_SINCE,
            kind="flat",
            unit_price=spec.unit_price,
            **t,
        )
        gateway = await _add(
            conn,
            schema.Gateway,
            site_id=site,
            code=spec.gateway_code,
            name="Meter room A",
            online=False,
            **t,
        )
        accounts: dict[str, str] = {}
        points: dict[str, uuid.UUID] = {}
        channels: dict[str, uuid.UUID] = {}
        for m in spec.meters:
            customer = await _add(conn, schema.Customer, name=m.customer, **t)
            account_id = uuid.uuid4()
            number = f"A{await next_number(conn, tenant_id, 'account'):06d}"
            wallet = ledger.wallet(account_id, number)
            wallet_id = await _add(
                conn,
                schema.LedgerAccount,
                code=wallet.code,
                kind=wallet.kind.value,
                name=wallet.name,
                normal_side=wallet.normal_side.value,
                balance=Decimal(0),
                **t,
            )
            await _add(
                conn,
                schema.Account,
                id=account_id,
                customer_id=customer,
                number=number,
                wallet_id=wallet_id,
                **t,
            )
            point = await _add(
                conn,
                schema.ServicePoint,
                site_id=site,
                account_id=account_id,
                tariff_id=tariff,
                name=f"{m.customer} electricity",
                utility="electricity",
                control_mode="cloud",
                credit_limit=Decimal(0),
                max_rate=spec.max_rate,
                alarm1=spec.alarms[0] if spec.alarms else None,
                alarm2=spec.alarms[1] if spec.alarms else None,
                **t,
            )
            device = await _add(
                conn,
                schema.Device,
                gateway_id=gateway,
                key=m.key,
                profile=m.profile,
                bus=spec.bus,
                address=str(m.unit),
                **t,
            )
            channel = await _add(conn, schema.Channel, device_id=device, number=1, **t)
            await _add(
                conn,
                schema.Binding,
                service_point_id=point,
                channel_id=channel,
                installed_at=spec.installed_at,
                **t,
            )
            if m.opening_balance > 0:
                await post(
                    conn,
                    tenant_id,
                    ledger.EntryDraft(
                        idempotency_key=f"opening:{account_id}",
                        kind=ledger.EntryKind.ADJUSTMENT,
                        actor="seed",
                        effective_at=now,
                        legs=ledger.transfer(
                            ledger.adjustments(),
                            wallet,
                            m.opening_balance,
                        ),
                        reason="opening balance",
                    ),
                )
            accounts[m.key], points[m.key], channels[m.key] = number, point, channel
    return Seeded(tenant_id, site, outlet, gateway, operator, accounts, points, channels)


@dataclass(frozen=True)
class MeterSwap:
    """An installer's meter swap: the old meter's final and the new meter's initial reading."""

    service_point_id: uuid.UUID
    new_channel_id: uuid.UUID
    at: datetime
    final_register: Decimal
    initial_register: Decimal


async def swap_meter(
    db: Database, tenant_id: uuid.UUID, swap: MeterSwap, actor: str, timing: CommandTiming
) -> RatingReport:
    """Close the point's binding at the final reading, bind the new channel at the initial
    one, and rate the final reading, all in one transaction. Readings of the old channel
    after the swap are stored but no longer rated for the point."""
    async with db.tenant(tenant_id) as conn:
        return await swap_meter_in(conn, tenant_id, swap, actor, timing)


async def swap_meter_in(
    conn: AsyncConnection, tenant_id: uuid.UUID, swap: MeterSwap, actor: str, timing: CommandTiming
) -> RatingReport:
    """:func:`swap_meter` in the caller's transaction (cloud.lifecycle's 换表)."""
    old = await conn.scalar(
        sa.text(
            "UPDATE binding SET removed_at = :at, removal_register = :fin "
            "WHERE service_point_id = :p AND removed_at IS NULL RETURNING channel_id"
        ),
        {"at": swap.at, "fin": swap.final_register, "p": swap.service_point_id},
    )
    if old is None:
        raise Conflict(f"service point {swap.service_point_id} has no meter bound")
    await _add(
        conn,
        schema.Binding,
        tenant_id=tenant_id,
        service_point_id=swap.service_point_id,
        channel_id=swap.new_channel_id,
        installed_at=swap.at,
        install_register=swap.initial_register,
    )
    return await apply_to_points(
        conn,
        tenant_id,
        [swap.service_point_id],
        lambda p: rate_swap(p.mark, swap.at, swap.final_register, swap.initial_register, p.terms),
        swap.at,
        timing,
        actor,
        channel=swap.new_channel_id,
    )
