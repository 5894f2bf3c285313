"""The gateway agent's bus scheduler, command journal and outbox, against simulated meters
on a real TCP bus (no broker needed: commands go straight into ``handle_command``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contract.mqtt import (
    Ack,
    AckStatus,
    Command,
    CommandAction,
    EventKind,
    GatewayEvent,
    Reading,
    dump,
)
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
from gateway_agent.outbox import EVENT, READING, Outbox
from meter_profiles.loader import load_profiles
from meter_profiles.simulators.meter import SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator

PROFILE = "acrel-ddsy1352-modbus"


@pytest.fixture
async def sim() -> AsyncIterator[ModbusTcpSimulator]:
    profile = load_profiles()[PROFILE]
    s = ModbusTcpSimulator([SimulatedMeter(profile, u) for u in (1, 2, 3)])
    await s.start()
    yield s
    await s.stop()


def _agent(sim: ModbusTcpSimulator, data_dir: Path, interval: float = 30.0) -> Agent:
    cfg = AgentConfig(
        gateway="gw-test",
        data_dir=data_dir,
        poll_interval_s=interval,
        buses=[
            BusConfig(
                name="bus1",
                port=sim.port,
                timeout_s=0.1,
                devices=[DeviceConfig(key=f"m{u}", profile=PROFILE, unit=u) for u in (1, 2, 3)],
            )
        ],
    )
    return Agent(cfg, load_profiles())


def _command(
    action: CommandAction, device: str = "m1", seconds: float = 30, **params: str
) -> bytes:
    now = datetime.now(UTC)
    return dump(
        Command(
            id=uuid.uuid4(),
            device=device,
            action=action,
            params=params,
            issued_at=now,
            deadline=now + timedelta(seconds=seconds),
        )
    )


async def _running(agent: Agent) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(b.run()) for b in agent.buses]
    await asyncio.sleep(0.05)
    return tasks


async def _stop(agent: Agent, tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    agent.outbox.close()


async def test_a_command_delivered_twice_and_after_a_restart_reaches_the_meter_once(
    sim: ModbusTcpSimulator, tmp_path: Path
) -> None:
    meter = sim.meters[1]
    agent = _agent(sim, tmp_path)
    tasks = await _running(agent)
    raw = _command(CommandAction.TRIP)
    first, second = await asyncio.gather(agent.handle_command(raw), agent.handle_command(raw))
    assert first.status is AckStatus.OK and not first.duplicate
    assert second.status is AckStatus.OK and second.duplicate
    assert first.meter_answer["supply"] == "off"
    assert meter.controls == [("trip", 1)]
    await _stop(agent, tasks)

    restarted = _agent(sim, tmp_path)
    tasks = await _running(restarted)
    again = await restarted.handle_command(raw)
    assert again.duplicate and again.status is AckStatus.OK and again.id == first.id
    assert meter.controls == [("trip", 1)]  # the meter was not touched again
    await _stop(restarted, tasks)


async def test_a_command_cut_off_by_a_crash_is_not_repeated(
    sim: ModbusTcpSimulator, tmp_path: Path
) -> None:
    raw = _command(CommandAction.TRIP)
    command_id = str(Command.model_validate_json(raw).id)
    box = Outbox(tmp_path / "outbox.sqlite3", 1000)
    assert box.begin(command_id) == (True, None)  # claimed, then the process died
    box.close()
    agent = _agent(sim, tmp_path)
    tasks = await _running(agent)
    ack = await agent.handle_command(raw)
    assert ack.status is AckStatus.FAILED and "interrupted" in ack.detail
    assert sim.meters[1].controls == []
    await _stop(agent, tasks)


async def test_expired_and_malformed_commands_never_reach_a_meter(
    sim: ModbusTcpSimulator, tmp_path: Path
) -> None:
    agent = _agent(sim, tmp_path)
    tasks = await _running(agent)
    expired = await agent.handle_command(_command(CommandAction.TRIP, seconds=-1))
    assert expired.status is AckStatus.EXPIRED and "deadline" in expired.detail
    for bad in (b"{not json", b'{"v":1,"id":"x"}', b"[]", b'{"v":1}'):
        ack = await agent.handle_command(bad)
        assert ack.status is AckStatus.INVALID
    unknown = await agent.handle_command(_command(CommandAction.TRIP, device="nope"))
    assert unknown.status is AckStatus.INVALID
    bad_recharge = await agent.handle_command(_command(CommandAction.RECHARGE, amount="-5"))
    assert bad_recharge.status is AckStatus.INVALID
    assert all(m.controls == [] and m.writes == [] for m in sim.meters.values())
    await _stop(agent, tasks)


async def test_keep_power_refusal_comes_back_with_the_meters_code(
    sim: ModbusTcpSimulator, tmp_path: Path
) -> None:
    agent = _agent(sim, tmp_path)
    tasks = await _running(agent)
    assert (
        await agent.handle_command(_command(CommandAction.KEEP_POWER_ON))
    ).status is AckStatus.OK
    refused = await agent.handle_command(_command(CommandAction.TRIP))
    assert refused.status is AckStatus.FAILED
    assert refused.meter_answer["exception_code"] == "4"
    assert sim.meters[1].channels[1].relay_closed
    await _stop(agent, tasks)


async def test_a_silent_meter_backs_off_without_slowing_the_others(
    sim: ModbusTcpSimulator, tmp_path: Path
) -> None:
    sim.faults.silent.add(2)
    agent = _agent(sim, tmp_path, interval=0.2)
    tasks = await _running(agent)
    await asyncio.sleep(2.0)
    stats = agent.buses[0].scheduler.take_stats()
    await _stop(agent, tasks)
    box = Outbox(tmp_path / "outbox.sqlite3", 1000)
    devices = [r[1] for r in box.peek(READING, 10_000)]
    box.close()
    per_device = {
        k: sum(1 for body in devices if f'"device":"{k}"'.encode() in body)
        for k in ("m1", "m2", "m3")
    }
    assert per_device["m2"] == 0
    assert per_device["m1"] >= 8 and per_device["m3"] >= 8  # ~10 polls each in 2 s
    # attempts at 0, +0.2, +0.4, +0.8 (doubling): far fewer than the 10 a naive poller makes
    assert 2 <= stats["timeouts"] <= 5
    assert stats["devices_backing_off"] == 1
    assert 0 < stats["utilisation"] < 1


async def test_commands_preempt_polling(sim: ModbusTcpSimulator, tmp_path: Path) -> None:
    sim.reply_delay_s = 0.02  # every transaction holds the bus for 20 ms
    agent = _agent(sim, tmp_path, interval=0.01)  # the bus is saturated with polls
    tasks = await _running(agent)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ack = await agent.handle_command(_command(CommandAction.TRIP, device="m3"))
    elapsed = loop.time() - t0
    await _stop(agent, tasks)
    assert ack.status is AckStatus.OK
    # at most one poll (2 blocks) ahead of it, then the write and the read-back (2 blocks)
    assert elapsed < 0.5


async def test_a_queued_trip_is_superseded_by_the_close_behind_it(
    sim: ModbusTcpSimulator, tmp_path: Path
) -> None:
    """Regression (issue 20): a trip waiting for the bus and the close that supersedes it
    were both carried out in order, cutting the point for one bus transaction."""
    sim.reply_delay_s = 0.05  # the bus is busy with m2's command while m1's two queue
    agent = _agent(sim, tmp_path)
    tasks = await _running(agent)
    busy = asyncio.create_task(agent.handle_command(_command(CommandAction.TRIP, device="m2")))
    await asyncio.sleep(0.01)
    trip = asyncio.create_task(agent.handle_command(_command(CommandAction.TRIP)))
    await asyncio.sleep(0.001)
    close = asyncio.create_task(agent.handle_command(_command(CommandAction.CLOSE)))
    acks = await asyncio.gather(busy, trip, close)
    await _stop(agent, tasks)
    assert [a.status for a in acks] == [AckStatus.OK, AckStatus.SUPERSEDED, AckStatus.OK]
    assert str(acks[2].id) in acks[1].detail
    assert sim.meters[1].controls == [("close", 1)]  # the meter never saw the trip
    # an older supply command arriving after a newer one was carried out is superseded too
    agent = _agent(sim, tmp_path)
    tasks = await _running(agent)
    now = datetime.now(UTC)
    late = Command(
        id=uuid.uuid4(),
        device="m1",
        action=CommandAction.TRIP,
        issued_at=now - timedelta(seconds=5),
        deadline=now + timedelta(seconds=30),
    )
    assert (await agent.handle_command(_command(CommandAction.CLOSE))).status is AckStatus.OK
    assert (await agent.handle_command(dump(late))).status is AckStatus.SUPERSEDED
    await _stop(agent, tasks)
    assert sim.meters[1].controls == [("close", 1), ("close", 1)]


def test_the_outbox_cap_drops_oldest_readings_first_and_keeps_events(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", cap=100)
    box.put(EVENT, [b"e1"])
    assert box.put(READING, [f"r{i}".encode() for i in range(150)]) == 50
    assert box.depth() == 100 and box.dropped == 50
    assert box.peek(READING, 1)[0][1] == b"r50"
    assert box.peek(EVENT, 10)[0][1] == b"e1"
    box.close()
    reopened = Outbox(tmp_path / "o.sqlite3", cap=100)
    assert reopened.dropped == 50 and reopened.depth() == 100
    reopened.close()


async def test_overflow_raises_an_event(sim: ModbusTcpSimulator, tmp_path: Path) -> None:
    agent = _agent(sim, tmp_path)  # not running: nothing polls
    agent.outbox.cap = 100
    reading = Reading(device="m1", measured_at=datetime.now(UTC))
    agent.enqueue([reading] * 120)
    events = [GatewayEvent.model_validate_json(b) for _, b in agent.outbox.peek(EVENT, 10)]
    assert [e.kind for e in events] == [EventKind.QUEUE_OVERFLOW]
    assert events[0].dropped_total == 20
    hb = agent.heartbeat()
    assert hb.queue_depth == 100 and "bus1" in hb.buses
    agent.outbox.close()


def test_ack_roundtrip_is_stable() -> None:
    ack = Ack(id=uuid.uuid4(), gateway="g", status=AckStatus.OK, at=datetime.now(UTC))
    assert Ack.model_validate_json(dump(ack)) == ack
