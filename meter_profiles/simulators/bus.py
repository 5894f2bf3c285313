"""A bus of simulated meters from a small YAML file (`prepay-gateway sim`)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from meter_profiles.schema import Profile
from meter_profiles.simulators.meter import LoadCurve, SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator


class SimMeter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: str
    unit: int = Field(ge=1, le=247)
    start_kwh: float = Field(default=0.0, ge=0)
    base_kw: float = Field(default=0.4, ge=0)
    peak_kw: float = Field(default=2.0, ge=0)


class SimBus(BaseModel):
    """``transport: modbus_tcp`` on ``host:port``; ``speed`` multiplies simulated time."""

    model_config = ConfigDict(extra="forbid")
    transport: str = Field(default="modbus_tcp", pattern="^modbus_tcp$")
    host: str = "127.0.0.1"
    port: int = Field(default=5020, ge=0, le=65535)
    speed: float = Field(default=1.0, gt=0)
    meters: list[SimMeter]


def load_sim_bus(path: Path) -> SimBus:
    return SimBus.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def build(bus: SimBus, profiles: dict[str, Profile]) -> ModbusTcpSimulator:
    meters = [
        SimulatedMeter(
            profiles[m.profile],
            m.unit,
            curve=LoadCurve(base_kw=m.base_kw, peak_kw=m.peak_kw, seed=m.unit),
            speed=bus.speed,
            start_kwh=m.start_kwh,
        )
        for m in bus.meters
    ]
    return ModbusTcpSimulator(meters, bus.host, bus.port)
