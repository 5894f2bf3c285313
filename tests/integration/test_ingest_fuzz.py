"""No message can stop ingest: a corpus of hostile and careless payloads on every uplink
topic, through the real broker to a running consumer, then a good batch behind it.

The corpus holds what took the worker down before (200 KB of ``[``, invalid UTF-8 inside
a JSON string), random bytes, huge numbers and strings, wrong types, non-finite and
out-of-range values, and payloads beyond the size cap. Afterwards the same consumer task is
still running, the good batch is stored and receipted, every message of the corpus was
counted as a rejection, and the batches that named themselves got a ``rejected`` receipt
naming the field, without a traceback in the log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.consumer import IngestConsumer
from cloud.ingest.service import IngestService
from cloud.mqtt import client
from cloud.registry.service import Seeded
from contract.mqtt import (
    DownKind,
    Reading,
    Receipt,
    ReceiptStatus,
    TelemetryBatch,
    Topics,
    UpKind,
    dump,
)
from contract.structs import MAX_JSON_BYTES
from tests.conftest import wait_for


def corpus(gw: str, seed: int = 22) -> list[tuple[str, bytes]]:
    """(up kind, payload) pairs, none of which is a valid message of its kind."""
    rnd = random.Random(seed)
    now = datetime.now(UTC).isoformat()
    head = {"v": 1, "gateway": gw, "boot_id": "fz", "sent_at": now}

    def batch(seq: int, **reading: object) -> bytes:
        r = {"device": "m1", "measured_at": now, **reading}
        return json.dumps({**head, "seq": seq, "readings": [r]}).encode()

    hostile: list[bytes] = [
        b"[" * 200_000,
        b'{"v":1,"readings":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        b'{"v":1,"gateway":"g","boot_id":"\xff","seq":1}',
        b'{"v":1,"gateway":"' + gw.encode() + b'","boot_id":"\xc3\x28","seq":1}',
        b"",
        b"null",
        b"[]",
        b'"v"',
        b"1" * 5000,
        b'{"v":' + b"9" * 5000 + b"}",
        b'{"v":true,"gateway":"g"}',
        b'{"v":1.0}',
        json.dumps({**head, "seq": 10**30, "readings": []}).encode(),
        json.dumps({**head, "seq": -1, "readings": []}).encode(),
        json.dumps({**head, "seq": 3, "readings": "x" * 100_000}).encode(),
        json.dumps({**head, "boot_id": "b" * 100_000, "seq": 3, "readings": []}).encode(),
        b'{"v":1,"gateway":"' + gw.encode() + b'","x":"' + b"a" * (MAX_JSON_BYTES + 10) + b'"}',
        json.dumps({"v": 1, "gateway": {"a": [1, 2]}, "boot_id": [], "seq": "1"}).encode(),
    ]
    hostile += [rnd.randbytes(rnd.randint(1, 2000)) for _ in range(20)]
    out: list[tuple[str, bytes]] = []
    for kind in ("telemetry", "ack", "event", "state"):
        out += [(kind, p) for p in hostile]
    # telemetry that names itself but cannot be stored: a rejected receipt names the field
    out += [
        ("telemetry", batch(101, voltage="Infinity")),
        ("telemetry", batch(102, voltage="NaN")),
        ("telemetry", batch(103, total="-Infinity")),
        ("telemetry", batch(104, total="12345678901234567.000")),
        ("telemetry", batch(106, current="1E+400")),
        ("telemetry", batch(107, tou=["1", "2", "3", "NaN"])),
        ("telemetry", batch(108, purchase_count=2**40)),
        ("telemetry", batch(109, measured_at="0001-01-01T00:00:00+00:00")),
        ("telemetry", batch(110, measured_at="9999-12-31T00:00:00+00:00")),
    ]
    out += [("nonsense", b"{}"), ("telemetry2", b"[")]
    return out


REJECTED_FIELDS = {
    101: "readings.0.voltage",
    102: "readings.0.voltage",
    103: "readings.0.total",
    104: "readings.0.total",
    106: "readings.0.current",
    107: "readings.0.tou.3",
    108: "readings.0.purchase_count",
    109: "readings.0.measured_at",
    110: "readings.0.measured_at",
}


async def test_the_fuzz_corpus_never_stops_the_consumer(
    db: Database,
    group: Seeded,
    mqtt_url: str,
    topic_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with db.tenant(group.tenant_id) as conn:
        gw = str(await conn.scalar(sa.text("SELECT code FROM gateway")))
    topics = Topics(topic_prefix)
    consumer = IngestConsumer(
        IngestService(db, CommandTiming()), mqtt_url, topics, None, f"fz-{topic_prefix}"
    )
    receipts: list[Receipt] = []

    async def listen() -> None:
        async with client(mqtt_url, f"fzr-{topic_prefix}") as mqtt:
            await mqtt.subscribe(topics.down(gw, DownKind.RECEIPT), qos=1)
            listening.set()
            async for m in mqtt.messages:
                receipts.append(Receipt.model_validate_json(bytes(m.payload)))  # type: ignore[arg-type]

    listening = asyncio.Event()
    caplog.set_level(logging.WARNING)
    running = asyncio.create_task(consumer.run())
    listener = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(consumer.ready.wait(), 10)
        await asyncio.wait_for(listening.wait(), 10)
        messages = corpus(gw)
        async with client(mqtt_url, f"fzp-{topic_prefix}") as pub:
            for kind, payload in messages:
                await pub.publish(f"{topic_prefix}/gw/{gw}/up/{kind}", payload, qos=1)
            # storable though odd: an exponent beyond PostgreSQL's numeric format, and a
            # fraction of 20,000 digits (each rounded to 12 places when stored)
            odd_reading = {
                "device": "m1",
                "measured_at": datetime.now(UTC).isoformat(),
                "power": "1E-100000",
                "current": "0." + "1" * 20_000,
            }
            odd = json.dumps(
                {
                    "v": 1,
                    "gateway": gw,
                    "boot_id": "fz",
                    "seq": 105,
                    "sent_at": odd_reading["measured_at"],
                    "readings": [odd_reading],
                }
            ).encode()
            await pub.publish(topics.up(gw, UpKind.TELEMETRY), odd, qos=1)
            now = datetime.now(UTC)
            good = TelemetryBatch(
                gateway=gw,
                boot_id="fz",
                seq=500,
                sent_at=now,
                readings=(Reading(device="m1", measured_at=now, total=None),),
            )
            await pub.publish(topics.up(gw, UpKind.TELEMETRY), dump(good), qos=1)

        async def good_receipted() -> bool:
            return any(r.seq == 500 for r in receipts)

        await wait_for(good_receipted, 60, "the good batch's receipt behind the corpus")
        assert not running.done(), "the consumer stopped"
        assert consumer.handled == len(messages) + 2
        # every message of the corpus was counted as a rejection, each once
        assert sum(consumer.rejected.values()) == len(messages), consumer.rejected
        good_receipt = next(r for r in receipts if r.seq == 500)
        assert good_receipt.status is ReceiptStatus.STORED and good_receipt.stored == 1
        odd_receipt = next(r for r in receipts if r.seq == 105)
        assert odd_receipt.status is ReceiptStatus.STORED and odd_receipt.stored == 1
        # batches that said which they were got a rejected receipt naming the field
        by_seq = {r.seq: r for r in receipts}
        for seq, field in REJECTED_FIELDS.items():
            r = by_seq.get(seq)
            assert r is not None, f"no receipt for batch {seq}"
            assert r.status is ReceiptStatus.REJECTED
            assert r.detail.startswith(f"invalid: {field}"), r.detail
        assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"
        async with db.tenant(group.tenant_id) as conn:
            stored = (await conn.execute(sa.text("SELECT power, current FROM reading"))).all()
        assert len(stored) == 2
        assert (Decimal(0), Decimal("0.111")) in [tuple(row) for row in stored]
    finally:
        for task in (running, listener):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
