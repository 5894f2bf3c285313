"""`prepay-gateway scan` against simulated buses: what it finds is what is there."""

from __future__ import annotations

import yaml

from gateway_agent.config import BusConfig
from gateway_agent.scan import scan, snippet
from meter_profiles.loader import load_profiles
from meter_profiles.schema import Dlt645Profile
from meter_profiles.simulators.meter import SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator


async def test_modbus_scan_finds_and_identifies_every_unit() -> None:
    profiles = load_profiles()
    ddsy = profiles["acrel-ddsy1352-modbus"]
    sim = ModbusTcpSimulator([SimulatedMeter(ddsy, u) for u in (1, 3, 7, 9)])
    sim.faults.exception[9] = 0x02  # answers, but not with a model id
    await sim.start()
    try:
        bus = BusConfig(
            name="shops", transport="modbus_tcp", port=sim.port, timeout_s=0.2, devices=[]
        )
        found = await scan(bus, "modbus", profiles, units=range(1, 11))
    finally:
        await sim.stop()
    assert [(f.unit, f.profile) for f in found] == [
        (1, "acrel-ddsy1352-modbus"),
        (3, "acrel-ddsy1352-modbus"),
        (7, "acrel-ddsy1352-modbus"),
        (9, None),
    ]
    assert "matches no profile identity" in found[-1].notes[0]

    text = snippet(bus, found)
    doc = yaml.safe_load(text)
    parsed = BusConfig.model_validate(doc["buses"][0] | {"devices": doc["buses"][0]["devices"][:3]})
    assert [d.unit for d in parsed.devices] == [1, 3, 7]
    assert "unit 9: answers, but matches no profile identity" in text


async def test_modbus_scan_of_an_empty_bus_finds_nothing() -> None:
    profiles = load_profiles()
    sim = ModbusTcpSimulator([])
    await sim.start()
    try:
        bus = BusConfig(
            name="empty", transport="modbus_tcp", port=sim.port, timeout_s=0.1, devices=[]
        )
        assert await scan(bus, "modbus", profiles, units=range(1, 4)) == []
    finally:
        await sim.stop()


async def _line_bus(protocol_profile: str, addresses: list[str]) -> tuple[object, BusConfig]:
    from meter_profiles.simulators.bus import SimBus, start_bus

    profiles = load_profiles()
    sim_bus = SimBus(
        name="b",
        transport="tcp",
        meters=[
            {"profile": protocol_profile, "unit": i + 1, "address": a}  # type: ignore[misc]
            for i, a in enumerate(addresses)
        ],
    )
    running = await start_bus(sim_bus, profiles)
    port = int(running.where.rsplit(":", 1)[1])
    return running, BusConfig(name="b", transport="tcp", port=port, timeout_s=0.05, devices=[])


async def test_dlt645_scan_separates_meters_that_answer_at_once() -> None:
    addresses = ["000000000161", "000000000162", "000000001234"]
    running, bus = await _line_bus("dlt645-2007-prepaid", addresses)
    try:
        found = await scan(bus, "dlt645", load_profiles(), timeout_s=0.05)
    finally:
        await running.stop()  # type: ignore[attr-defined]
    assert sorted(f.address for f in found if f.address) == addresses
    doc = yaml.safe_load(snippet(bus, found))
    assert {d["address"] for d in doc["buses"][0]["devices"]} == set(addresses)


async def test_dlt645_scan_of_a_single_meter_takes_one_request() -> None:
    running, bus = await _line_bus("dlt645-2007-prepaid", ["000000000161"])
    try:
        found = await scan(bus, "dlt645", load_profiles(), timeout_s=0.05)
        requests = running.server.stats.requests  # type: ignore[attr-defined]
    finally:
        await running.stop()  # type: ignore[attr-defined]
    assert [f.address for f in found] == ["000000000161"]
    # one read-address finds it; then each distinct identifier of the 2007 profiles, once
    dis = {
        di
        for p in load_profiles().values()
        if isinstance(p, Dlt645Profile) and p.edition == "2007"
        for di in p.reads()
    }
    assert requests == 1 + len(dis)


async def test_dlt645_scan_suggests_the_profile_each_meter_answers() -> None:
    """Three kinds of DL/T 645-2007 meter on one bus (block energy identifiers, single
    identifiers, three phases): each is suggested the profile its answers fit, not a
    hard-coded one, and the snippet carries it."""
    meters = {
        "000000000161": "dlt645-2007-prepaid",  # answers 0001FF00
        "000000000272": "acrel-ddsy1352-dlt645",  # refuses 0001FF00, answers 00010000…
        "000000000383": "acrel-dtsy1352-dlt645",  # answers phases B and C too
    }
    from meter_profiles.simulators.bus import SimBus, start_bus

    sim_bus = SimBus.model_validate(
        {"meters": [{"profile": p, "address": a} for a, p in meters.items()]}
    )
    running = await start_bus(sim_bus, load_profiles())
    port = int(running.where.rsplit(":", 1)[1])
    bus = BusConfig(name="b", transport="tcp", port=port, timeout_s=0.05, devices=[])
    try:
        found = await scan(bus, "dlt645", load_profiles(), timeout_s=0.05)
    finally:
        await running.stop()
    assert {f.address: f.profile for f in found} == meters
    for f in found:
        assert "refuses" not in " ".join(f.notes), f.notes
        assert f"of {f.profile}" in f.notes[0]
    doc = yaml.safe_load(snippet(bus, found))
    assert {d["address"]: d["profile"] for d in doc["buses"][0]["devices"]} == meters


async def test_dlt645_scan_of_a_meter_that_refuses_tariffs_says_what_will_be_missing() -> None:
    from meter_profiles.simulators.bus import SimBus, start_bus

    sim_bus = SimBus.model_validate(
        {"meters": [{"profile": "dlt645-2007-prepaid", "address": "000000000161", "strict": True}]}
    )
    running = await start_bus(sim_bus, load_profiles())
    port = int(running.where.rsplit(":", 1)[1])
    bus = BusConfig(name="b", transport="tcp", port=port, timeout_s=0.05, devices=[])
    try:
        (found,) = await scan(bus, "dlt645", load_profiles(), timeout_s=0.05)
    finally:
        await running.stop()
    # no profile fits whole: the one that needs no block DI and refuses least is suggested
    assert found.profile == "acrel-ddsy1352-dlt645"
    assert "10 of 14 quantities" in found.notes[0]
    assert "refuses tou_spike, tou_peak, tou_flat, tou_valley" in found.notes[1]


async def test_cjt188_scan_finds_each_water_meter() -> None:
    addresses = ["00000012345678", "00000087654321"]
    running, bus = await _line_bus("cjt188-valve-water", addresses)
    try:
        found = await scan(bus, "cjt188", load_profiles(), timeout_s=0.05)
    finally:
        await running.stop()  # type: ignore[attr-defined]
    assert sorted(f.address for f in found if f.address) == addresses
    assert all(f.profile == "cjt188-valve-water" for f in found)


async def test_dlt645_meters_answering_after_450_ms_are_found_and_read_from_the_snippet(
    mqtt_url: str, topic_prefix: str, tmp_path: object
) -> None:
    """The standard allows a DL/T 645 meter 500 ms to answer: a scan with the defaults finds
    meters that take 450 ms, and an agent started from its snippet reads every one of them
    (the snippet's operating timeout fits the protocol and the line, not the probe's)."""
    import asyncio
    import contextlib
    import uuid
    from pathlib import Path

    from cloud.mqtt import client
    from contract.mqtt import TelemetryBatch, Topics, UpKind
    from gateway_agent.agent import Agent
    from gateway_agent.config import AgentConfig
    from gateway_agent.scan import PROBE_TIMEOUT_S, operating_timeout
    from meter_profiles.simulators.bus import SimBus, start_bus

    profiles = load_profiles()
    addresses = ["000000000161"]  # one: a search among several waits out every silence
    sim_bus = SimBus(
        name="slow",
        transport="tcp",
        reply_delay_ms=450,
        meters=[
            {"profile": "dlt645-2007-prepaid", "unit": i + 1, "address": a}  # type: ignore[misc]
            for i, a in enumerate(addresses)
        ],
    )
    running = await start_bus(sim_bus, profiles)
    port = int(running.where.rsplit(":", 1)[1])
    bus = BusConfig(
        name="slow", transport="tcp", port=port, timeout_s=PROBE_TIMEOUT_S["dlt645"], devices=[]
    )
    agent_task = None
    try:
        found = await scan(bus, "dlt645", profiles)  # the defaults
        assert sorted(f.address for f in found if f.address) == addresses
        doc = yaml.safe_load(snippet(bus, found))
        entry = doc["buses"][0]
        assert entry["timeout_s"] == operating_timeout("dlt645", None) >= 0.8
        gateway = f"gw-{uuid.uuid4().hex[:8]}"
        agent = Agent(
            AgentConfig.model_validate(
                {
                    "gateway": gateway,
                    "mqtt_url": mqtt_url,
                    "mqtt_prefix": topic_prefix,
                    "data_dir": str(Path(str(tmp_path))),
                    "poll_interval_s": 1.0,
                    "publish_batch": 1,
                    "buses": [entry],
                }
            ),
            profiles,
        )
        seen: set[str] = set()
        async with client(mqtt_url, f"w-{gateway}") as cloud:
            await cloud.subscribe(Topics(topic_prefix).up(gateway, UpKind.TELEMETRY), qos=1)
            agent_task = asyncio.create_task(agent.run())
            async with asyncio.timeout(60):
                async for m in cloud.messages:
                    batch = TelemetryBatch.model_validate_json(bytes(m.payload))  # type: ignore[arg-type]
                    seen |= {r.device for r in batch.readings if r.total is not None}
                    if len(seen) == len(addresses):
                        break
        assert seen == {d["key"] for d in entry["devices"]}
    finally:
        if agent_task is not None:
            agent_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await agent_task
        await running.stop()  # type: ignore[attr-defined]
