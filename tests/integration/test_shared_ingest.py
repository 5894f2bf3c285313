"""Two ingest workers on one shared subscription (real Mosquitto), rating the same points
concurrently, fed the same stream twice: every reading stored once, every charge once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cloud.check import check
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.consumer import IngestConsumer
from cloud.ingest.service import IngestService
from cloud.mqtt import client
from cloud.rating.service import post_closed_windows
from cloud.registry.service import seed_group
from contract.mqtt import Reading, Supply, TelemetryBatch, Topics, UpKind, dump
from tests.conftest import group_spec

T0 = datetime(2026, 11, 19, 0, 0, tzinfo=UTC)
METERS, STEPS = 12, 40


def stream(gw: str) -> tuple[list[bytes], dict[str, Decimal]]:
    """One message per poll: every meter's register at that instant."""
    registers = {f"m{i}": Decimal(100 * i) for i in range(1, METERS + 1)}
    start = dict(registers)
    messages = []
    for step in range(STEPS):
        readings = []
        for i in range(1, METERS + 1):
            key = f"m{i}"
            if step:
                registers[key] += Decimal(i * 7 + step % 3) / 100
            readings.append(
                Reading(
                    device=key,
                    measured_at=T0 + timedelta(minutes=5 * step),
                    total=registers[key],
                    power=Decimal("1.5"),
                    supply=Supply.ON,
                )
            )
        messages.append(
            dump(
                TelemetryBatch(
                    gateway=gw, boot_id="b", seq=step, sent_at=T0, readings=tuple(readings)
                )
            )
        )
    return messages, {k: registers[k] - start[k] for k in registers}


async def test_two_workers_on_a_shared_subscription_store_and_charge_once(
    db: Database, mqtt_url: str, shared_group: str | None, topic_prefix: str
) -> None:
    if shared_group is None:
        pytest.skip("the embedded broker has no shared subscriptions; set MQTT_URL")
    spec = group_spec(meters=METERS, balance="100.00", price="1.0000")
    group = await seed_group(db, spec)
    topics = Topics(topic_prefix)
    timing = CommandTiming()
    workers = [
        IngestConsumer(
            IngestService(db, timing), mqtt_url, topics, shared_group, f"{topic_prefix}-w{n}"
        )
        for n in (1, 2)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in workers)), 10)
        messages, used = stream(spec.gateway_code)
        topic = topics.up(spec.gateway_code, UpKind.TELEMETRY)
        deadline = asyncio.get_running_loop().time() + 60
        async with client(mqtt_url, f"{topic_prefix}-pub") as mqtt:
            # The first poll first: it is every point's baseline. Were the second poll rated
            # before it, the first would be a reading before the mark, stored and never
            # charged (rating.core), and `used` would count one step too many.
            await mqtt.publish(topic, messages[0], qos=1)
            while sum(w.handled for w in workers) < 1:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.02)
            for payload in [*messages[1:], *reversed(messages)]:  # the second copy backwards
                await mqtt.publish(topic, payload, qos=1)
        while sum(w.handled for w in workers) < 2 * len(messages):
            assert asyncio.get_running_loop().time() < deadline, [w.handled for w in workers]
            await asyncio.sleep(0.05)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert all(w.handled > 0 for w in workers), [w.handled for w in workers]
    assert all(not w.rejected for w in workers), [w.rejected for w in workers]
    async with db.tenant(group.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM reading")) == METERS * STEPS
        balances = dict(
            (
                await conn.execute(
                    sa.text(
                        "SELECT a.number, la.balance FROM account a "
                        "JOIN ledger_account la ON la.id = a.wallet_id"
                    )
                )
            ).all()
        )
        for key, number in group.accounts.items():
            assert balances[number] == Decimal("100.00") - used[key], key
        await post_closed_windows(conn, group.tenant_id, datetime(2100, 1, 1, tzinfo=UTC), timing)
        revenue = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE code = 'revenue:electricity'")
        )
        charged = await conn.scalar(
            sa.text(
                "SELECT sum(p.amount) FROM journal_entry e JOIN posting p ON p.entry_id = e.id "
                "WHERE e.kind = 'usage' AND p.amount > 0"
            )
        )
    assert revenue == charged == sum(used.values())
    report = await check(db, [group.tenant_id])
    assert report.ok, report.breaches
