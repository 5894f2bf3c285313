"""`prepay-gateway scan` against simulated buses: what it finds is what is there."""

from __future__ import annotations

import yaml

from gateway_agent.config import BusConfig
from gateway_agent.scan import scan, snippet
from meter_profiles.loader import load_profiles
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
