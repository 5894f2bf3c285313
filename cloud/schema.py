"""The cloud's data model (SQLModel tables). DESIGN.md §3.

Every tenant-owned table carries ``tenant_id`` and is under forced row-level security
(see the migrations); ``tenant`` itself is the only platform-level table.
Money is NUMERIC(14,2), prices NUMERIC(12,4), registers NUMERIC(16,3); time is timestamptz.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlmodel import Field, SQLModel

TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(14, 2)
PRICE = sa.Numeric(12, 4)
REGISTER = sa.Numeric(16, 3)


def _id() -> Any:
    return Field(default_factory=uuid.uuid4, primary_key=True)


def _tenant() -> Any:
    return Field(foreign_key="tenant.id", index=True)


def _ts(nullable: bool = False) -> Any:
    return Field(default=None, sa_type=TS, nullable=nullable)


class Tenant(SQLModel, table=True):
    """A property group. Platform-level: the only table without tenant_id."""

    id: uuid.UUID = _id()
    slug: str = Field(unique=True, max_length=40)
    name: str
    created_at: datetime = Field(sa_type=TS, sa_column_kwargs={"server_default": sa.func.now()})


class LoginThrottle(SQLModel, table=True):
    """Failed logins per key (``login:<group>/<user>`` or ``addr:<address>``) in a fixed
    window, and the lock they earned. Platform-level: unknown groups are counted too."""

    __tablename__ = "login_throttle"
    __table_args__ = (sa.Index("login_throttle_idle", "window_start"),)
    key: str = Field(primary_key=True, sa_type=sa.Text)
    window_start: datetime = Field(sa_type=TS)
    failures: int
    locked_until: datetime | None = _ts(nullable=True)


class TenantCounter(SQLModel, table=True):
    """Per-tenant human-readable number sequences (account no., receipt no.)."""

    __tablename__ = "tenant_counter"
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", primary_key=True)
    name: str = Field(primary_key=True)
    value: int = 0


class Site(SQLModel, table=True):
    __table_args__ = (
        sa.CheckConstraint("reading_max_age_days BETWEEN 1 AND 3650", name="site_reading_max_age"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    name: str
    timezone: str = "Asia/Shanghai"
    # Friendly hours: no cut for arrears at night, at weekends, on public holidays.
    friendly_night_start: time | None = Field(default=time(22), nullable=True)
    friendly_night_end: time | None = Field(default=time(8), nullable=True)
    friendly_weekends: bool = True
    friendly_holidays: bool = True
    notice_minutes: int = 0  # notice before a cut for arrears
    alarm_hysteresis: Decimal = Field(default=Decimal("1.00"), sa_type=MONEY)
    # The business day ends at this local time (reversals, daily close, handover).
    business_day_cutoff: time = Field(default=time(0), sa_column_kwargs={"server_default": "00:00"})
    catalogue_price: Decimal | None = Field(default=None, sa_type=PRICE, nullable=True)
    price_margin: Decimal = Field(
        default=Decimal("0.15"),
        sa_type=sa.Numeric(5, 4),
        sa_column_kwargs={"server_default": "0.15"},
    )
    # What a tenant may top up from their phone (the mini-program and H5 page): the
    # minimum and maximum of one payment and the quick amounts offered.
    topup_min: Decimal = Field(
        default=Decimal("10.00"), sa_type=MONEY, sa_column_kwargs={"server_default": "10.00"}
    )
    topup_max: Decimal = Field(
        default=Decimal("5000.00"), sa_type=MONEY, sa_column_kwargs={"server_default": "5000.00"}
    )
    quick_amounts: list[Decimal] = Field(
        default_factory=lambda: [Decimal(30), Decimal(50), Decimal(100), Decimal(200)],
        sa_type=pg.ARRAY(MONEY),
        sa_column_kwargs={"server_default": "{30,50,100,200}"},
    )
    # How far back a reading may be measured and still be stored and rated (older ones are
    # quarantined as ``too_old``; migration 0016).
    reading_max_age_days: int = Field(default=365, sa_column_kwargs={"server_default": "365"})
    # Notifications (migration 0017): between quiet_start and quiet_end (local time) only
    # supply-cut and top-up messages go out; the rest wait for quiet_end. Staff are told of
    # a gateway offline longer than gateway_offline_minutes; a customer gets at most
    # notify_hourly_limit messages an hour (cuts and top-ups aside).
    quiet_start: time | None = Field(
        default=time(22), nullable=True, sa_column_kwargs={"server_default": "22:00"}
    )
    quiet_end: time | None = Field(
        default=time(8), nullable=True, sa_column_kwargs={"server_default": "08:00"}
    )
    gateway_offline_minutes: int = Field(default=30, sa_column_kwargs={"server_default": "30"})
    notify_hourly_limit: int = Field(default=6, sa_column_kwargs={"server_default": "6"})


class Outlet(SQLModel, table=True):
    """A business office / counter where credit is sold."""

    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    site_id: uuid.UUID = Field(foreign_key="site.id")
    name: str


class Building(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("site_id", "name"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    site_id: uuid.UUID = Field(foreign_key="site.id")
    name: str


class Premises(SQLModel, table=True):
    """A shop, flat, office or unit: building → floor → number (as operators think)."""

    __table_args__ = (sa.UniqueConstraint("building_id", "number"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    site_id: uuid.UUID = Field(foreign_key="site.id")
    building_id: uuid.UUID = Field(foreign_key="building.id")
    floor: str
    number: str
    kind: str = Field(default="shop", max_length=8)  # shop | flat | office | unit
    floor_area: Decimal | None = Field(default=None, sa_type=sa.Numeric(12, 2))


class Role(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("tenant_id", "name"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    name: str
    permissions: list[str] = Field(sa_type=pg.ARRAY(sa.Text), default_factory=list)


class Operator(SQLModel, table=True):
    """A console user of a property group."""

    __table_args__ = (sa.UniqueConstraint("tenant_id", "username"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    username: str = Field(max_length=64)
    display_name: str
    password_hash: str
    role_id: uuid.UUID = Field(foreign_key="role.id")
    active: bool = True
    # what the operator sees and touches: the whole tenant, some sites, or some outlets
    scope: str = Field(default="tenant", max_length=8)  # tenant | site | outlet
    scope_ids: list[uuid.UUID] = Field(sa_type=pg.ARRAY(sa.Uuid()), default_factory=list)
    password_changed_at: datetime | None = _ts(nullable=True)


class OperatorSession(SQLModel, table=True):
    """A console or API session; a token names its row, so logout and a password change
    revoke it."""

    __tablename__ = "operator_session"
    __table_args__ = (sa.Index("ix_operator_session_operator", "operator_id"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    operator_id: uuid.UUID = Field(foreign_key="operator.id")
    created_at: datetime = _ts()
    address: str | None = None
    revoked_at: datetime | None = _ts(nullable=True)


class OutletGrant(SQLModel, table=True):
    """An operator allowed to sell at another outlet for a period (异地售电)."""

    __tablename__ = "outlet_grant"
    __table_args__ = (sa.Index("ix_outlet_grant_operator", "operator_id", "outlet_id"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    operator_id: uuid.UUID = Field(foreign_key="operator.id")
    outlet_id: uuid.UUID = Field(foreign_key="outlet.id")
    starts_at: datetime = _ts()
    ends_at: datetime = _ts()
    reason: str = ""
    granted_by: str
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)
    revoked_by: str | None = None


class Customer(SQLModel, table=True):
    __table_args__ = (sa.Index("ix_customer_phone", "tenant_id", "phone"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    name: str
    phone: str | None = None
    id_number: str | None = None  # ID card or business licence number
    created_at: datetime = Field(sa_type=TS, sa_column_kwargs={"server_default": sa.func.now()})


class Account(SQLModel, table=True):
    """A customer's prepaid wallet (its money lives in the ledger account ``wallet_id``)."""

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "number"),
        sa.Index("ix_account_customer_id", "customer_id"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    customer_id: uuid.UUID = Field(foreign_key="customer.id")
    number: str = Field(max_length=20)
    wallet_id: uuid.UUID = Field(foreign_key="ledger_account.id", unique=True)
    status: str = Field(default="active", max_length=8)  # pending | active | closed
    opened_at: datetime = Field(sa_type=TS, sa_column_kwargs={"server_default": sa.func.now()})
    closed_at: datetime | None = _ts(nullable=True)


class Tariff(SQLModel, table=True):
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    name: str
    utility: str = Field(max_length=12)  # electricity | water
    site_id: uuid.UUID | None = Field(default=None, foreign_key="site.id")  # None: every site
    active: bool = True


class TariffVersion(SQLModel, table=True):
    """A tariff's prices from ``effective_from`` on; a new version never re-rates the past."""

    __tablename__ = "tariff_version"
    __table_args__ = (sa.UniqueConstraint("tariff_id", "effective_from"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    tariff_id: uuid.UUID = Field(foreign_key="tariff.id")
    effective_from: datetime = Field(sa_type=TS)
    kind: str = "flat"  # flat | tiered | tou (cloud.tariffs.core.plan_from_spec)
    unit_price: Decimal | None = Field(default=None, sa_type=PRICE)  # flat
    spec: dict[str, Any] = Field(default_factory=dict, sa_type=pg.JSONB)  # tiered / tou
    monthly_fee: Decimal = Field(default=Decimal("0"), sa_type=MONEY)
    created_by: str = ""
    created_at: datetime | None = _ts(nullable=True)
    # why a price above the site's catalogue price plus its margin was accepted
    margin_reason: str | None = None


class ServicePoint(SQLModel, table=True):
    """One metered supply (a shop's electricity, a room's water)."""

    __tablename__ = "service_point"
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    site_id: uuid.UUID = Field(foreign_key="site.id")
    account_id: uuid.UUID = Field(foreign_key="account.id", index=True)
    tariff_id: uuid.UUID = Field(foreign_key="tariff.id")
    name: str
    utility: str = Field(max_length=12)
    control_mode: str = Field(default="cloud", max_length=8)  # cloud | meter
    credit_limit: Decimal = Field(default=Decimal("0"), sa_type=MONEY)
    emergency_credit: Decimal = Field(default=Decimal("0"), sa_type=MONEY)
    alarm1: Decimal | None = Field(default=None, sa_type=MONEY)  # low-balance level 1
    alarm2: Decimal | None = Field(default=None, sa_type=MONEY)  # level 2 (≤ level 1)
    max_rate: Decimal | None = Field(default=None, sa_type=sa.Numeric(10, 3))  # kW or m³/h
    floor_area: Decimal | None = Field(default=None, sa_type=sa.Numeric(12, 2))  # m², for 公摊
    common_area: bool = False  # a common meter: consumption tracked, shared out, not charged
    premises_id: uuid.UUID | None = Field(default=None, foreign_key="premises.id", index=True)
    removed_at: datetime | None = _ts(nullable=True)  # 拆表/消户: the point is retired


class Gateway(SQLModel, table=True):
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    site_id: uuid.UUID = Field(foreign_key="site.id")
    code: str = Field(unique=True, max_length=64)  # MQTT identity, globally unique
    name: str
    online: bool = False
    last_seen_at: datetime | None = _ts(nullable=True)
    config_version: int = 0  # the pushed config version the gateway reports it runs
    config_pushed: int = 0  # the last version the cloud pushed
    # the last heartbeat: its bus statistics (per bus) and outbox backlog (migration 0026)
    heartbeat_at: datetime | None = _ts(nullable=True)
    bus_stats: dict[str, Any] | None = Field(default=None, sa_type=pg.JSONB, nullable=True)
    queue_depth: int | None = None


class GatewayClaim(SQLModel, table=True):
    """A one-time, expiring code an installer exchanges for a gateway's identity and MQTT
    credentials. Only the code's SHA-256 is kept."""

    __tablename__ = "gateway_claim"
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    site_id: uuid.UUID = Field(foreign_key="site.id")
    code_hash: str = Field(unique=True, max_length=64)
    expires_at: datetime = _ts()
    created_at: datetime = _ts()
    created_by: str = Field(max_length=128)
    used_at: datetime | None = _ts(nullable=True)
    gateway_id: uuid.UUID | None = Field(default=None, foreign_key="gateway.id")
    revoked_at: datetime | None = _ts(nullable=True)
    revoked_by: str | None = Field(default=None, max_length=128)


class GatewayCredential(SQLModel, table=True):
    """A gateway's MQTT password, kept only as the broker's own hash format (Mosquitto
    PBKDF2-SHA512), so the broker's password file can be written from it."""

    __tablename__ = "gateway_credential"
    __table_args__ = (
        sa.Index(
            "gateway_credential_live",
            "gateway_id",
            unique=True,
            postgresql_where=sa.text("revoked_at IS NULL"),
        ),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    gateway_id: uuid.UUID = Field(foreign_key="gateway.id", index=True)
    username: str = Field(max_length=64)
    password_hash: str = Field(max_length=256)
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)


class Device(SQLModel, table=True):
    """A physical meter on a gateway's bus."""

    __table_args__ = (sa.UniqueConstraint("gateway_id", "key"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    gateway_id: uuid.UUID = Field(foreign_key="gateway.id")
    key: str = Field(max_length=64)  # the device's name in the gateway's config
    profile: str
    bus: str
    address: str
    serial: str | None = None
    close_only: bool = False  # the relay only allows closing: the tenant presses a button


class Channel(SQLModel, table=True):
    """A metered circuit of a device (a DDSY1352 has one, an ADF300L has 12–36)."""

    __table_args__ = (sa.UniqueConstraint("device_id", "number"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    device_id: uuid.UUID = Field(foreign_key="device.id")
    number: int = 1


class Binding(SQLModel, table=True):
    """A service point bound to a channel for a period, with the registers at each end."""

    __table_args__ = (
        sa.Index(
            "binding_one_active_per_point",
            "service_point_id",
            unique=True,
            postgresql_where=sa.text("removed_at IS NULL"),
        ),
        sa.Index(
            "binding_one_active_per_channel",
            "channel_id",
            unique=True,
            postgresql_where=sa.text("removed_at IS NULL"),
        ),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    service_point_id: uuid.UUID = Field(foreign_key="service_point.id")
    channel_id: uuid.UUID = Field(foreign_key="channel.id")
    installed_at: datetime = Field(sa_type=TS)
    install_register: Decimal | None = Field(default=None, sa_type=REGISTER)
    removed_at: datetime | None = _ts(nullable=True)
    removal_register: Decimal | None = Field(default=None, sa_type=REGISTER)


class Reading(SQLModel, table=True):
    """Time series of channel measurements; a duplicate delivery is a no-op."""

    # No foreign keys (two trigger queries and row locks per reading): the ingest writes
    # only channels from the tenant's registry, RLS checks the tenant, and a channel with
    # readings cannot be deleted (trigger prepay_channel_keeps_readings, migration 0007).
    channel_id: uuid.UUID = Field(primary_key=True)
    measured_at: datetime = Field(sa_type=TS, primary_key=True)
    tenant_id: uuid.UUID
    received_at: datetime = Field(sa_type=TS)
    total: Decimal | None = Field(default=None, sa_type=REGISTER)
    tou: list[Decimal] | None = Field(default=None, sa_type=pg.ARRAY(REGISTER))  # 尖峰平谷
    voltage: Decimal | None = Field(default=None, sa_type=sa.Numeric(8, 1))
    current: Decimal | None = Field(default=None, sa_type=sa.Numeric(10, 3))
    power: Decimal | None = Field(default=None, sa_type=sa.Numeric(10, 4))
    supply_on: bool | None = None
    meter_balance: Decimal | None = Field(default=None, sa_type=MONEY)
    purchase_count: int | None = None  # the meter's count of recharges it has taken


class ReadingQuarantine(SQLModel, table=True):
    """A reading the cloud keeps but does not rate: its device or channel is not registered
    yet, or its time or register cannot be rated (``reason``). Stored once per gateway,
    device, channel and measurement time; the reading as the gateway sent it."""

    __tablename__ = "reading_quarantine"
    gateway_id: uuid.UUID = Field(primary_key=True)
    device: str = Field(primary_key=True, sa_type=sa.Text)
    channel: int = Field(primary_key=True)
    measured_at: datetime = Field(sa_type=TS, primary_key=True)
    tenant_id: uuid.UUID = _tenant()
    reason: str = Field(sa_type=sa.Text)
    reading: dict[str, Any] = Field(sa_type=pg.JSONB)
    received_at: datetime = Field(sa_type=TS)


class RatingState(SQLModel, table=True):
    """Per service point: how far rating has advanced (the "last rated" mark).

    ``charge_billed_total`` is the exact total to the fen and is already in the wallet's
    live balance; ``charge_posted_total`` is what usage entries in the journal carry. The
    difference is the point's rated-but-unposted usage (posted when its hour closes)."""

    __tablename__ = "rating_state"
    service_point_id: uuid.UUID = Field(foreign_key="service_point.id", primary_key=True)
    tenant_id: uuid.UUID = _tenant()
    channel_id: uuid.UUID | None = Field(default=None, foreign_key="channel.id")
    last_measured_at: datetime | None = _ts(nullable=True)
    last_register: Decimal | None = Field(default=None, sa_type=REGISTER)
    last_tou: list[Decimal] | None = Field(default=None, sa_type=pg.ARRAY(REGISTER))
    consumption_total: Decimal = Field(default=Decimal("0"), sa_type=REGISTER)
    charge_exact_total: Decimal = Field(default=Decimal("0"), sa_type=sa.Numeric(20, 8))
    charge_billed_total: Decimal = Field(default=Decimal("0"), sa_type=MONEY)
    charge_posted_total: Decimal = Field(default=Decimal("0"), sa_type=MONEY)
    cycle: str | None = Field(default=None, max_length=7)
    cycle_consumption: Decimal = Field(default=Decimal("0"), sa_type=REGISTER)
    window_start: datetime | None = _ts(nullable=True)
    fee_month: str | None = Field(default=None, max_length=7)
    stuck: bool = False
    # the earliest reading rated from (an earlier one arriving later is charged up to it)
    first_measured_at: datetime | None = _ts(nullable=True)
    first_register: Decimal | None = Field(default=None, sa_type=REGISTER)
    # The rating envelope (cloud.rating.fast): readings after the mark and before
    # ``fast_until`` that stay inside it are rated set-based, in SQL; void unless
    # ``fast_terms`` is the tenant's current "terms" counter.
    fast_until: datetime | None = _ts(nullable=True)
    fast_terms: int | None = Field(default=None, sa_type=sa.BigInteger)
    fast_price: Decimal | None = Field(default=None, sa_type=PRICE)
    fast_tou: list[Decimal] | None = Field(default=None, sa_type=pg.ARRAY(PRICE))
    fast_tiered: bool = False
    fast_block_end: Decimal | None = Field(default=None, sa_type=REGISTER)
    fast_limits: list[Decimal] | None = Field(default=None, sa_type=pg.ARRAY(sa.Numeric()))
    fast_wallet: uuid.UUID | None = None
    fast_revenue: uuid.UUID | None = None  # where the usage windows closed in SQL post to


class LedgerAccount(SQLModel, table=True):
    """A ledger account; ``balance`` is the live balance on its normal side.

    ``balance`` = the account's postings + ``unposted``: usage rated but not yet journaled
    (a wallet's is negative; it moves into the journal when the usage window posts)."""

    __tablename__ = "ledger_account"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "code"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    code: str = Field(max_length=80)
    kind: str = Field(max_length=20)
    name: str
    normal_side: str = Field(max_length=6)  # debit | credit
    balance: Decimal = Field(default=Decimal("0"), sa_type=MONEY)
    unposted: Decimal = Field(default=Decimal("0"), sa_type=MONEY)


class JournalEntry(SQLModel, table=True):
    __tablename__ = "journal_entry"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "idempotency_key"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    idempotency_key: str = Field(max_length=200)
    kind: str = Field(max_length=20)
    actor: str
    reason: str = ""
    effective_at: datetime = Field(sa_type=TS)
    created_at: datetime = Field(sa_type=TS, sa_column_kwargs={"server_default": sa.func.now()})
    reverses: uuid.UUID | None = Field(default=None, foreign_key="journal_entry.id", unique=True)


class Posting(SQLModel, table=True):
    """One leg of an entry; positive = debit, negative = credit. An entry's legs sum to zero."""

    # (entry, tenant): the ledger's checks find an entry's postings under row-level
    # security with one index (migration 0008)
    __table_args__ = (sa.Index("ix_posting_entry_id", "entry_id", "tenant_id"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    entry_id: uuid.UUID = Field(foreign_key="journal_entry.id")
    ledger_account_id: uuid.UUID = Field(foreign_key="ledger_account.id", index=True)
    amount: Decimal = Field(sa_type=MONEY)


class CounterSale(SQLModel, table=True):
    """Credit sold at an outlet's counter."""

    __tablename__ = "counter_sale"
    __table_args__ = (
        sa.Index("ix_counter_sale_account", "account_id", "created_at"),
        sa.Index("ix_counter_sale_operator_day", "operator_id", "business_day"),
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
        sa.UniqueConstraint("tenant_id", "receipt_no"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    idempotency_key: str = Field(max_length=120)
    request_fingerprint: str
    receipt_no: str
    account_id: uuid.UUID = Field(foreign_key="account.id")
    outlet_id: uuid.UUID | None = Field(default=None, foreign_key="outlet.id")
    operator_id: uuid.UUID = Field(foreign_key="operator.id")
    method: str = Field(max_length=8)  # cash | card | transfer
    amount: Decimal = Field(sa_type=MONEY)
    entry_id: uuid.UUID = Field(foreign_key="journal_entry.id")
    created_at: datetime = Field(sa_type=TS, sa_column_kwargs={"server_default": sa.func.now()})
    grant_id: uuid.UUID | None = Field(default=None, foreign_key="outlet_grant.id")
    business_day: date | None = None  # the site's business day the sale belongs to
    reversed_at: datetime | None = _ts(nullable=True)
    reversed_by: str | None = None
    reversal_reason: str | None = None
    reversal_entry_id: uuid.UUID | None = Field(default=None, foreign_key="journal_entry.id")
    # the wallet balance right after the sale, as its receipt shows it (migration 0013)
    balance_after: Decimal | None = Field(default=None, sa_type=MONEY, nullable=True)


class CashHandover(SQLModel, table=True):
    """An operator's cash for a business day handed over: its sales can no longer be
    reversed."""

    __tablename__ = "cash_handover"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "operator_id", "business_day"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    operator_id: uuid.UUID = Field(foreign_key="operator.id")
    business_day: date
    amount: Decimal = Field(sa_type=MONEY)
    handed_at: datetime = _ts()
    received_by: str


class FormKey(SQLModel, table=True):
    """A console form's one-time key: the first submission does the work, a second (a
    double click, a re-sent POST) finds the key used and is shown the first one's result."""

    __tablename__ = "form_key"
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", primary_key=True)
    key: str = Field(primary_key=True, max_length=64)
    operator_id: uuid.UUID = Field(foreign_key="operator.id")
    created_at: datetime = _ts()
    result: str | None = None


class ImportRun(SQLModel, table=True):
    """A legacy import (dry run or real) and the rows it refused."""

    __tablename__ = "import_run"
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    created_at: datetime = _ts()
    actor: str
    filename: str
    rows: int
    dry_run: bool
    refused: int
    report: list[dict[str, Any]] = Field(default_factory=list, sa_type=pg.JSONB)


class SupplyTwin(SQLModel, table=True):
    """Desired vs reported supply state of a channel."""

    __tablename__ = "supply_twin"
    channel_id: uuid.UUID = Field(foreign_key="channel.id", primary_key=True)
    tenant_id: uuid.UUID = _tenant()
    desired: str | None = Field(default=None, max_length=3)  # on | off
    desired_at: datetime | None = _ts(nullable=True)
    desired_reason: str = ""
    reported: str | None = Field(default=None, max_length=3)
    reported_at: datetime | None = _ts(nullable=True)
    desired_keep: bool | None = None  # keep-power (保电) at the meter
    reported_keep: bool | None = None
    reported_keep_at: datetime | None = _ts(nullable=True)


class DeviceCommand(SQLModel, table=True):
    """A command to a device: queued → sent → acked | failed | expired | superseded."""

    __tablename__ = "device_command"
    __table_args__ = (
        sa.Index("device_command_open", "tenant_id", "state"),
        sa.Index(
            "device_command_channel_open",
            "channel_id",
            postgresql_where=sa.text("state IN ('queued', 'sent')"),
        ),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    gateway_id: uuid.UUID = Field(foreign_key="gateway.id")
    channel_id: uuid.UUID = Field(foreign_key="channel.id", index=True)
    service_point_id: uuid.UUID | None = Field(default=None, foreign_key="service_point.id")
    origin: str = Field(default="policy", max_length=40)  # policy | operator:<name> | topup
    action: str = Field(max_length=20)
    params: dict[str, str] = Field(default_factory=dict, sa_type=pg.JSONB)
    state: str = Field(default="queued", max_length=10)
    reason: str = ""
    created_at: datetime = Field(sa_type=TS)
    deadline: datetime = Field(sa_type=TS)
    sent_at: datetime | None = _ts(nullable=True)
    attempts: int = 0
    finished_at: datetime | None = _ts(nullable=True)
    result: dict[str, str] = Field(default_factory=dict, sa_type=pg.JSONB)
    superseded_by: uuid.UUID | None = Field(default=None, foreign_key="device_command.id")


class ControlState(SQLModel, table=True):
    """What the control policy remembers about a point between decisions, and the
    meter-held balance and purchase count mirrored for meter-controlled points."""

    __tablename__ = "control_state"
    __table_args__ = (
        sa.Index(
            "control_state_recheck",
            "recheck_at",
            postgresql_where=sa.text("recheck_at IS NOT NULL"),
        ),
    )
    service_point_id: uuid.UUID = Field(foreign_key="service_point.id", primary_key=True)
    tenant_id: uuid.UUID = _tenant()
    supply: str | None = Field(default=None, max_length=3)  # the last desired state
    reason: str = ""
    alarm_level: int = Field(default=0, sa_type=sa.SmallInteger)
    emergency: bool = False
    notice_at: datetime | None = _ts(nullable=True)
    deferred_until: datetime | None = _ts(nullable=True)
    keep_power_by: str | None = None
    keep_power_reason: str | None = None
    keep_power_until: datetime | None = _ts(nullable=True)
    override: str | None = Field(default=None, max_length=3)
    override_by: str | None = None
    override_reason: str | None = None
    override_until: datetime | None = _ts(nullable=True)
    override_until_credit: bool = False
    recheck_at: datetime | None = _ts(nullable=True)
    meter_balance: Decimal | None = Field(default=None, sa_type=MONEY)
    meter_balance_at: datetime | None = _ts(nullable=True)
    purchase_count: int | None = None
    decided_at: datetime | None = _ts(nullable=True)


class ControlEvent(SQLModel, table=True):
    """A control event (low balance, notice, cut, restored…) for the notifications worker."""

    __tablename__ = "control_event"
    __table_args__ = (sa.Index("control_event_point", "service_point_id", "at"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    service_point_id: uuid.UUID = Field(foreign_key="service_point.id")
    kind: str = Field(max_length=30)
    at: datetime = Field(sa_type=TS)
    balance: Decimal | None = Field(default=None, sa_type=MONEY)
    detail: str = ""
    actor: str = "policy"
    notified_at: datetime | None = _ts(nullable=True)


class WorkOrder(SQLModel, table=True):
    """Something a person must look at: a reading anomaly, a dunning task, an installation."""

    __tablename__ = "work_order"
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    kind: str = Field(max_length=30)
    service_point_id: uuid.UUID | None = Field(default=None, foreign_key="service_point.id")
    channel_id: uuid.UUID | None = Field(default=None, foreign_key="channel.id")
    detail: dict[str, str] = Field(default_factory=dict, sa_type=pg.JSONB)
    status: str = "open"
    created_at: datetime = Field(sa_type=TS)


class CommonAreaGroup(SQLModel, table=True):
    """A common meter (公摊) and how its charge is shared among its members' points."""

    __tablename__ = "common_area_group"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "common_point_id", name="common_area_one_per_meter"),
        sa.CheckConstraint("basis IN ('area', 'consumption')", name="common_area_basis"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    common_point_id: uuid.UUID = Field(foreign_key="service_point.id")
    basis: str = Field(max_length=12)  # area | consumption
    monthly: bool = Field(default=True, sa_column_kwargs={"server_default": "true"})
    last_month: str | None = Field(default=None, max_length=7)  # the last month posted
    created_by: str
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class CommonAreaMember(SQLModel, table=True):
    __tablename__ = "common_area_member"
    group_id: uuid.UUID = Field(
        foreign_key="common_area_group.id", primary_key=True, ondelete="CASCADE"
    )
    service_point_id: uuid.UUID = Field(foreign_key="service_point.id", primary_key=True)
    tenant_id: uuid.UUID = _tenant()


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    actor: str
    action: str
    target: str
    detail: dict[str, str] = Field(default_factory=dict, sa_type=pg.JSONB)
    at: datetime = Field(sa_type=TS)


class AppUser(SQLModel, table=True):
    """A tenant's person in the mini-program or on the H5 page: known by their WeChat
    openid (per app) or by a phone number they proved with an SMS code. DESIGN §13."""

    __tablename__ = "app_user"
    __table_args__ = (
        sa.Index(
            "app_user_openid",
            "tenant_id",
            "appid",
            "openid",
            unique=True,
            postgresql_where=sa.text("openid IS NOT NULL"),
        ),
        sa.Index(
            "app_user_phone",
            "tenant_id",
            "phone",
            unique=True,
            postgresql_where=sa.text("phone IS NOT NULL"),
        ),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    appid: str | None = None
    openid: str | None = None
    phone: str | None = None  # E.164
    language: str = Field(default="zh_CN", sa_column_kwargs={"server_default": "zh_CN"})
    created_at: datetime = _ts()
    last_login_at: datetime | None = _ts(nullable=True)


class AppSession(SQLModel, table=True):
    """A tenant user's session; its token names the row, so logging out revokes it."""

    __tablename__ = "app_session"
    __table_args__ = (sa.Index("ix_app_session_user", "user_id"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    user_id: uuid.UUID = Field(foreign_key="app_user.id")
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)


class AccountBinding(SQLModel, table=True):
    """A user allowed to see and top up an account (several users per account, several
    accounts per user); unbinding keeps the row."""

    __tablename__ = "account_binding"
    __table_args__ = (
        sa.Index(
            "account_binding_live",
            "user_id",
            "account_id",
            unique=True,
            postgresql_where=sa.text("unbound_at IS NULL"),
        ),
        sa.Index("ix_account_binding_account", "account_id"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    user_id: uuid.UUID = Field(foreign_key="app_user.id")
    account_id: uuid.UUID = Field(foreign_key="account.id")
    bound_at: datetime = _ts()
    unbound_at: datetime | None = _ts(nullable=True)
    unbound_by: str | None = None  # "user" or an operator's actor name


class SubscribeAcceptance(SQLModel, table=True):
    """WeChat one-time subscribe messages a user accepted, per template: each allows one
    message; the notifier spends one per message and falls back to SMS at zero."""

    __tablename__ = "subscribe_acceptance"
    __table_args__ = (sa.CheckConstraint("remaining >= 0", name="subscribe_remaining"),)
    tenant_id: uuid.UUID = _tenant()
    user_id: uuid.UUID = Field(foreign_key="app_user.id", primary_key=True)
    template_id: str = Field(primary_key=True)
    remaining: int = 0
    updated_at: datetime = _ts()


class NotifyPreference(SQLModel, table=True):
    """How a customer wants to be told (channels in order of preference: wechat, sms),
    in which language, and which kinds of alert they turned off."""

    __tablename__ = "notify_preference"
    tenant_id: uuid.UUID = _tenant()
    customer_id: uuid.UUID = Field(foreign_key="customer.id", primary_key=True)
    channels: list[str] = Field(
        default_factory=lambda: ["sms"],
        sa_type=pg.ARRAY(sa.Text),
        sa_column_kwargs={"server_default": "{sms}"},
    )
    language: str = Field(default="zh_CN", sa_column_kwargs={"server_default": "zh_CN"})
    muted: list[str] = Field(
        default_factory=list, sa_type=pg.ARRAY(sa.Text), sa_column_kwargs={"server_default": "{}"}
    )
    updated_at: datetime = _ts()


class NotifyStaff(SQLModel, table=True):
    """A person of a site's staff told of staff events (gateway offline, work orders)."""

    __tablename__ = "notify_staff"
    __table_args__ = (sa.Index("ix_notify_staff_site", "site_id"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    site_id: uuid.UUID = Field(foreign_key="site.id")
    name: str
    phone: str | None = None  # E.164
    channel: str = Field(default="sms", sa_column_kwargs={"server_default": "sms"})
    language: str = Field(default="zh_CN", sa_column_kwargs={"server_default": "zh_CN"})
    kinds: list[str] = Field(
        default_factory=lambda: ["gateway_offline", "work_order_assigned"],
        sa_type=pg.ARRAY(sa.Text),
        sa_column_kwargs={"server_default": "{gateway_offline,work_order_assigned}"},
    )
    active: bool = Field(default=True, sa_column_kwargs={"server_default": "true"})
    created_at: datetime = Field(sa_type=TS, sa_column_kwargs={"server_default": sa.func.now()})


class Notification(SQLModel, table=True):
    """The outbox (DESIGN §8): one message per cause and recipient, written in the event's
    transaction (``cloud.notify.outbox``) and delivered by ``notifications.worker``.
    Status: queued → sending → sent → delivered | undelivered | failed, or skipped."""

    __tablename__ = "notification"
    __table_args__ = (
        sa.UniqueConstraint(
            "tenant_id", "cause_kind", "cause_key", "recipient", name="notification_once"
        ),
        sa.Index(
            "notification_due",
            "tenant_id",
            "next_attempt_at",
            postgresql_where=sa.text("status = 'queued'"),
        ),
        sa.Index(
            "notification_in_flight",
            "tenant_id",
            "claimed_at",
            postgresql_where=sa.text("status = 'sending'"),
        ),
        sa.Index("notification_customer", "customer_id", "created_at"),
        sa.Index("notification_sent", "tenant_id", "sent_at"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    cause_kind: str = Field(max_length=40)
    cause_key: str = Field(max_length=200)
    recipient: str = Field(max_length=60)  # customer:<id> | staff:<id>
    customer_id: uuid.UUID | None = Field(default=None, foreign_key="customer.id")
    staff_id: uuid.UUID | None = Field(default=None, foreign_key="notify_staff.id")
    account_id: uuid.UUID | None = Field(default=None, foreign_key="account.id")
    service_point_id: uuid.UUID | None = Field(default=None, foreign_key="service_point.id")
    site_id: uuid.UUID | None = Field(default=None, foreign_key="site.id")
    channel: str | None = Field(default=None, max_length=12)  # sms | wechat | log
    language: str = Field(
        default="zh_CN", max_length=8, sa_column_kwargs={"server_default": "zh_CN"}
    )
    template: str = Field(max_length=40)
    variables: dict[str, str] = Field(
        default_factory=dict, sa_type=pg.JSONB, sa_column_kwargs={"server_default": "{}"}
    )
    status: str = Field(
        default="queued", max_length=12, sa_column_kwargs={"server_default": "queued"}
    )
    reason: str | None = Field(default=None, sa_type=sa.Text)
    address: str | None = None
    provider_id: str | None = None
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    next_attempt_at: datetime = _ts()
    segments: int | None = None
    error: dict[str, Any] | None = Field(default=None, sa_type=pg.JSONB, nullable=True)
    created_at: datetime = _ts()
    claimed_at: datetime | None = _ts(nullable=True)
    sent_at: datetime | None = _ts(nullable=True)
    status_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts()


TENANT_TABLES = [
    t.name for t in SQLModel.metadata.sorted_tables if "tenant_id" in t.c and t.name != "tenant"
]


class Merchant(SQLModel, table=True):
    """A property group's WeChat Pay merchant (DESIGN §7; migration 0018): service-provider
    mode (``mchid``/``appid`` the platform's sp_mchid/sp_appid, ``sub_mchid`` the group's)
    or direct mode. ``private_key``, ``apiv3_key`` and ``app_secret`` are sealed (Fernet)."""

    __tablename__ = "merchant"
    tenant_id: uuid.UUID = Field(foreign_key="tenant.id", primary_key=True)
    mode: str = Field(max_length=8)  # partner | direct
    mchid: str = Field(max_length=32)
    sub_mchid: str | None = Field(default=None, max_length=32)
    appid: str = Field(max_length=32)
    sub_appid: str | None = Field(default=None, max_length=32)
    cert_serial_no: str = Field(max_length=64)
    private_key: str = Field(sa_type=sa.Text)
    apiv3_key: str = Field(sa_type=sa.Text)
    app_secret: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    public_key: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    public_key_id: str | None = Field(default=None, max_length=64)
    updated_at: datetime = _ts()
    updated_by: str


class PaymentOrder(SQLModel, table=True):
    """A tenant's WeChat Pay top-up: ``out_trade_no`` from the database, the amount in fen,
    15 minutes to pay; credited once (``entry_id``) by its notification or by query."""

    __tablename__ = "payment_order"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "out_trade_no", name="payment_order_no"),
        sa.Index(
            "payment_order_unsettled",
            "tenant_id",
            "created_at",
            postgresql_where=sa.text("status = 'created'"),
        ),
        sa.Index("payment_order_account", "account_id", "created_at"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    out_trade_no: str = Field(max_length=32)
    account_id: uuid.UUID = Field(foreign_key="account.id")
    user_id: uuid.UUID = Field(foreign_key="app_user.id")
    site_id: uuid.UUID | None = Field(default=None, foreign_key="site.id")
    amount: Decimal = Field(sa_type=MONEY)
    amount_fen: int
    mode: str = Field(max_length=8)
    mchid: str = Field(max_length=32)
    sub_mchid: str | None = Field(default=None, max_length=32)
    appid: str = Field(max_length=32)
    sub_appid: str | None = Field(default=None, max_length=32)
    openid: str | None = None
    prepay_id: str | None = Field(default=None, max_length=64)
    status: str = Field(
        default="created", max_length=8, sa_column_kwargs={"server_default": "created"}
    )
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
    queried_at: datetime | None = _ts(nullable=True)
    closed_at: datetime | None = _ts(nullable=True)
    paid_at: datetime | None = _ts(nullable=True)
    transaction_id: str | None = Field(default=None, max_length=32)
    credited_via: str | None = Field(default=None, max_length=8)  # notify | query
    entry_id: uuid.UUID | None = None
    refunded: Decimal = Field(
        default=Decimal(0), sa_type=MONEY, sa_column_kwargs={"server_default": "0"}
    )


class PaymentRefund(SQLModel, table=True):
    """A refund to a WeChat payment, by its stable ``out_refund_no``: the wallet's money in
    refunds payable (``entry_id``) until WeChat pays it out (``paid_entry_id``)."""

    __tablename__ = "payment_refund"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "out_refund_no", name="payment_refund_no"),
        sa.Index("payment_refund_order", "order_id"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    order_id: uuid.UUID = Field(foreign_key="payment_order.id")
    out_refund_no: str = Field(max_length=64)
    amount: Decimal = Field(sa_type=MONEY)
    reason: str = Field(sa_type=sa.Text)
    status: str = Field(
        default="requested", max_length=10, sa_column_kwargs={"server_default": "requested"}
    )
    refund_id: str | None = Field(default=None, max_length=32)
    requested_at: datetime = _ts()
    requested_by: str
    settled_at: datetime | None = _ts(nullable=True)
    entry_id: uuid.UUID | None = None
    paid_entry_id: uuid.UUID | None = None
    answer: dict[str, Any] | None = Field(default=None, sa_type=pg.JSONB, nullable=True)


class PaymentException(SQLModel, table=True):
    """What finance must look at: a notification that does not match its order, money for
    an unknown order or a closed account, an abnormal refund. Once per kind and order."""

    __tablename__ = "payment_exception"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "kind", "out_trade_no", name="payment_exception_once"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    kind: str = Field(max_length=30)
    out_trade_no: str = Field(max_length=64)
    detail: dict[str, Any] = Field(sa_type=pg.JSONB)
    created_at: datetime = _ts()
    resolved_at: datetime | None = _ts(nullable=True)
    resolved_by: str | None = None
    resolution: str | None = Field(default=None, sa_type=sa.Text, nullable=True)


class LoginCode(SQLModel, table=True):
    """A six-digit code sent by SMS (the H5 page's phone login, binding by code): hashed,
    five minutes, five tries."""

    __tablename__ = "login_code"
    __table_args__ = (sa.Index("login_code_phone", "tenant_id", "phone", "created_at"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    phone: str = Field(max_length=20)
    code_hash: str = Field(max_length=64)
    created_at: datetime = _ts()
    expires_at: datetime = _ts()
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    used_at: datetime | None = _ts(nullable=True)


class MeterBook(SQLModel, table=True):
    """A meter book (表册, DESIGN §15): a route of a site's service points, read in order."""

    __tablename__ = "meter_book"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "code", name="meter_book_code"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    site_id: uuid.UUID = Field(foreign_key="site.id")
    code: str = Field(max_length=40)
    name: str
    created_at: datetime = _ts()


class MeterBookPoint(SQLModel, table=True):
    """A service point on a book's route, at its place; a point is on one book at most."""

    __tablename__ = "meter_book_point"
    __table_args__ = (sa.UniqueConstraint("service_point_id", name="meter_book_point_once"),)
    book_id: uuid.UUID = Field(foreign_key="meter_book.id", primary_key=True)
    service_point_id: uuid.UUID = Field(foreign_key="service_point.id", primary_key=True)
    tenant_id: uuid.UUID = _tenant()
    position: int


class MeterBookWorker(SQLModel, table=True):
    """A field worker (an operator) assigned to read, collect and dun a book."""

    __tablename__ = "meter_book_worker"
    book_id: uuid.UUID = Field(foreign_key="meter_book.id", primary_key=True)
    operator_id: uuid.UUID = Field(foreign_key="operator.id", primary_key=True)
    tenant_id: uuid.UUID = _tenant()


class ReadingCycle(SQLModel, table=True):
    """One reading round of a book (by the day it starts, in the site's zone)."""

    __tablename__ = "reading_cycle"
    __table_args__ = (sa.UniqueConstraint("book_id", "starts_on", name="reading_cycle_once"),)
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    book_id: uuid.UUID = Field(foreign_key="meter_book.id")
    starts_on: date
    opened_at: datetime = _ts()


class ReadingTask(SQLModel, table=True):
    """A point to read by hand in a cycle (it has no gateway, or its gateway is silent);
    done when a field reading of the point is uploaded in the cycle."""

    __tablename__ = "reading_task"
    __table_args__ = (
        sa.UniqueConstraint("cycle_id", "service_point_id", name="reading_task_once"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    cycle_id: uuid.UUID = Field(foreign_key="reading_cycle.id")
    service_point_id: uuid.UUID = Field(foreign_key="service_point.id")
    position: int
    reason: str = Field(max_length=16)  # no_gateway | gateway_silent
    done_at: datetime | None = _ts(nullable=True)


class FieldReading(SQLModel, table=True):
    """A reading (or an anomaly) a field worker took by hand, under the id the phone gave
    it: uploaded twice, stored once. Its register goes into ``reading`` and is rated as a
    gateway's is; ``outcome`` says what became of it."""

    __tablename__ = "field_reading"
    __table_args__ = (sa.Index("ix_field_reading_point", "service_point_id", "measured_at"),)
    id: uuid.UUID = Field(primary_key=True)  # made by the phone
    tenant_id: uuid.UUID = _tenant()
    operator_id: uuid.UUID = Field(foreign_key="operator.id")
    service_point_id: uuid.UUID = Field(foreign_key="service_point.id")
    channel_id: uuid.UUID | None = Field(default=None, foreign_key="channel.id")
    measured_at: datetime = _ts()
    total: Decimal | None = Field(default=None, sa_type=REGISTER)
    anomaly: str | None = Field(default=None, max_length=20)
    note: str | None = Field(default=None, sa_type=sa.Text)
    photo: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    outcome: str = Field(max_length=16)  # stored | duplicate_time | anomaly
    work_order_id: uuid.UUID | None = Field(default=None, foreign_key="work_order.id")
    received_at: datetime = _ts()


# ---- Reconciliation with WeChat Pay (issue 18 item 3; migration 0021) ----------------------


class ReconRun(SQLModel, table=True):
    """One merchant's trade bill of one day (WeChat's, China time): fetched, its SHA1
    checked, matched against our orders and refunds. ``refused`` (a wrong hash) and
    ``failed`` (WeChat unreachable, an unknown layout) are tried again from ``next_try_at``."""

    __tablename__ = "recon_run"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "mchid", "bill_date", name="recon_run_once"),
        sa.Index("recon_run_due", "state", "next_try_at"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    mchid: str = Field(max_length=32)
    clearing: str = Field(max_length=64)
    bill_date: date
    state: str = Field(max_length=10)  # pending | matched | refused | failed
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    next_try_at: datetime | None = _ts(nullable=True)
    error: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    hash_value: str | None = Field(default=None, max_length=64)
    lines: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    paid_total: Decimal = Field(
        default=Decimal(0), sa_type=MONEY, sa_column_kwargs={"server_default": "0"}
    )
    refund_total: Decimal = Field(
        default=Decimal(0), sa_type=MONEY, sa_column_kwargs={"server_default": "0"}
    )
    fee_total: Decimal = Field(
        default=Decimal(0), sa_type=sa.Numeric(16, 5), sa_column_kwargs={"server_default": "0"}
    )
    requested_by: str
    created_at: datetime = _ts()
    fetched_at: datetime | None = _ts(nullable=True)
    matched_at: datetime | None = _ts(nullable=True)


class ReconException(SQLModel, table=True):
    """A difference between WeChat's bill and our books (or a bill line we cannot read),
    once per run, kind and reference; open until resolved."""

    __tablename__ = "recon_exception"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "kind", "ref", name="recon_exception_once"),
        sa.Index("recon_exception_run", "run_id", "created_at"),
    )
    id: uuid.UUID = _id()
    tenant_id: uuid.UUID = _tenant()
    run_id: uuid.UUID = Field(foreign_key="recon_run.id")
    kind: str = Field(max_length=16)
    ref: str = Field(max_length=80)
    out_trade_no: str | None = Field(default=None, max_length=64)
    out_refund_no: str | None = Field(default=None, max_length=64)
    line_no: int | None = None
    ours: Decimal | None = Field(default=None, sa_type=MONEY, nullable=True)
    theirs: Decimal | None = Field(default=None, sa_type=MONEY, nullable=True)
    clearing_delta: Decimal = Field(
        default=Decimal(0), sa_type=MONEY, sa_column_kwargs={"server_default": "0"}
    )
    detail: dict[str, Any] = Field(sa_type=pg.JSONB)
    created_at: datetime = _ts()
    resolution: str | None = Field(default=None, max_length=12)
    reason: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    resolved_by: str | None = None
    resolved_at: datetime | None = _ts(nullable=True)
    entry_id: uuid.UUID | None = None
