"""No downlink message can stop a gateway: a real agent polling a simulated meter, fed the
fuzz corpus on ``down/cmd``, ``down/config`` (retained, so it would come back after every
reconnect) and ``down/receipt`` through the real broker, keeps polling, keeps its config,
answers what it can with an ``invalid`` ack, and stays the same running task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from contract.mqtt import (
    Ack,
    AckStatus,
    DownKind,
    TelemetryBatch,
    Topics,
    UpKind,
)
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
from meter_profiles.loader import load_profiles
from meter_profiles.simulators.meter import LoadCurve, SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator
from tests.conftest import wait_for
from tests.integration.test_ingest_fuzz import corpus


def _configs() -> list[bytes]:
    """Pushed configs that decode as a ConfigPush but cannot run, plus garbage."""
    now = datetime.now(UTC).isoformat()

    def push(config: object) -> bytes:
        doc = {"v": 1, "id": str(uuid.uuid4()), "version": 7, "config": config, "issued_at": now}
        return json.dumps(doc).encode()

    return [
        push({"buses": "x"}),
        push({"buses": [{"name": 5, "port": "nope", "devices": {"a": 1}}]}),
        push({"poll_interval_s": -1}),
        push({"profiles": 5}),
        push({"heartbeat_s": "Infinity"}),
        push({"identity": "stolen"}),
        push({"buses": [[[[[[[[[[[[]]]]]]]]]]]]}),
        b'{"v":1,"id":"' + str(uuid.uuid4()).encode() + b'","config":' + b"[" * 200_000,
    ]


async def test_a_fuzzed_downlink_never_stops_the_agent(
    mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    from cloud.mqtt import client

    profiles = load_profiles()
    profile = profiles["acrel-ddsy1352-modbus"]
    sim = ModbusTcpSimulator([SimulatedMeter(profile, 1, curve=LoadCurve(seed=1), speed=60)])
    await sim.start()
    gateway = f"gw-{uuid.uuid4().hex[:8]}"
    topics = Topics(topic_prefix)
    agent = Agent(
        AgentConfig(
            gateway=gateway,
            mqtt_url=mqtt_url,
            mqtt_prefix=topic_prefix,
            data_dir=tmp_path,
            poll_interval_s=0.5,
            receipt_timeout_s=600,
            buses=[
                BusConfig(
                    name="b1",
                    port=sim.port,
                    devices=[DeviceConfig(key="m1", profile=profile.model, unit=1)],
                )
            ],
        ),
        profiles,
    )
    batches: list[TelemetryBatch] = []
    acks: list[Ack] = []

    async def watch() -> None:
        async with client(mqtt_url, f"w-{gateway}") as cloud:
            await cloud.subscribe(topics.up(gateway, UpKind.TELEMETRY), qos=1)
            await cloud.subscribe(topics.up(gateway, UpKind.ACK), qos=1)
            watching.set()
            async for m in cloud.messages:
                payload = bytes(m.payload)  # type: ignore[arg-type]
                if str(m.topic).endswith("/up/telemetry"):
                    batches.append(TelemetryBatch.model_validate_json(payload))
                else:
                    acks.append(Ack.model_validate_json(payload))

    watching = asyncio.Event()
    watcher = asyncio.create_task(watch())
    running: asyncio.Task[None] | None = None
    config_topic = topics.down(gateway, DownKind.CONFIG)
    try:
        await asyncio.wait_for(watching.wait(), 10)
        running = asyncio.create_task(agent.run())
        await wait_for(lambda: _true(bool(batches)), 30, "the agent's first batch")
        hostile = [p for kind, p in corpus(gateway) if kind == "telemetry"]
        configs = _configs()
        async with client(mqtt_url, f"f-{gateway}") as pub:
            for payload in hostile:
                for kind in (DownKind.CMD, DownKind.RECEIPT, DownKind.CONFIG):
                    await pub.publish(topics.down(gateway, kind), payload, qos=1)
            for payload in configs:
                await pub.publish(config_topic, payload, qos=1, retain=True)
            after = datetime.now(UTC)
            await asyncio.sleep(1.0)
            assert not running.done(), "the agent stopped"
            # still polling: a reading measured after the whole corpus was sent
            await wait_for(
                lambda: _true(any(r.measured_at > after for b in batches for r in b.readings)),
                30,
                "a reading after the corpus",
            )
            assert agent.cfg.config_version == 0 and len(agent.buses) == 1
            assert agent.cfg.poll_interval_s == 0.5
            invalid = [a for a in acks if a.status is AckStatus.INVALID]
            assert len(invalid) >= len(configs) - 1, acks  # every config with a readable id
            # the retained bad config comes back to an agent that starts: refused, not a loop
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            seen, polled = len(acks), datetime.now(UTC)
            agent = Agent(agent.cfg, profiles)
            running = asyncio.create_task(agent.run())
            await wait_for(lambda: _true(len(acks) > seen), 30, "the retained config refused")
            await wait_for(
                lambda: _true(any(r.measured_at > polled for b in batches for r in b.readings)),
                30,
                "a reading after the restart",
            )
            assert not running.done() and agent.cfg.config_version == 0
            await pub.publish(config_topic, b"", qos=1, retain=True)  # clear the retained one
    finally:
        for task in (running, watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await sim.stop()


async def _true(value: bool) -> bool:
    return value
