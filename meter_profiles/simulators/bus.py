"""Buses of simulated meters from a small YAML file (`prepay-gateway sim`).

```yaml
speed: 60                    # simulated seconds per wall-clock second
buses:
  - name: shops
    transport: tcp           # modbus_tcp (Modbus only) | tcp (serial-to-Ethernet) | pty
    port: 5020
    baudrate: 9600           # pace bytes like the wire (omit: unpaced)
    reply_delay_ms: 5
    meters:
      - {profile: acrel-ddsy1352-modbus, unit: 1}
      - {profile: acrel-ddsy1352-dlt645, address: "000000000002"}   # not on the same bus
      - {profile: acrel-ddsy1352-modbus, unit: 3, strict: true}  # refuses gaps in blocks
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from meter_profiles.schema import AnyProfile
from meter_profiles.simulators.line import Faults, LineServer, LineTiming, Responder
from meter_profiles.simulators.meter import LoadCurve, SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimMeter(_Strict):
    profile: str
    unit: int = Field(default=1, ge=1, le=247)
    address: str | None = Field(default=None, pattern=r"^[0-9]{12}([0-9]{2})?$")
    start_total: float = Field(default=0.0, ge=0)
    base: float | None = Field(default=None, ge=0)
    peak: float | None = Field(default=None, ge=0)
    meter_prepaid: bool | None = None
    balance: Decimal = Decimal("0.00")
    price: Decimal = Field(default=Decimal("1.00"), gt=0)
    #: answers less than its profile plans for (see ``Faults.strict``): DL/T 645 refuses
    #: block and tariff identifiers, Modbus refuses unlisted registers inside a block
    strict: bool = False


class SimBus(_Strict):
    name: str = "bus"
    transport: Literal["modbus_tcp", "tcp", "pty"] = "tcp"
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    baudrate: int | None = Field(default=None, ge=300, le=115200)
    bits_per_char: int = Field(default=11, ge=10, le=12)
    reply_delay_ms: float = Field(default=0.0, ge=0)
    meters: list[SimMeter]


class SimConfig(_Strict):
    speed: float = Field(default=1.0, gt=0)
    buses: list[SimBus]

    @model_validator(mode="before")
    @classmethod
    def _one_bus_shorthand(cls, data: object) -> object:
        if isinstance(data, dict) and "meters" in data and "buses" not in data:
            speed = data.pop("speed", 1.0)
            return {"speed": speed, "buses": [data]}
        return data


class SimConfigError(ValueError):
    pass


def load_sim_config(path: Path) -> SimConfig:
    try:
        return SimConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        raise SimConfigError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise SimConfigError(f"{path}: {problems}") from exc


@dataclass
class RunningBus:
    name: str
    protocol: str
    transport: str
    meters: list[SimulatedMeter]
    faults: Faults
    where: str = ""
    server: LineServer | ModbusTcpSimulator | None = field(default=None, repr=False)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()


def build_meters(
    bus: SimBus, profiles: dict[str, AnyProfile], speed: float
) -> list[SimulatedMeter]:
    meters = []
    for m in bus.meters:
        if m.profile not in profiles:
            raise SimConfigError(f"bus {bus.name}: unknown profile {m.profile!r}")
        profile = profiles[m.profile]
        curve = None
        if m.base is not None or m.peak is not None:
            base = m.base if m.base is not None else 0.4
            curve = LoadCurve(base=base, peak=m.peak if m.peak is not None else base, seed=m.unit)
        meters.append(
            SimulatedMeter(
                profile,
                m.unit,
                address=m.address,
                curve=curve,
                speed=speed,
                start_total=m.start_total,
                meter_prepaid=m.meter_prepaid,
                balance=m.balance,
                price=m.price,
            )
        )
    return meters


async def start_bus(bus: SimBus, profiles: dict[str, AnyProfile], speed: float = 1.0) -> RunningBus:
    """Start one simulated bus; the caller stops it with ``await running.stop()``."""
    meters = build_meters(bus, profiles, speed)
    protocols = {m.profile.protocol for m in meters}
    if len(protocols) > 1:
        raise SimConfigError(f"bus {bus.name}: one bus, one protocol (got {sorted(protocols)})")
    protocol = protocols.pop() if protocols else "modbus"
    timing = LineTiming(bus.baudrate, bus.bits_per_char, bus.reply_delay_ms / 1000.0)
    if bus.transport == "modbus_tcp":
        if protocol != "modbus":
            raise SimConfigError(f"bus {bus.name}: modbus_tcp carries Modbus, not {protocol}")
        sim = ModbusTcpSimulator(meters, bus.host, bus.port)
        sim.reply_delay_s = timing.reply_delay_s
        sim.faults.strict.update(_strict(bus, meters))
        await sim.start()
        return RunningBus(
            bus.name, protocol, bus.transport, meters, sim.faults, f"{sim.host}:{sim.port}", sim
        )
    faults = Faults(strict=_strict(bus, meters))
    server = LineServer(make_responder(protocol, meters, faults), timing)
    if bus.transport == "pty":
        where = await server.start_pty()
    else:
        port = await server.start_tcp(bus.host, bus.port)
        where = f"{bus.host}:{port}"
    return RunningBus(bus.name, protocol, bus.transport, meters, faults, where, server)


def _strict(bus: SimBus, meters: list[SimulatedMeter]) -> set[int | str]:
    """The fault keys (unit id or address) of the bus's ``strict`` meters."""
    return {
        (sim.unit if sim.profile.protocol == "modbus" else sim.address.upper())
        for m, sim in zip(bus.meters, meters, strict=True)
        if m.strict
    }


def make_responder(protocol: str, meters: list[SimulatedMeter], faults: Faults) -> Responder:
    """The meter side of ``protocol`` for a byte line (RTU framing for Modbus)."""
    if protocol == "modbus":
        from meter_profiles.simulators.modbus import ModbusDevices
        from meter_profiles.simulators.modbus_rtu import ModbusRtuResponder

        return ModbusRtuResponder(ModbusDevices(meters, faults))
    if protocol == "dlt645":
        from meter_profiles.simulators.dlt645 import Dlt645Responder

        return Dlt645Responder(meters, faults)
    if protocol == "cjt188":
        from meter_profiles.simulators.cjt188 import Cjt188Responder

        return Cjt188Responder(meters, faults)
    raise SimConfigError(f"no simulator for protocol {protocol}")
