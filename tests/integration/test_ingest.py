"""Ingest over the real broker: duplicates are no-ops, bad input is counted and never blocks
the messages behind it, suspicious readings are quarantined and never rated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.consumer import IngestConsumer
from cloud.ingest.service import IngestService
from cloud.mqtt import client
from cloud.registry.service import Seeded
from contract.mqtt import Reading, TelemetryBatch, Topics, UpKind, dump

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def batch(gw: str, seq: int, readings: list[tuple[str, datetime, str]]) -> TelemetryBatch:
    return TelemetryBatch(
        gateway=gw,
        boot_id="b1",
        seq=seq,
        sent_at=T0,
        readings=tuple(
            Reading(device=d, measured_at=at, total=Decimal(total)) for d, at, total in readings
        ),
    )


@pytest.fixture
async def consumer(
    db: Database, mqtt_url: str, shared_group: str | None, topic_prefix: str
) -> AsyncIterator[IngestConsumer]:
    c = IngestConsumer(
        IngestService(db, CommandTiming()), mqtt_url, Topics(topic_prefix), shared_group
    )
    task = asyncio.create_task(c.run())
    await asyncio.wait_for(c.ready.wait(), 10)
    yield c
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _publish(mqtt_url: str, topic: str, payloads: list[bytes]) -> None:
    async with client(mqtt_url, "test-publisher") as mqtt:
        for p in payloads:
            await mqtt.publish(topic, p, qos=1)


async def _settle(c: IngestConsumer, n: int) -> None:
    for _ in range(200):
        if c.handled >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"consumer handled {c.handled} of {n}")


async def _gateway_code(db: Database, group: Seeded) -> str:
    async with db.tenant(group.tenant_id) as conn:
        return str(await conn.scalar(sa.text("SELECT code FROM gateway")))


async def _state(db: Database, group: Seeded) -> tuple[int, Decimal, int]:
    async with db.tenant(group.tenant_id) as conn:
        readings = await conn.scalar(sa.text("SELECT count(*) FROM reading"))
        balance = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE kind = 'wallet'")
        )
        entries = await conn.scalar(sa.text("SELECT count(*) FROM journal_entry"))
    return int(readings or 0), Decimal(balance), int(entries or 0)


async def test_bad_payloads_are_counted_and_do_not_block_the_next_message(
    db: Database, group: Seeded, consumer: IngestConsumer, mqtt_url: str, topic_prefix: str
) -> None:
    gw = await _gateway_code(db, group)
    topic = Topics(topic_prefix).up(gw, UpKind.TELEMETRY)
    good = dump(batch(gw, 1, [("m1", T0, "100.00"), ("m1", T0 + timedelta(minutes=15), "101.50")]))
    bad = [
        b"\xff\xfe not json",
        b"[1, 2, 3]",
        json.dumps({"v": 99, "gateway": gw}).encode(),
        json.dumps({"v": 1, "gateway": gw, "readings": "nope"}).encode(),
    ]
    await _publish(mqtt_url, topic, [*bad, good])
    await _settle(consumer, 5)
    assert consumer.rejected == {
        "telemetry:malformed": 2,
        "telemetry:unsupported_version_99": 1,
        "telemetry:invalid": 1,
    }
    readings, balance, _ = await _state(db, group)
    assert readings == 2
    assert balance == Decimal("8.50")  # 1.50 kWh at ¥1.0000 from a ¥10.00 opening balance


async def test_replayed_batch_changes_nothing(
    db: Database, group: Seeded, consumer: IngestConsumer, mqtt_url: str, topic_prefix: str
) -> None:
    gw = await _gateway_code(db, group)
    topic = Topics(topic_prefix).up(gw, UpKind.TELEMETRY)
    first = dump(batch(gw, 1, [("m1", T0, "10.00"), ("m1", T0 + timedelta(hours=1), "12.00")]))
    await _publish(mqtt_url, topic, [first])
    await _settle(consumer, 1)
    before = await _state(db, group)
    # The same batch again, and a re-sent copy under a new boot id (as after a restart).
    resent = dump(batch(gw, 7, [("m1", T0 + timedelta(hours=1), "12.00")]))
    await _publish(mqtt_url, topic, [first, resent])
    await _settle(consumer, 3)
    assert await _state(db, group) == before
    assert before[1] == Decimal("8.00")


async def test_suspicious_readings_are_quarantined_not_rated(
    db: Database, group: Seeded, consumer: IngestConsumer, mqtt_url: str, topic_prefix: str
) -> None:
    gw = await _gateway_code(db, group)
    service = consumer.service
    far_future = datetime.now(UTC) + timedelta(days=3)
    result = await service.store_telemetry(
        gw,
        batch(
            gw,
            1,
            [
                ("ghost", T0, "1.00"),
                ("m1", far_future, "500.00"),
                ("m1", T0, "-3.00"),
                ("m1", T0 + timedelta(minutes=1), "7.00"),
            ],
        ),
        datetime.now(UTC),
    )
    assert result.quarantined == {
        "unknown_channel": 1,
        "future_timestamp": 1,
        "negative_register": 1,
    }
    assert result.stored == 1
    readings, balance, _ = await _state(db, group)
    assert readings == 1 and balance == Decimal("10.00")  # first reading is the baseline


async def test_telemetry_for_an_unknown_gateway_is_counted(
    consumer: IngestConsumer, mqtt_url: str, topic_prefix: str
) -> None:
    topic = Topics(topic_prefix).up("gw-nobody", UpKind.TELEMETRY)
    await _publish(mqtt_url, topic, [dump(batch("gw-nobody", 1, [("m1", T0, "1.00")]))])
    await _settle(consumer, 1)
    assert consumer.rejected == {"telemetry:unknown_gateway": 1}


async def test_a_batch_partly_stored_before_stores_and_rates_only_its_new_readings(
    db: Database, group: Seeded
) -> None:
    # The first try moves every staged reading at once and meets the stored one; the batch
    # is then stored again, new readings only (also one repeated within the batch).
    service = IngestService(db, CommandTiming())
    gw = await _gateway_code(db, group)
    now = datetime.now(UTC)
    q = timedelta(minutes=15)
    first = await service.store_telemetry(
        gw, batch(gw, 1, [("m1", T0, "10.00"), ("m1", T0 + q, "11.00")]), now
    )
    assert (first.stored, first.duplicates) == (2, 0)
    again = [("m1", T0 + q, "11.00"), ("m1", T0 + 2 * q, "12.50"), ("m1", T0 + 2 * q, "12.50")]
    mixed = await service.store_telemetry(gw, batch(gw, 2, again), now)
    assert (mixed.stored, mixed.duplicates) == (1, 2)
    assert mixed.charged == Decimal("1.50")
    readings, balance, _ = await _state(db, group)
    assert (readings, balance) == (3, Decimal("7.50"))  # 2.50 kWh at ¥1.0000 from ¥10.00


async def test_quarantined_readings_are_kept_once_and_listed_for_the_installer(
    db: Database, group: Seeded, consumer: IngestConsumer
) -> None:
    """Readings of a device the registry does not know are kept (not dropped): stored once
    however often the batch comes, listed per gateway, and invisible to another group."""
    from cloud.ingest.service import unregistered
    from cloud.registry.service import seed_group
    from tests.conftest import group_spec

    gw = await _gateway_code(db, group)
    service = consumer.service
    readings = [("ghost", T0, "1.00"), ("ghost", T0 + timedelta(minutes=5), "1.50")]
    for seq in (1, 2):  # the same readings delivered twice
        result = await service.store_telemetry(gw, batch(gw, seq, readings), datetime.now(UTC))
        assert result.quarantined == {"unknown_channel": 2}
    found = await unregistered(db, group.tenant_id, group.gateway_id)
    assert [(u.device, u.channel, u.readings) for u in found] == [("ghost", 1, 2)]
    assert (found[0].first_at, found[0].last_at) == (T0, T0 + timedelta(minutes=5))
    assert found[0].last["total"] == "1.50"
    other = await seed_group(db, group_spec())
    assert await unregistered(db, other.tenant_id, group.gateway_id) == []
    async with db.tenant(other.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM reading_quarantine")) == 0
    readings_stored, balance, _ = await _state(db, group)
    assert readings_stored == 0 and balance == Decimal("10.00")
