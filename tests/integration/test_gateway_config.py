"""Pushed configuration: retained and versioned on ``down/config``; the agent validates it,
applies it without losing its queue, answers with an ack and reports the applied version."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

from contract.mqtt import (
    Ack,
    AckStatus,
    BrokerAddress,
    ConfigPush,
    DownKind,
    EventKind,
    GatewayEvent,
    Topics,
    UpKind,
    dump,
)
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
from gateway_agent.outbox import READING
from meter_profiles.loader import load_profiles
from meter_profiles.simulators.meter import SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator

PROFILE = "acrel-ddsy1352-modbus"


def _push(version: int, config: dict[str, Any]) -> ConfigPush:
    return ConfigPush(id=uuid.uuid4(), version=version, config=config, issued_at=datetime.now(UTC))


async def test_a_pushed_config_is_applied_kept_and_reported(
    mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    profiles = load_profiles()
    sim = ModbusTcpSimulator([SimulatedMeter(profiles[PROFILE], u) for u in (1, 2)])
    await sim.start()
    gateway = f"gw-{uuid.uuid4().hex[:8]}"
    bus = {"name": "bus1", "port": sim.port, "timeout_s": 0.2}
    cfg = AgentConfig(
        gateway=gateway,
        mqtt_url=mqtt_url,
        mqtt_prefix=topic_prefix,
        data_dir=tmp_path,
        poll_interval_s=30,
        buses=[BusConfig(**bus, devices=[DeviceConfig(key="m1", profile=PROFILE, unit=1)])],
    )
    topics = Topics(topic_prefix)
    addr = BrokerAddress.parse(mqtt_url)
    config_topic = topics.down(gateway, DownKind.CONFIG)
    agent = Agent(cfg, profiles)
    agent.outbox.put(READING, [b'{"queued":1}'])  # a backlog that must survive the change
    acks: asyncio.Queue[Ack] = asyncio.Queue()
    events: list[GatewayEvent] = []
    telemetry: list[bytes] = []

    async def listen(cloud: aiomqtt.Client) -> None:
        async for m in cloud.messages:
            payload = m.payload if isinstance(m.payload, bytes) else b""
            if m.topic.matches(topics.up(gateway, UpKind.TELEMETRY)):
                telemetry.append(payload)
            elif m.topic.matches(topics.up(gateway, UpKind.ACK)):
                await acks.put(Ack.model_validate_json(payload))
            elif m.topic.matches(topics.up(gateway, UpKind.EVENT)):
                ev = GatewayEvent.model_validate_json(payload)
                if ev.kind is not EventKind.HEARTBEAT:
                    events.append(ev)

    two_meters = {
        "poll_interval_s": 20,
        "buses": [
            bus
            | {
                "devices": [
                    {"key": "m1", "profile": PROFILE, "unit": 1},
                    {"key": "m2", "profile": PROFILE, "unit": 2},
                ]
            }
        ],
    }
    async with aiomqtt.Client(addr.host, addr.port, identifier=f"cloud-{gateway}") as cloud:
        await cloud.subscribe(f"{topic_prefix}/gw/{gateway}/up/+", qos=1)
        listener = asyncio.create_task(listen(cloud))
        good = _push(1, two_meters)
        await cloud.publish(config_topic, dump(good), qos=1, retain=True)
        running = asyncio.create_task(agent.run())
        try:
            ack = await asyncio.wait_for(acks.get(), 10)
            assert (ack.id, ack.status) == (good.id, AckStatus.OK)
            assert ack.meter_answer["config_version"] == "1"
            assert agent.cfg.config_version == 1 and agent.cfg.poll_interval_s == 20
            assert sorted(agent._bus_of) == ["m1", "m2"]
            # the new bus polls m2 (staggered after m1)
            await asyncio.sleep(0.3)

            bad = _push(2, {"buses": [bus | {"devices": [{"key": "m9", "profile": "nope"}]}]})
            await cloud.publish(config_topic, dump(bad), qos=1, retain=True)
            ack = await asyncio.wait_for(acks.get(), 10)
            assert (ack.id, ack.status) == (bad.id, AckStatus.INVALID)
            assert "nope" in ack.detail
            assert agent.cfg.config_version == 1 and sorted(agent._bus_of) == ["m1", "m2"]

            foreign = _push(3, {"gateway": "someone-else"})
            await cloud.publish(config_topic, dump(foreign), qos=1, retain=True)
            ack = await asyncio.wait_for(acks.get(), 10)
            assert ack.status is AckStatus.INVALID and "cannot be pushed" in ack.detail

            await cloud.publish(config_topic, b'{"v":1,"version":"x"}', qos=1, retain=True)
            ack = await asyncio.wait_for(acks.get(), 10)
            assert ack.status is AckStatus.INVALID
            for _ in range(50):
                if len(events) >= 3:
                    break
                await asyncio.sleep(0.1)
            kinds = [e.kind for e in events]
            assert kinds[:3] == [
                EventKind.CONFIG_APPLIED,
                EventKind.CONFIG_REJECTED,
                EventKind.CONFIG_REJECTED,
            ]
            assert events[0].config_version == 1
            # the backlog queued before the change was delivered, not lost
            assert any(b'{"queued":1}' in t for t in telemetry)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            listener.cancel()
            await cloud.publish(config_topic, b"", qos=1, retain=True)  # clear the retained

    # a restart comes up on the pushed config
    restarted = Agent(cfg, profiles)
    try:
        assert restarted.cfg.config_version == 1
        assert sorted(restarted._bus_of) == ["m1", "m2"]
    finally:
        restarted.outbox.close()
        await sim.stop()
