"""Every shipped Modbus profile end to end: the gateway's ModbusDriver (pymodbus 3.16) reads
and controls simulated meters over the three Modbus transports, each a real byte path:

- ``serial``: Modbus RTU over a pseudo-terminal pair (parity N: even parity cannot be set on
  a pty), through :class:`AsyncModbusSerialClient`;
- ``tcp``: Modbus RTU over TCP, as through a serial-to-Ethernet converter (LineServer);
- ``modbus_tcp``: Modbus TCP with the MBAP header (ModbusTcpSimulator).

The simulated meters run on a manual clock, so a test decides exactly how much energy flows
between two reads and the expected values are the meter's own, truncated to the profile's
register resolution.

Faults and how they surface (pymodbus drops a reply with a bad CRC and would only time out;
the driver ends the transaction once the line has been quiet after >= 4 bytes that did not
decode): silent -> DeviceTimeout; exception -> DeviceException(code); corrupt CRC and garbage
-> DecodeFailure (RTU); a truncated Modbus TCP PDU -> DecodeFailure. In every case the next
device on the same bus reads fine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from contract.mqtt import Reading
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig, SerialPortConfig
from gateway_agent.drivers import DecodeFailure, DeviceException, DeviceTimeout, Values
from gateway_agent.drivers.factory import make_driver
from gateway_agent.drivers.modbus import ModbusDriver
from gateway_agent.outbox import READING
from gateway_agent.protocols.modbus_rtu import encode_frame
from meter_profiles.decode import Block, plan_blocks, split_block, supply_on
from meter_profiles.loader import load_profiles
from meter_profiles.schema import ModbusProfile
from meter_profiles.simulators.line import Faults, LineServer, LineTiming
from meter_profiles.simulators.meter import SimulatedMeter
from meter_profiles.simulators.modbus import ModbusDevices
from meter_profiles.simulators.modbus_rtu import ModbusRtuResponder
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator

PROFILES = load_profiles()
MODBUS = sorted(k for k, p in PROFILES.items() if isinstance(p, ModbusProfile))
TRANSPORTS = ["serial", "tcp", "modbus_tcp"]
EXPECTED = {  # the profiles this piece ships or must cover; a missing one fails loudly
    "acrel-ddsy1352-modbus",
    "acrel-dtsy1352-modbus",
    "acrel-adf300l-12",
    "acrel-adf300l-24",
    "acrel-adf300l-36",
    "acrel-adf300l-4s",
    "modbus-valve-water",
}
DEADLINE = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=5)


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Bus:
    driver: ModbusDriver
    faults: Faults
    meters: list[SimulatedMeter]
    devices: list[DeviceConfig]
    profile: ModbusProfile
    clock: ManualClock


def modbus_profile(name: str) -> ModbusProfile:
    p = PROFILES[name]
    assert isinstance(p, ModbusProfile)
    return p


@contextlib.asynccontextmanager
async def open_bus(
    transport: str,
    profile: ModbusProfile,
    *,
    meter_prepaid: bool = False,
    balance: Decimal = Decimal("0.00"),
    timeout_s: float = 0.3,
    port: int | None = None,
) -> AsyncIterator[Bus]:
    """Two meters of ``profile`` (units 1 and 2) on one simulated bus and a driver for it."""
    clock = ManualClock()
    meters = [
        SimulatedMeter(
            profile,
            unit,
            speed=1.0,
            clock=clock,
            meter_prepaid=meter_prepaid,
            balance=balance,
            start_total=100.0 * unit,
        )
        for unit in (1, 2)
    ]
    devices = [DeviceConfig(key=f"m{m.unit}", profile=profile.model, unit=m.unit) for m in meters]
    server: LineServer | ModbusTcpSimulator
    if transport == "modbus_tcp":
        server = ModbusTcpSimulator(meters)
        await server.start()
        faults = server.faults
        bus = BusConfig(
            name="b", transport="modbus_tcp", port=server.port, timeout_s=timeout_s, devices=devices
        )
    else:
        faults = Faults()
        server = LineServer(ModbusRtuResponder(ModbusDevices(meters, faults)), LineTiming())
        if transport == "serial":
            path = await server.start_pty()
            bus = BusConfig(
                name="b",
                transport="serial",
                serial=SerialPortConfig(port=path),
                timeout_s=timeout_s,
                devices=devices,
            )
        else:
            tcp_port = await server.start_tcp()
            bus = BusConfig(
                name="b",
                transport="tcp",
                port=port or tcp_port,
                timeout_s=timeout_s,
                devices=devices,
            )
    driver = make_driver(bus, PROFILES)
    assert isinstance(driver, ModbusDriver)
    try:
        yield Bus(driver, faults, meters, devices, profile, clock)
    finally:
        await driver.close()
        await server.stop()


def expected_values(profile: ModbusProfile, meter: SimulatedMeter) -> Values:
    """What the registers hold: the meter's values truncated to each register's scale."""
    out: Values = {}
    for ch in range(1, profile.channels + 1):
        values = meter.values(ch)
        for name, q in profile.quantities.items():
            if ch > 1 and name in profile.shared:
                continue
            v = values.get(name, Decimal(0))
            out[(name, ch)] = v if q.type == "float32" else Decimal(int(v / q.scale)) * q.scale
    return out


def assert_matches(profile: ModbusProfile, got: Values, meter: SimulatedMeter) -> None:
    want = expected_values(profile, meter)
    assert set(got) == set(want)
    for key, value in want.items():
        q = profile.quantities[key[0]]
        if q.type == "float32":  # 24-bit mantissa
            assert abs(got[key] - value) <= abs(value) * Decimal("1e-6") + Decimal("1e-6"), key
        else:
            assert got[key] == value, key


def test_every_expected_modbus_profile_is_shipped() -> None:
    assert set(MODBUS) >= EXPECTED


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", MODBUS)
async def test_reads_every_channel_to_the_profiles_resolution(name: str, transport: str) -> None:
    profile = modbus_profile(name)
    async with open_bus(transport, profile) as bus:
        bus.clock.now += 3 * 3600.0  # three hours of load on every channel
        for meter, device in zip(bus.meters, bus.devices, strict=True):
            got = await bus.driver.read(device, profile)
            assert_matches(profile, got, meter)
        energy = "total_volume" if profile.utility == "water" else "total_energy"
        first = await bus.driver.read(bus.devices[0], profile)
        assert all(first[(energy, ch)] > 0 for ch in range(1, profile.channels + 1))
        # the meters differ, so a reply cannot have come from the wrong unit
        second = await bus.driver.read(bus.devices[1], profile)
        assert first[(energy, 1)] != second[(energy, 1)]


def supply(bus: Bus, values: Values) -> list[bool | None]:
    return [supply_on(bus.profile, values, ch) for ch in range(1, bus.profile.channels + 1)]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", [n for n in MODBUS if "trip" in modbus_profile(n).controls])
async def test_trip_stops_only_its_circuit_and_keep_power_refuses_trips(
    name: str, transport: str
) -> None:
    profile = modbus_profile(name)
    target = min(5, profile.channels)  # ADF300L: circuit 5
    async with open_bus(transport, profile) as bus:
        drv, dev, meter = bus.driver, bus.devices[0], bus.meters[0]
        bus.clock.now += 60.0
        before = await drv.read(dev, profile)
        assert all(supply(bus, before))

        await drv.control(dev, profile, "trip", target, DEADLINE)
        assert [meter.supply_on(ch) for ch in meter.channels] == [
            ch != target for ch in meter.channels
        ]
        bus.clock.now += 3 * 3600.0
        after = await drv.read(dev, profile)
        assert supply(bus, after) == [ch != target for ch in meter.channels]
        for ch in meter.channels:
            grew = after[("total_energy", ch)] > before[("total_energy", ch)]
            assert grew == (ch != target), ch
        assert bus.meters[1].supply_on(target)  # the other meter on the bus is untouched

        await drv.control(dev, profile, "close", target, DEADLINE)
        assert meter.supply_on(target)
        if "keep_power_on" in profile.controls:
            await drv.control(dev, profile, "keep_power_on", target, DEADLINE)
            with pytest.raises(DeviceException) as refused:
                await drv.control(dev, profile, "trip", target, DEADLINE)
            assert refused.value.code == 4
            assert meter.supply_on(target)
            await drv.control(dev, profile, "keep_power_off", target, DEADLINE)
            await drv.control(dev, profile, "trip", target, DEADLINE)
            assert not meter.supply_on(target)
            assert supply(bus, await drv.read(dev, profile))[target - 1] is False


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", [n for n in MODBUS if "valve_close" in modbus_profile(n).controls])
async def test_valve_close_and_open(name: str, transport: str) -> None:
    profile = modbus_profile(name)
    async with open_bus(transport, profile) as bus:
        drv, dev, meter = bus.driver, bus.devices[0], bus.meters[0]
        assert supply(bus, await drv.read(dev, profile)) == [True]
        await drv.control(dev, profile, "valve_close", 1, DEADLINE)
        assert not meter.supply_on(1)
        assert supply(bus, await drv.read(dev, profile)) == [False]
        bus.clock.now += 3600.0
        closed = await drv.read(dev, profile)
        bus.clock.now += 3600.0
        assert (await drv.read(dev, profile))[("total_volume", 1)] == closed[("total_volume", 1)]
        await drv.control(dev, profile, "valve_open", 1, DEADLINE)
        assert supply(bus, await drv.read(dev, profile)) == [True]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", [n for n in MODBUS if modbus_profile(n).recharge is not None])
async def test_meter_prepaid_recharge_raises_the_balance_exactly_once(
    name: str, transport: str
) -> None:
    profile = modbus_profile(name)
    async with open_bus(transport, profile, meter_prepaid=True, balance=Decimal("10.00")) as bus:
        drv, dev, meter = bus.driver, bus.devices[0], bus.meters[0]
        answer = await drv.recharge(dev, profile, Decimal("50.00"), 1)
        assert answer == {"amount": "50.00", "purchase_count": "1"}
        assert meter.balance == Decimal("60.00")
        values = await drv.read(dev, profile)
        assert values[("remaining_amount", 1)] == Decimal("60.00")
        assert values[("purchase_count", 1)] == 1
        with pytest.raises(DeviceException):
            await drv.recharge(dev, profile, Decimal("50.00"), 1)
        assert meter.balance == Decimal("60.00")
        assert meter.purchases == [(1, Decimal("50.00"))]
        assert bus.meters[1].balance == Decimal("10.00")


FAULTS = [
    ("silent", DeviceTimeout),
    ("exception", DeviceException),
    ("corrupt", DecodeFailure),
    ("garbage", DecodeFailure),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault,error", FAULTS)
@pytest.mark.parametrize("name", ["acrel-ddsy1352-modbus", "acrel-adf300l-12"])
async def test_a_faulty_meter_fails_alone(
    name: str, transport: str, fault: str, error: type[Exception]
) -> None:
    if transport == "modbus_tcp" and fault == "garbage":
        pytest.skip("the Modbus TCP simulator has no garbage fault (truncated PDU: 'corrupt')")
    profile = modbus_profile(name)
    async with open_bus(transport, profile) as bus:
        drv = bus.driver
        if fault == "exception":
            bus.faults.exception[1] = 0x02
        else:
            getattr(bus.faults, fault).add(1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(error) as failed:
            await drv.read(bus.devices[0], profile)
        if fault == "exception":
            assert isinstance(failed.value, DeviceException)
            assert failed.value.code == 0x02
        if error is DecodeFailure:  # found from the line going quiet, not the timeout
            assert loop.time() - started < 0.3
        # the next device on the same bus is not affected, nor is the faulty one once healed
        assert_matches(profile, await drv.read(bus.devices[1], profile), bus.meters[1])
        bus.faults.clear()
        assert_matches(profile, await drv.read(bus.devices[0], profile), bus.meters[0])


class DroppingProxy:
    """A TCP relay in front of a converter that can drop every connection (a converter
    reboot or a network cut)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(4096):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def drop(self) -> None:
        for w in self._writers:
            w.close()
        self._writers.clear()

    async def stop(self) -> None:
        self.drop()
        if self._server is not None:
            self._server.close()


async def test_reconnects_after_the_converter_drops_the_connection() -> None:
    profile = modbus_profile("acrel-ddsy1352-modbus")
    clock = ManualClock()
    meter = SimulatedMeter(profile, 1, clock=clock, start_total=5.0)
    line = LineServer(ModbusRtuResponder(ModbusDevices([meter])), LineTiming())
    proxy = DroppingProxy(await line.start_tcp())
    await proxy.start()
    device = DeviceConfig(key="m1", profile=profile.model, unit=1)
    bus = BusConfig(name="b", transport="tcp", port=proxy.port, timeout_s=0.3, devices=[device])
    driver = make_driver(bus, PROFILES)
    try:
        assert_matches(profile, await driver.read(device, profile), meter)
        proxy.drop()
        await asyncio.sleep(0.05)  # the EOF reaches the client
        clock.now += 3600.0
        assert_matches(profile, await driver.read(device, profile), meter)
        assert proxy.connections == 2
    finally:
        await driver.close()
        await proxy.stop()
        await line.stop()


async def test_a_connection_lost_mid_transaction_is_a_timeout_not_a_hang() -> None:
    profile = modbus_profile("acrel-ddsy1352-modbus")
    meter = SimulatedMeter(profile, 1, clock=ManualClock())
    devices = ModbusDevices([meter])
    devices.faults.silent.add(1)
    line = LineServer(ModbusRtuResponder(devices), LineTiming())
    proxy = DroppingProxy(await line.start_tcp())
    await proxy.start()
    device = DeviceConfig(key="m1", profile=profile.model, unit=1)
    bus = BusConfig(name="b", transport="tcp", port=proxy.port, timeout_s=5.0, devices=[device])
    driver = make_driver(bus, PROFILES)
    loop = asyncio.get_running_loop()
    try:
        asyncio.get_running_loop().call_later(0.1, proxy.drop)
        started = loop.time()
        with pytest.raises(DeviceTimeout, match="connection lost"):
            await driver.read(device, profile)
        assert loop.time() - started < 1.0
        devices.faults.clear()
        assert_matches(profile, await driver.read(device, profile), meter)
    finally:
        await driver.close()
        await proxy.stop()
        await line.stop()


async def test_reads_use_the_planned_blocks_only() -> None:
    """Fewest requests: one request per planned block, shared quantities read once."""
    profile = modbus_profile("acrel-adf300l-36")
    meter = SimulatedMeter(profile, 1, clock=ManualClock())
    server = LineServer(ModbusRtuResponder(ModbusDevices([meter])), LineTiming())
    port = await server.start_tcp()
    device = DeviceConfig(key="m1", profile=profile.model, unit=1)
    driver = make_driver(
        BusConfig(name="b", transport="tcp", port=port, devices=[device]), PROFILES
    )
    try:
        values = await driver.read(device, profile)
        assert server.stats.requests == len(plan_blocks(profile)) == 3
        assert ("model_id", 1) in values and ("model_id", 2) not in values
    finally:
        await driver.close()
        await server.stop()


# -- a meter that refuses unlisted registers inside a planned block --------------------------


def _gapped_blocks(profile: ModbusProfile) -> list[Block]:
    """Planned blocks that span registers the profile does not list."""
    return [
        b
        for b in plan_blocks(profile)
        if b.count > sum(profile.quantities[n].count for n, _ in b.members)
    ]


GAPPED = [n for n in MODBUS if _gapped_blocks(modbus_profile(n))]


def test_some_shipped_profiles_plan_blocks_over_unlisted_registers() -> None:
    assert {"acrel-ddsy1352-modbus", "acrel-adf300l-12"} <= set(GAPPED)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("name", GAPPED)
async def test_a_meter_refusing_unlisted_registers_is_read_in_split_blocks(
    name: str, transport: str
) -> None:
    """Acceptance (issue 22): a block spanning unlisted registers (``max_read_gap``) is
    answered with exception 2 by a strict meter; the driver splits it into the listed
    registers' runs, reads every quantity, and remembers the split for that device only."""
    profile = modbus_profile(name)
    async with open_bus(transport, profile) as bus:
        bus.faults.strict.add(1)
        drv = bus.driver
        first = await drv.read(bus.devices[0], profile)
        assert_matches(profile, first, bus.meters[0])
        refused = drv.refusals.take()
        assert refused == len(_gapped_blocks(profile)), "one refusal per gapped block"
        bus.clock.now += 600.0
        assert_matches(profile, await drv.read(bus.devices[0], profile), bus.meters[0])
        assert drv.refusals.take() == 0, "the split is remembered"
        assert drv.refusals.skipping() == 0, "nothing is lost"
        # the other meter on the bus answers the planned blocks
        assert_matches(profile, await drv.read(bus.devices[1], profile), bus.meters[1])
        assert drv.refusals.take() == 0


async def test_split_reads_are_remembered_and_a_missing_register_costs_its_quantity() -> None:
    """Over a line that counts requests: the first read of a strict meter costs the planned
    blocks plus the split runs, later reads only the runs; a quantity whose own register
    the meter refuses is skipped (and counted in the heartbeat), the rest still read."""
    profile = modbus_profile("acrel-ddsy1352-modbus")
    # a quantity the meter does not have, two registers after the last metering one
    extra = profile.model_copy(
        update={
            "quantities": {
                **profile.quantities,
                "frequency": profile.quantities["pf"].model_copy(update={"address": 0x0012}),
            }
        }
    )
    clock = ManualClock()
    meters = [SimulatedMeter(profile, 1, clock=clock, start_total=10.0)]
    faults = Faults(strict={1})
    server = LineServer(ModbusRtuResponder(ModbusDevices(meters, faults)), LineTiming())
    port = await server.start_tcp()
    device = DeviceConfig(key="m1", profile=profile.model, unit=1)
    bus = BusConfig(name="b", transport="tcp", port=port, timeout_s=0.3, devices=[device])
    driver = make_driver(bus, PROFILES)
    assert isinstance(driver, ModbusDriver)
    plan = plan_blocks(extra)
    runs = [r for b in plan for r in (split_block(extra, b) if b.start == 0 else [b])]
    try:
        clock.now += 600.0
        values = await driver.read(device, extra)
        assert ("frequency", 1) not in values
        assert_matches(profile, values, meters[0])
        first = server.stats.requests
        # planned: 2 blocks; block 0 refused → 4 runs, the last (frequency alone) refused
        assert (len(plan), len(runs)) == (2, 5)
        assert first == len(plan) + len(runs) - 1
        assert driver.refusals.take() == 2 and driver.refusals.skipping() == 1
        values = await driver.read(device, extra)
        assert_matches(profile, values, meters[0])
        assert server.stats.requests - first == len(runs) - 1, "split kept, frequency skipped"
    finally:
        await driver.close()
        await server.stop()


async def test_the_heartbeat_counts_modbus_refusals(tmp_path: Path) -> None:
    """The agent polling strict meters: readings carry every quantity, no device backs off,
    and the heartbeat counts one refusal per device and gapped block (the split is kept)."""
    profile = modbus_profile("acrel-ddsy1352-modbus")
    meters = [SimulatedMeter(profile, u, start_total=5.0) for u in (1, 2)]
    sim = ModbusTcpSimulator(meters)
    sim.faults.strict.update({1, 2})
    await sim.start()
    devices = [DeviceConfig(key=f"m{m.unit}", profile=profile.model, unit=m.unit) for m in meters]
    cfg = AgentConfig(
        gateway="gw-mb",
        data_dir=tmp_path,
        poll_interval_s=0.1,
        buses=[BusConfig(name="mb", port=sim.port, timeout_s=0.3, devices=devices)],
    )
    agent = Agent(cfg, PROFILES)
    task = asyncio.create_task(agent.buses[0].run())
    try:
        await asyncio.sleep(0.8)
        heartbeat = agent.heartbeat()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()
    readings = [Reading.model_validate_json(body) for _, body in agent.outbox.peek(READING, 1000)]
    agent.outbox.close()
    stats = heartbeat.buses["mb"]
    assert stats.refused == len(meters) * len(_gapped_blocks(profile))
    assert stats.refused_items == 0 and stats.devices_backing_off == 0 and stats.errors == 0
    for dev in devices:
        mine = [r for r in readings if r.device == dev.key]
        assert len(mine) >= 3
        assert all(r.total is not None and r.tou is not None and r.voltage for r in mine)


# -- the RTU responder on its own (framing rules a real slave follows) -----------------------


def responder() -> tuple[ModbusRtuResponder, list[SimulatedMeter]]:
    profile = modbus_profile("acrel-ddsy1352-modbus")
    meters = [SimulatedMeter(profile, u, clock=ManualClock()) for u in (1, 2)]
    return ModbusRtuResponder(ModbusDevices(meters)), meters


def test_responder_waits_for_a_whole_request_and_checks_the_crc() -> None:
    r, _ = responder()
    request = encode_frame(1, 3, bytes.fromhex("0000 0002"))
    assert r.respond(request[:5]) is None
    consumed, reply = r.respond(request + b"\x01") or (0, None)
    assert consumed == 8 and reply is not None and reply[:3] == bytes([1, 3, 4])
    bad = request[:-1] + bytes([request[-1] ^ 0xFF])
    assert r.respond(bad) == (8, None)  # bad CRC: consumed in silence
    assert r.respond(bytes([1, 0x41, 0, 0])) == (1, None)  # unknown function: hunt on


def test_responder_broadcast_write_switches_every_meter_without_a_reply() -> None:
    r, meters = responder()
    trip = encode_frame(0, 6, bytes.fromhex("0210 0001"))
    assert r.respond(trip) == (8, None)
    assert [m.supply_on() for m in meters] == [False, False]


def test_responder_function_16_length_and_recharge() -> None:
    r, meters = responder()
    meters[0].meter_prepaid = True
    payload = bytes.fromhex("0220 0003 06") + bytes.fromhex("0000 03E8 0001")
    frame = encode_frame(1, 16, payload)
    assert r.respond(frame[:-1]) is None
    consumed, reply = r.respond(frame) or (0, None)
    assert consumed == 9 + 6 == len(frame)
    assert reply == encode_frame(1, 16, payload[:4])
    assert meters[0].balance == Decimal("10.00")
