"""Pick the driver for a bus from its transport and its devices' protocol."""

from __future__ import annotations

from gateway_agent.config import BusConfig
from gateway_agent.drivers import MeterDriver
from gateway_agent.drivers.link import Link, SerialSettings
from meter_profiles.schema import AnyProfile


def bus_protocol(bus: BusConfig, profiles: dict[str, AnyProfile]) -> str:
    """The one protocol every device on ``bus`` speaks (ValueError if mixed or unknown)."""
    missing = sorted({d.profile for d in bus.devices} - profiles.keys())
    if missing:
        raise ValueError(f"bus {bus.name}: unknown meter profile(s): {missing}")
    protocols = {profiles[d.profile].protocol for d in bus.devices}
    if len(protocols) > 1:
        raise ValueError(f"bus {bus.name}: devices speak different protocols {sorted(protocols)}")
    protocol = protocols.pop() if protocols else "modbus"
    if bus.transport == "modbus_tcp" and protocol != "modbus":
        raise ValueError(f"bus {bus.name}: transport modbus_tcp carries Modbus, not {protocol}")
    for d in bus.devices:
        if protocol in ("dlt645", "cjt188") and d.address is None:
            raise ValueError(f"bus {bus.name}: device {d.key} needs its meter address")
    return protocol


def serial_settings(bus: BusConfig, profiles: dict[str, AnyProfile]) -> SerialSettings:
    """The bus's serial line: its own settings, else its first device's profile defaults."""
    assert bus.serial is not None
    first = profiles[bus.devices[0].profile].serial if bus.devices else None
    s = bus.serial
    return SerialSettings(
        port=s.port,
        baudrate=s.baudrate or (first.baudrate if first else 9600),
        parity=s.parity or (first.parity if first else "N"),
        bytesize=s.bytesize or (first.bytesize if first else 8),
        stopbits=s.stopbits or (first.stopbits if first else 1),
    )


def make_link(bus: BusConfig, profiles: dict[str, AnyProfile]) -> Link:
    """A byte link for the protocols we frame ourselves (DL/T 645, CJ/T 188)."""
    if bus.transport == "serial":
        return Link.serial(serial_settings(bus, profiles), silence_s=bus.silence_s)
    return Link.tcp(bus.host, bus.port, silence_s=bus.silence_s or 0.0)


def make_driver(bus: BusConfig, profiles: dict[str, AnyProfile]) -> MeterDriver:
    protocol = bus_protocol(bus, profiles)
    if protocol == "modbus":
        from gateway_agent.drivers.modbus import ModbusDriver

        return ModbusDriver(bus, profiles)
    if protocol == "dlt645":
        from gateway_agent.drivers.dlt645 import Dlt645Driver

        return Dlt645Driver(
            make_link(bus, profiles), bus.timeout_s, refused_retry_s=bus.refused_retry_s
        )
    if protocol == "cjt188":
        from gateway_agent.drivers.cjt188 import Cjt188Driver

        return Cjt188Driver(make_link(bus, profiles), bus.timeout_s)
    raise ValueError(f"bus {bus.name}: no driver for protocol {protocol}")
