"""End-to-end delivery: a gateway forgets a telemetry batch only on the cloud's receipt,
re-sends it when none comes, and drops it only when the cloud says it can never be stored."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aiomqtt
import pytest
import sqlalchemy as sa

from cloud.check import check
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.consumer import IngestConsumer
from cloud.ingest.service import IngestService
from cloud.registry.service import Seeded
from contract.mqtt import (
    BrokerAddress,
    DownKind,
    EventKind,
    GatewayEvent,
    GatewayState,
    Reading,
    Receipt,
    ReceiptStatus,
    TelemetryBatch,
    Topics,
    UpKind,
    dump,
)
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig
from meter_profiles.loader import load_profiles


def _agent(mqtt_url: str, prefix: str, tmp_path: Path, gateway: str, timeout: float) -> Agent:
    cfg = AgentConfig(
        gateway=gateway,
        mqtt_url=mqtt_url,
        mqtt_prefix=prefix,
        data_dir=tmp_path,
        receipt_timeout_s=timeout,
        buses=[],
    )
    return Agent(cfg, load_profiles())


def _readings(n: int) -> list[Reading]:
    now = datetime.now(UTC)
    return [Reading(device="m1", measured_at=now.replace(microsecond=i)) for i in range(n)]


async def _next_batch(cloud: aiomqtt.Client) -> TelemetryBatch:
    async with asyncio.timeout(10):
        async for m in cloud.messages:
            if str(m.topic).endswith("/up/telemetry") and isinstance(m.payload, bytes):
                return TelemetryBatch.model_validate_json(m.payload)
    raise AssertionError("no batch")


async def _next_event(cloud: aiomqtt.Client) -> GatewayEvent:
    async with asyncio.timeout(10):
        async for m in cloud.messages:
            if str(m.topic).endswith("/up/event") and isinstance(m.payload, bytes):
                return GatewayEvent.model_validate_json(m.payload)
    raise AssertionError("no event")


async def _until(cond: object, what: str) -> None:
    for _ in range(200):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(what)


async def test_a_batch_stays_until_its_receipt_and_goes_again_without_one(
    mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    gateway = f"gw-{uuid.uuid4().hex[:8]}"
    topics = Topics(topic_prefix)
    agent = _agent(mqtt_url, topic_prefix, tmp_path, gateway, timeout=1.0)
    agent.enqueue(_readings(3))
    addr = BrokerAddress.parse(mqtt_url)
    async with aiomqtt.Client(addr.host, addr.port, identifier=f"c-{gateway}") as cloud:
        await cloud.subscribe(topics.up(gateway, UpKind.TELEMETRY), qos=1)
        await cloud.subscribe(topics.up(gateway, UpKind.EVENT), qos=1)
        running = asyncio.create_task(agent.run())
        try:
            first = await _next_batch(cloud)
            assert len(first.readings) == 3
            assert agent.outbox.depth() == 3  # the broker has it; the cloud has not said so
            again = await _next_batch(cloud)  # no receipt within 1 s: sent again
            assert again.seq > first.seq and again.readings == first.readings
            assert again.boot_id == first.boot_id

            receipt_topic = topics.down(gateway, DownKind.RECEIPT)
            stale = Receipt(gateway=gateway, boot_id="another-boot", seq=again.seq)
            await cloud.publish(receipt_topic, dump(stale), qos=1)
            await cloud.publish(receipt_topic, b"{not json", qos=1)
            await asyncio.sleep(0.3)
            assert agent.outbox.depth() == 3  # neither counts
            ok = Receipt(gateway=gateway, boot_id=again.boot_id, seq=again.seq, stored=3)
            await cloud.publish(receipt_topic, dump(ok), qos=1)
            await _until(lambda: agent.outbox.depth() == 0, "receipt did not clear the batch")

            agent.enqueue(_readings(2))
            bad = await _next_batch(cloud)
            no = Receipt(
                gateway=gateway,
                boot_id=bad.boot_id,
                seq=bad.seq,
                status=ReceiptStatus.REJECTED,
                detail="invalid: test",
            )
            await cloud.publish(receipt_topic, dump(no), qos=1)
            await _until(lambda: agent.outbox.depth() == 0, "rejected batch was kept")
            # and the gateway tells the cloud it dropped them
            assert (await _next_event(cloud)).kind is EventKind.BATCH_REJECTED
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


async def test_the_cloud_sends_receipts_for_stored_and_for_hopeless_batches(
    db: Database, group: Seeded, topic_prefix: str
) -> None:
    async with db.tenant(group.tenant_id) as conn:
        gw = str(await conn.scalar(sa.text("SELECT code FROM gateway")))
    consumer = IngestConsumer(
        IngestService(db, CommandTiming()), "mqtt://unused", Topics(topic_prefix), None
    )
    topic = Topics(topic_prefix).up(gw, UpKind.TELEMETRY)
    now = datetime.now(UTC)
    good = TelemetryBatch(
        gateway=gw,
        boot_id="b1",
        seq=4,
        sent_at=now,
        readings=(Reading(device="m1", measured_at=now, total=None),),
    )
    receipt = await consumer.handle(topic, dump(good))
    assert receipt is not None and receipt.status is ReceiptStatus.STORED
    assert (receipt.boot_id, receipt.seq, receipt.gateway) == ("b1", 4, gw)
    again = await consumer.handle(topic, dump(good))
    assert again is not None and again.status is ReceiptStatus.STORED  # a duplicate: still ok

    hopeless = json.dumps({"v": 1, "gateway": gw, "boot_id": "b1", "seq": 5, "readings": 3})
    rejected = await consumer.handle(topic, hopeless.encode())
    assert rejected is not None and rejected.status is ReceiptStatus.REJECTED
    assert rejected.seq == 5 and "invalid" in rejected.detail
    assert await consumer.handle(topic, b"\xff garbage") is None  # nobody to answer
    newer = json.dumps({"v": 2, "gateway": gw, "boot_id": "b1", "seq": 6}).encode()
    assert await consumer.handle(topic, newer) is None  # kept for a cloud that reads v2
    unknown = Topics(topic_prefix).up("gw-nobody", UpKind.TELEMETRY)
    assert await consumer.handle(unknown, dump(good)) is None  # kept until registered


async def test_batches_waiting_together_are_stored_together_each_with_its_receipt(
    db: Database, group: Seeded, topic_prefix: str
) -> None:
    """What an ingest worker finds in its queue is stored per gateway in one transaction;
    the counts stay per batch, and a batch the database refuses (here a register too large
    for its column, refused by the contract before it reaches the database) costs only its
    own receipt, not its neighbours'."""
    async with db.tenant(group.tenant_id) as conn:
        gw = str(await conn.scalar(sa.text("SELECT code FROM gateway")))
    consumer = IngestConsumer(
        IngestService(db, CommandTiming()), "mqtt://unused", Topics(topic_prefix), None
    )
    topic = Topics(topic_prefix).up(gw, UpKind.TELEMETRY)
    t0 = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)

    def batch(seq: int, *readings: tuple[str, int, str]) -> bytes:
        return dump(
            TelemetryBatch(
                gateway=gw,
                boot_id="b1",
                seq=seq,
                sent_at=t0,
                readings=tuple(
                    Reading(device=d, measured_at=t0 + timedelta(minutes=m), total=Decimal(t))
                    for d, m, t in readings
                ),
            )
        )

    second = batch(2, ("m1", 1, "100.50"), ("nobody", 1, "5"))
    hopeless = json.dumps({"v": 1, "gateway": gw, "boot_id": "b1", "seq": 5, "readings": 3})
    too_large = batch(3, ("m1", 2, "123.000")).replace(b'"123.000"', b'"12345678901234567.000"')
    receipts = await consumer.handle_many(
        [
            (topic, batch(1, ("m1", 0, "100.00"))),
            (topic, second),
            (topic, second),  # re-sent: nothing new
            (topic, too_large),  # NUMERIC(16,3) cannot hold it
            (topic, hopeless.encode()),
            (topic, batch(4, ("m1", 3, "101.00"))),
        ]
    )
    assert consumer.handled == 6
    counts = [None if r is None else (r.seq, r.status, r.stored, r.duplicates) for r in receipts]
    stored = ReceiptStatus.STORED
    assert counts == [
        (1, stored, 1, 0),
        (2, stored, 1, 0),
        (2, stored, 0, 1),
        (3, ReceiptStatus.REJECTED, 0, 0),  # never stored: the gateway may drop it
        (5, ReceiptStatus.REJECTED, 0, 0),
        (4, stored, 1, 0),
    ]
    assert receipts[1] is not None and receipts[1].quarantined == 1
    assert receipts[3] is not None and receipts[3].detail.startswith("invalid: readings.0.total")
    async with db.tenant(group.tenant_id) as conn:
        balance = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE kind = 'wallet'")
        )
    assert balance == Decimal("9.00")  # 1.00 kWh at 1.0000, charged once
    assert (await check(db, [group.tenant_id])).ok


async def test_a_batch_overtaken_by_a_confirmed_one_goes_again_at_once(
    mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    gateway = f"gw-{uuid.uuid4().hex[:8]}"
    topics = Topics(topic_prefix)
    agent = _agent(mqtt_url, topic_prefix, tmp_path, gateway, timeout=600.0)
    agent.enqueue(_readings(2))
    addr = BrokerAddress.parse(mqtt_url)
    async with aiomqtt.Client(addr.host, addr.port, identifier=f"c-{gateway}") as cloud:
        await cloud.subscribe(topics.up(gateway, UpKind.TELEMETRY), qos=1)
        running = asyncio.create_task(agent.run())
        try:
            lost = await _next_batch(cloud)  # as if nobody was subscribed: no receipt
            await asyncio.sleep(2.5)
            agent.enqueue(_readings(1))
            later = await _next_batch(cloud)
            receipt = Receipt(gateway=gateway, boot_id=later.boot_id, seq=later.seq, stored=1)
            await cloud.publish(topics.down(gateway, DownKind.RECEIPT), dump(receipt), qos=1)
            again = await _next_batch(cloud)  # long before the 600 s timeout
            assert again.readings == lost.readings and again.seq > later.seq
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


async def test_state_and_heartbeats_track_presence_and_config_version(
    db: Database, group: Seeded, topic_prefix: str
) -> None:
    async with db.tenant(group.tenant_id) as conn:
        gw = str(await conn.scalar(sa.text("SELECT code FROM gateway")))
    consumer = IngestConsumer(
        IngestService(db, CommandTiming()), "mqtt://unused", Topics(topic_prefix), None
    )
    topics = Topics(topic_prefix)

    async def presence() -> tuple[bool, int]:
        async with db.tenant(group.tenant_id) as conn:
            row = (await conn.execute(sa.text("SELECT online, config_version FROM gateway"))).one()
        return bool(row.online), int(row.config_version)

    now = datetime.now(UTC)
    await consumer.handle(
        topics.up(gw, UpKind.STATE), dump(GatewayState(gateway=gw, online=True, at=now))
    )
    assert await presence() == (True, 0)
    applied = GatewayEvent(
        gateway=gw, boot_id="b", kind=EventKind.CONFIG_APPLIED, at=now, config_version=3
    )
    await consumer.handle(topics.up(gw, UpKind.EVENT), dump(applied))
    assert await presence() == (True, 3)
    will = GatewayState(gateway=gw, online=False)  # the last will
    await consumer.handle(topics.up(gw, UpKind.STATE), dump(will))
    assert await presence() == (False, 3)
    beat = GatewayEvent(gateway=gw, boot_id="b", kind=EventKind.HEARTBEAT, at=now)
    await consumer.handle(topics.up(gw, UpKind.EVENT), dump(beat))
    assert await presence() == (True, 3)
    forged = GatewayState(gateway="someone-else", online=False)
    await consumer.handle(topics.up(gw, UpKind.STATE), dump(forged))
    assert await presence() == (True, 3)
    assert consumer.rejected.get("state:unknown_gateway") == 1


async def test_a_stop_while_the_session_winds_down_still_stops_the_agent(
    mqtt_url: str, topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop (cancel) that arrives while a broken session's tasks wind down ends run();
    it once was swallowed with the tasks' own cancellations, and the agent reconnected and
    ran on."""
    agent = _agent(mqtt_url, topic_prefix, tmp_path, f"gw-{uuid.uuid4().hex[:8]}", timeout=60)
    broken, winding = asyncio.Event(), asyncio.Event()

    async def publisher(mqtt: aiomqtt.Client) -> None:
        await broken.wait()
        raise aiomqtt.MqttError("link lost")

    async def heartbeats(mqtt: aiomqtt.Client) -> None:
        try:
            await asyncio.Event().wait()
        finally:  # winds down slowly: the stop arrives meanwhile
            winding.set()
            await asyncio.sleep(0.5)

    monkeypatch.setattr(agent, "_publisher", publisher)
    monkeypatch.setattr(agent, "_heartbeats", heartbeats)
    running = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.connected.wait(), 10)
    broken.set()
    await asyncio.wait_for(winding.wait(), 10)
    running.cancel()
    done, _ = await asyncio.wait([running], timeout=10)
    assert done, "the agent did not stop"
    assert running.cancelled()
