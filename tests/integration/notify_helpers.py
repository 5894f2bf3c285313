"""Shared pieces of the notification tests: a seeded shop fed through the real ingest
path, the stand-ins, and a worker on an injected clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from cloud.auth import Principal
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.service import IngestService
from cloud.payments.counter import SaleRequest, sell_credit
from cloud.registry.service import Seeded, seed_group
from contract.mqtt import Reading, TelemetryBatch
from notifications.providers import Provider
from notifications.providers.log import LogProvider
from notifications.providers.twilio_sms import TwilioSms
from notifications.settings import NotifySettings
from notifications.worker import NotifyWorker
from standins.twilio import TwilioStandIn
from tests.conftest import group_spec

TIMING = CommandTiming(deadline=timedelta(minutes=2), retry=timedelta(seconds=5))


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


class Shop:
    """A seeded group (one point per meter, ¥1/kWh, alarms at ¥5 and ¥2) fed readings
    through the real ingest path, at the times the test chooses."""

    def __init__(self, db: Database, group: Seeded) -> None:
        self.db, self.group = db, group
        self.ingest = IngestService(db, TIMING)
        self.seq = 0

    @property
    def tenant(self) -> uuid.UUID:
        return self.group.tenant_id

    def point(self, key: str = "m1") -> uuid.UUID:
        return self.group.points[key]

    async def q(self, sql: str, **params: object) -> Any:
        async with self.db.tenant(self.tenant) as conn:
            return await conn.scalar(sa.text(sql), params)

    async def rows(self, sql: str, **params: object) -> list[Any]:
        async with self.db.tenant(self.tenant) as conn:
            return list((await conn.execute(sa.text(sql), params)).all())

    async def run(self, sql: str, **params: object) -> None:
        async with self.db.tenant(self.tenant) as conn:
            await conn.execute(sa.text(sql), params)

    async def customer(self, key: str = "m1") -> uuid.UUID:
        return uuid.UUID(
            str(
                await self.q(
                    "SELECT a.customer_id FROM account a WHERE a.number = :n",
                    n=self.group.accounts[key],
                )
            )
        )

    async def account_id(self, key: str = "m1") -> uuid.UUID:
        return uuid.UUID(
            str(
                await self.q("SELECT id FROM account WHERE number = :n", n=self.group.accounts[key])
            )
        )

    async def prefer(
        self,
        key: str = "m1",
        channels: tuple[str, ...] = ("sms",),
        language: str = "zh_CN",
        phone: str | None = "+8613800138001",
    ) -> uuid.UUID:
        c = await self.customer(key)
        await self.run("UPDATE customer SET phone = :p WHERE id = :c", p=phone, c=c)
        await self.run(
            "INSERT INTO notify_preference (tenant_id, customer_id, channels, language, "
            "updated_at) VALUES (:t, :c, CAST(:ch AS text[]), :l, now()) "
            "ON CONFLICT (customer_id) DO UPDATE SET channels = EXCLUDED.channels, "
            "language = EXCLUDED.language",
            t=self.tenant,
            c=c,
            ch="{" + ",".join(channels) + "}",
            l=language,
        )
        return c

    async def read(self, key: str, total: str, at: datetime) -> None:
        """A reading measured at ``at``, received and decided at ``at``."""
        self.seq += 1
        reading = Reading.model_validate(
            {"device": key, "measured_at": at, "total": total, "supply": "on"}
        )
        gw = str(await self.q("SELECT code FROM gateway"))
        batch = TelemetryBatch(
            gateway=gw, boot_id="b", seq=self.seq, sent_at=at, readings=(reading,)
        )
        await self.ingest.store_telemetry(gw, batch, at)

    async def sell(self, amount: str, key: str, now: datetime, meter: str = "m1") -> None:
        who = Principal(self.tenant, self.group.operator_id, "admin", frozenset({"sale.create"}))
        req = SaleRequest(self.group.accounts[meter], Decimal(amount), "cash")
        await sell_credit(self.db, who, req, key, now, TIMING)

    async def notes(self) -> list[Any]:
        return await self.rows(
            "SELECT id, cause_kind, status, channel, reason, attempts, provider_id, "
            "next_attempt_at, segments, language FROM notification ORDER BY created_at, cause_kind"
        )


async def shop(db: Database, meters: int = 1, balance: str = "10.00") -> Shop:
    spec = group_spec(meters=meters, balance=balance)
    spec.max_rate = Decimal(10_000)
    spec.alarms = (Decimal("5.00"), Decimal("2.00"))
    return Shop(db, await seed_group(db, spec))


def twilio(stand_in: TwilioStandIn, callback_base: str | None = None) -> TwilioSms:
    return TwilioSms(
        stand_in.account_sid,
        stand_in.auth_token,
        "+15005550006",
        callback_base,
        base_url=stand_in.url,
    )


def worker(db: Database, clock: Clock, sms: Provider, **providers: Provider) -> NotifyWorker:
    return NotifyWorker(
        db,
        {"sms": sms, "log": LogProvider(), **providers},
        NotifySettings(batch=200, concurrency=32),
        clock=clock,
    )


def at(day: datetime, hh: int, mm: int) -> datetime:
    """``hh:mm`` of ``day``'s date in Shanghai, as UTC."""
    from zoneinfo import ZoneInfo

    sh = ZoneInfo("Asia/Shanghai")
    d = day.astimezone(sh).date()
    return datetime(d.year, d.month, d.day, hh, mm, tzinfo=sh).astimezone(UTC)
