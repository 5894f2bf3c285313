"""The shipped example gateway configuration loads, and every device in it names a shipped
profile of its bus's protocol."""

from __future__ import annotations

from pathlib import Path

from gateway_agent.config import load_config
from meter_profiles.loader import load_profiles

EXAMPLE = Path(__file__).resolve().parents[2] / "gateway_agent" / "examples" / "agent.yaml"


def test_the_example_config_loads_with_shipped_profiles() -> None:
    cfg = load_config(EXAMPLE)
    profiles = load_profiles()
    transports = {b.name: b.transport for b in cfg.buses}
    assert transports == {
        "shops-645": "tcp",
        "plant-room": "modbus_tcp",
        "floor2-rtu": "tcp",
        "water": "serial",
    }
    protocols = {}
    for bus in cfg.buses:
        kinds = {profiles[d.profile].protocol for d in bus.devices}
        assert len(kinds) == 1, f"bus {bus.name} mixes protocols {kinds}"
        protocols[bus.name] = kinds.pop()
    assert protocols == {
        "shops-645": "dlt645",
        "plant-room": "modbus",
        "floor2-rtu": "modbus",
        "water": "cjt188",
    }
