"""DL/T 645 end to end: the gateway's driver talking to simulated meters over a real byte
line — a pseudo-terminal pair opened as a serial port, and a TCP socket as a
serial-to-Ethernet converter would offer. Every shipped DL/T 645 profile is read and (where
it has controls) controlled and recharged; faults injected on the simulated line must come
back as the right driver error.

Parity: even parity cannot be set on a pty here, so the pty runs use N (PROTOCOLS.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from contract.mqtt import Reading, Supply
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
from gateway_agent.drivers import DecodeFailure, DeviceException, DeviceTimeout, Unsupported
from gateway_agent.drivers.dlt645 import Dlt645Driver
from gateway_agent.drivers.factory import make_driver
from gateway_agent.drivers.link import Link, SerialSettings
from gateway_agent.outbox import READING
from gateway_agent.protocols import dlt645 as dlt
from meter_profiles.decode import supply_on
from meter_profiles.loader import load_profiles
from meter_profiles.schema import Dlt645Profile
from meter_profiles.simulators.bus import SimBus, start_bus
from meter_profiles.simulators.dlt645 import Dlt645Responder, expected_value
from meter_profiles.simulators.line import Faults, LineServer, LineTiming
from meter_profiles.simulators.meter import SimulatedMeter

PROFILES = {k: p for k, p in load_profiles().items() if isinstance(p, Dlt645Profile)}
EDITION_2007 = sorted(k for k, p in PROFILES.items() if p.edition == "2007")
PREPAID = sorted(k for k, p in PROFILES.items() if p.meter_prepaid)
TRANSPORTS = ("pty", "tcp")

ADDRESS_A = "000000000161"
ADDRESS_B = "000000000272"


class FakeClock:
    """Simulated meters read this clock: it moves only when a test moves it, so a value
    read over the wire can be compared with the meter's own value."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Bus:
    driver: Dlt645Driver
    server: LineServer
    responder: Dlt645Responder
    meters: dict[str, SimulatedMeter]
    clock: FakeClock

    @property
    def faults(self) -> Faults:
        return self.responder.faults

    def device(self, address: str, **overrides: object) -> DeviceConfig:
        meter = self.meters[address]
        return DeviceConfig.model_validate(
            {"key": f"m{address}", "profile": meter.profile.model, "address": address, **overrides}
        )

    def run_load(self, seconds: float) -> None:
        """Let simulated time pass so the meters draw power and count energy."""
        self.clock.t += seconds
        for m in self.meters.values():
            m.advance()


@asynccontextmanager
async def dlt_bus(
    transport: str,
    meters: list[tuple[str, str]],
    *,
    timeout_s: float = 1.0,
    timing: LineTiming | None = None,
    balance: Decimal = Decimal("100.00"),
    refused_retry_s: float = 3600.0,
    **responder_kw: object,
) -> AsyncIterator[Bus]:
    """A bus with one simulated meter per (profile, address), served over ``transport``."""
    clock = FakeClock()
    sims = [
        SimulatedMeter(PROFILES[profile], 1, address=address, balance=balance, clock=clock)
        for profile, address in meters
    ]
    responder = Dlt645Responder(sims, Faults(), **responder_kw)  # type: ignore[arg-type]
    server = LineServer(responder, timing)
    if transport == "pty":
        path = await server.start_pty()
        baud = PROFILES[meters[0][0]].serial.baudrate if meters else 9600
        link = Link.serial(SerialSettings(port=path, baudrate=baud, parity="N"))
    else:
        port = await server.start_tcp()
        link = Link.tcp("127.0.0.1", port)
    driver = Dlt645Driver(link, timeout_s, refused_retry_s=refused_retry_s)
    bus = Bus(driver, server, responder, {m.address: m for m in sims}, clock)
    bus.run_load(1800)
    try:
        yield bus
    finally:
        await driver.close()
        await server.stop()


def deadline() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=5)


async def wait_for(check: Callable[[], bool], timeout_s: float = 2.0) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.01)


# -- reads -------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("model", sorted(PROFILES))
async def test_reads_every_quantity_to_the_profiles_resolution(transport: str, model: str) -> None:
    profile = PROFILES[model]
    async with dlt_bus(transport, [(model, ADDRESS_A)]) as bus:
        meter = bus.meters[ADDRESS_A]
        values = await bus.driver.read(bus.device(ADDRESS_A), profile)
        truth = meter.values(1)
        requests = bus.server.stats.requests

    assert set(values) == {(name, 1) for name in profile.quantities}
    assert requests == len(profile.reads()), "one request per data identifier"
    for name, q in profile.quantities.items():
        got, want = values[(name, 1)], truth.get(name, Decimal(0))
        if q.kind == "bits":
            assert got == want, name
            continue
        step = Decimal(1).scaleb(-q.decimals)
        assert got == got.quantize(step), f"{name}: {got} has more than {q.decimals} decimals"
        assert Decimal(0) <= want - got < step, f"{name}: read {got}, meter holds {want}"
    # the values are live, not zeros that would match anything
    assert values[("total_energy", 1)] > 0
    assert values[("power", 1)] > 0
    volts = values.get(("voltage", 1), values.get(("voltage_a", 1)))
    assert volts is not None and volts > 200
    if profile.meter_prepaid:
        assert values[("remaining_amount", 1)] == meter.balance > 0
    if profile.supply is not None:
        assert int(values[(profile.supply.quantity, 1)]) & profile.supply.mask == 0  # on


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_block_read_spread_over_follow_up_frames(transport: str) -> None:
    """A reply longer than the meter's frame size comes in follow-up frames (flag 0x20)."""
    profile = PROFILES["dlt645-2007-prepaid"]
    async with dlt_bus(transport, [(profile.model, ADDRESS_A)], max_data=12) as bus:
        values = await bus.driver.read(bus.device(ADDRESS_A), profile)
        truth = bus.meters[ADDRESS_A].values(1)
        requests = bus.server.stats.requests
    # 0001FF00 carries 5 × 4 bytes: 8 per frame → a first frame and two follow-ups
    assert requests == len(profile.reads()) + 2
    for name in ("total_energy", "tou_spike", "tou_peak", "tou_flat", "tou_valley"):
        assert Decimal(0) <= truth[name] - values[(name, 1)] < Decimal("0.01"), name


async def test_paced_serial_line_at_9600_baud() -> None:
    """Bytes paced as on the wire (9600 baud, 11-bit characters, 5 ms reply delay)."""
    profile = PROFILES["acrel-ddsy1352-dlt645"]
    timing = LineTiming(9600, 11, 0.005)
    async with dlt_bus("pty", [(profile.model, ADDRESS_A)], timing=timing) as bus:
        started = time.monotonic()
        values = await bus.driver.read(bus.device(ADDRESS_A), profile)
        elapsed = time.monotonic() - started
        stats = bus.server.stats
    assert values[("total_energy", 1)] > 0
    wire_s = (stats.bytes_in + stats.bytes_out) * 11 / 9600 + stats.requests * 0.005
    assert elapsed >= wire_s * 0.9, "pacing must make the read take at least the wire time"


# -- remote control ----------------------------------------------------------------------------


async def _supply_bit(bus: Bus, profile: Dlt645Profile) -> bool:
    """True when the meter reports supply on (read over the wire)."""
    assert profile.supply is not None
    values = await bus.driver.read(bus.device(ADDRESS_A), profile)
    raw = int(values[(profile.supply.quantity, 1)])
    return raw & profile.supply.mask == profile.supply.on_value


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("model", EDITION_2007)
async def test_trip_close_and_keep_power(transport: str, model: str) -> None:
    profile = PROFILES[model]
    async with dlt_bus(transport, [(model, ADDRESS_A)]) as bus:
        meter, dev, drv = bus.meters[ADDRESS_A], bus.device(ADDRESS_A), bus.driver
        when = deadline()

        answer = await drv.control(dev, profile, "trip", 1, when)
        assert answer == {
            "command": "trip",
            "n1": "1A",
            "deadline": when.astimezone(dlt.CHINA_STANDARD_TIME).isoformat(),
        }
        assert not meter.supply_on()
        assert not await _supply_bit(bus, profile)
        bus.run_load(600)
        assert meter.values(1)["power"] == 0, "a tripped relay stops consumption"

        answer = await drv.control(dev, profile, "close_allowed", 1, when)
        assert answer["n1"] == "1B"
        assert meter.supply_on() and await _supply_bit(bus, profile)

        await drv.control(dev, profile, "keep_power_on", 1, when)
        with pytest.raises(DeviceException) as refused:
            await drv.control(dev, profile, "trip", 1, when)
        assert refused.value.code == 0x04
        assert refused.value.answer == {
            "error_code": "0x04",
            "errors": "wrong_password_or_unauthorised",
        }
        assert meter.supply_on() and await _supply_bit(bus, profile)

        # keep-power received while tripped restores supply
        await drv.control(dev, profile, "keep_power_off", 1, when)
        await drv.control(dev, profile, "trip", 1, when)
        assert not meter.supply_on()
        await drv.control(dev, profile, "keep_power_on", 1, when)
        assert meter.supply_on()
        await drv.control(dev, profile, "keep_power_off", 1, when)
        assert meter.supply_on(), "releasing keep-power leaves the relay alone"

        assert (await drv.control(dev, profile, "alarm", 1, when))["n1"] == "2A"
        assert (await drv.control(dev, profile, "alarm_release", 1, when))["n1"] == "2B"
        if "close" in profile.controls:
            await drv.control(dev, profile, "trip", 1, when)
            assert (await drv.control(dev, profile, "close", 1, when))["n1"] == "1C"
            assert meter.supply_on()
        commands = [a for a, _ in meter.controls]
    assert commands[:3] == ["trip", "close_allowed", "keep_power"]
    assert "alarm" in commands and "alarm_release" in commands


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_control_credentials_and_deadline(transport: str) -> None:
    profile = PROFILES["dlt645-2007-prepaid"]
    async with dlt_bus(
        transport, [(profile.model, ADDRESS_A)], passwords={ADDRESS_A: "123456"}
    ) as bus:
        meter, drv = bus.meters[ADDRESS_A], bus.driver
        # the profile's default password is not this meter's: refused, b2
        with pytest.raises(DeviceException) as wrong:
            await drv.control(bus.device(ADDRESS_A), profile, "trip", 1, deadline())
        assert wrong.value.code == 0x04
        assert meter.supply_on() and meter.controls == []
        # the device's own password (config override) is accepted
        dev = bus.device(ADDRESS_A, password="123456")
        await drv.control(dev, profile, "trip", 1, deadline())
        assert not meter.supply_on()
        # an expired validity deadline is refused (b0 "other") and not carried out
        past = datetime.now(UTC) - timedelta(minutes=1)
        with pytest.raises(DeviceException) as expired:
            await drv.control(dev, profile, "close_allowed", 1, past)
        assert expired.value.code == 0x01
        assert expired.value.answer["errors"] == "other"
        assert not meter.supply_on()
        with pytest.raises(Unsupported):
            await drv.control(dev, profile, "valve_open", 1, deadline())


# -- recharge ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("model", PREPAID)
async def test_recharge_raises_the_balance_exactly_once(transport: str, model: str) -> None:
    profile = PROFILES[model]
    async with dlt_bus(transport, [(model, ADDRESS_A)]) as bus:
        meter, dev, drv = bus.meters[ADDRESS_A], bus.device(ADDRESS_A), bus.driver
        before = meter.balance
        count = meter.purchase_count + 1
        answer = await drv.recharge(dev, profile, Decimal("50.25"), count)
        assert answer == {
            "di": "070102FF",
            "amount": "50.25",
            "purchase_count": str(count),
        }
        assert meter.balance == before + Decimal("50.25")
        with pytest.raises(DeviceException) as again:
            await drv.recharge(dev, profile, Decimal("50.25"), count)
        assert again.value.code == 0x01
        assert meter.balance == before + Decimal("50.25")
        assert meter.purchases == [(count, Decimal("50.25"))]
        values = await drv.read(dev, profile)
    assert values[("remaining_amount", 1)] == before + Decimal("50.25")
    assert values[("purchase_count", 1)] == count


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_recharge_brings_an_empty_meter_back(transport: str) -> None:
    """A meter-prepaid meter at zero trips itself and refuses close; a recharge lets it
    close again."""
    profile = PROFILES["acrel-ddsy1352-dlt645"]
    async with dlt_bus(transport, [(profile.model, ADDRESS_A)], balance=Decimal("0.50")) as bus:
        meter, dev, drv = bus.meters[ADDRESS_A], bus.device(ADDRESS_A), bus.driver
        bus.run_load(3 * 3600)
        assert not meter.supply_on()
        with pytest.raises(DeviceException):
            await drv.control(dev, profile, "close_allowed", 1, deadline())
        await drv.recharge(dev, profile, Decimal("20.00"), 1)
        await drv.control(dev, profile, "close_allowed", 1, deadline())
        assert meter.supply_on()


# -- broadcast time sync and read address ------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_broadcast_time_sync_sets_every_clock(transport: str) -> None:
    model = "acrel-ddsy1352-dlt645"
    async with dlt_bus(transport, [(model, ADDRESS_A), (model, ADDRESS_B)]) as bus:
        for m in bus.meters.values():
            m.set_time(-3600.0)
        now = datetime.now(UTC)
        answer = await bus.driver.time_sync(now)
        assert answer == {"broadcast": now.astimezone(dlt.CHINA_STANDARD_TIME).isoformat()}
        await wait_for(lambda: all(m.clock_offset_s != -3600.0 for m in bus.meters.values()))
        assert all(abs(m.clock_offset_s) < 2 for m in bus.meters.values())
        assert bus.server.stats.replies == 0, "meters do not answer a broadcast"
        values = await bus.driver.read(bus.device(ADDRESS_B), PROFILES[model])
    assert values[("total_energy", 1)] > 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_read_address_with_the_wildcard(transport: str) -> None:
    model = "acrel-dtsy1352-dlt645"
    async with dlt_bus(transport, [(model, ADDRESS_B)]) as bus:
        assert await bus.driver.read_address() == ADDRESS_B
    async with dlt_bus(transport, [], timeout_s=0.3) as bus:
        with pytest.raises(DeviceTimeout):
            await bus.driver.read_address()
    async with dlt_bus(transport, [(model, ADDRESS_A), (model, ADDRESS_B)], timeout_s=0.3) as bus:
        with pytest.raises(DecodeFailure):
            await bus.driver.read_address()


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_faults_map_to_distinct_driver_errors(transport: str) -> None:
    model = "acrel-ddsy1352-dlt645"
    profile = PROFILES[model]
    async with dlt_bus(transport, [(model, ADDRESS_A), (model, ADDRESS_B)], timeout_s=0.3) as bus:
        drv, a, b = bus.driver, bus.device(ADDRESS_A), bus.device(ADDRESS_B)

        bus.faults.silent.add(ADDRESS_A)
        with pytest.raises(DeviceTimeout):
            await drv.read(a, profile)
        bus.faults.clear()

        bus.faults.corrupt.add(ADDRESS_A)
        with pytest.raises(DecodeFailure, match="checksum"):
            await drv.read(a, profile)
        bus.faults.clear()

        bus.faults.exception[ADDRESS_A] = 0x02
        with pytest.raises(DeviceException) as refused:
            await drv.read(a, profile)
        assert refused.value.code == 0x02
        assert refused.value.answer == {"error_code": "0x02", "errors": "no_such_data"}
        with pytest.raises(DeviceException):
            await drv.control(a, profile, "trip", 1, deadline())
        assert bus.meters[ADDRESS_A].supply_on(), "a refused control is not carried out"
        bus.faults.clear()

        bus.faults.garbage.add(ADDRESS_A)
        with pytest.raises(DecodeFailure, match="garbage"):
            await drv.read(a, profile)
        # the bus carries on: the next meter answers, and so does A once it recovers
        assert (await drv.read(b, profile))[("total_energy", 1)] > 0
        bus.faults.clear()
        assert (await drv.read(a, profile))[("total_energy", 1)] > 0


# -- partial reads: a refused identifier costs only its quantities -----------------------------

TARIFFS = {"tou_spike", "tou_peak", "tou_flat", "tou_valley"}


def _with_hoarding_limit(model: str) -> Dlt645Profile:
    """``model`` plus a DI the simulated meter does not have (04001004)."""
    base = PROFILES[model]
    extra = base.quantities["remaining_amount"].model_copy(update={"di": 0x04001004})
    return base.model_copy(update={"quantities": {**base.quantities, "hoarding_limit": extra}})


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_unknown_identifier_costs_only_its_quantity(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A DI the meter does not have (error reply b1 "no such data"): the rest of the reading
    is read, the refusal is logged once and counted, and the DI is asked again only after
    the retry interval."""
    model = "acrel-ddsy1352-dlt645"
    extra = _with_hoarding_limit(model)
    dis = len(extra.reads())
    async with dlt_bus(transport, [(model, ADDRESS_A)], refused_retry_s=0.4) as bus:
        drv, dev = bus.driver, bus.device(ADDRESS_A)
        stats = bus.server.stats

        values = await drv.read(dev, extra)
        assert set(values) == {(name, 1) for name in PROFILES[model].quantities}
        assert stats.requests == dis
        assert drv.refusals.take() == 1 and drv.refusals.skipping() == 1

        again = await drv.read(dev, extra)
        assert set(again) == set(values)
        assert stats.requests == 2 * dis - 1, "the refused DI is not asked again at once"
        assert drv.refusals.take() == 0

        await asyncio.sleep(0.45)
        await drv.read(dev, extra)
        assert stats.requests == 3 * dis - 1, "asked again after the retry interval"
        assert drv.refusals.take() == 1
    logged = [r for r in caplog.records if "04001004" in r.getMessage()]
    assert len(logged) == 1, "logged once per device and identifier"
    assert "hoarding_limit" in logged[0].getMessage()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("model", EDITION_2007)
async def test_a_meter_refusing_block_and_tariff_identifiers(transport: str, model: str) -> None:
    """Acceptance (issue 22): a meter that refuses block identifiers (0001FF00) and tariff
    identifiers (00010100…): every profile still reads every quantity the meter answers; a
    refused block falls back to its single identifiers; the next read asks only what the
    meter answers."""
    profile = PROFILES[model]
    answered = set(profile.quantities) - TARIFFS
    async with dlt_bus(transport, [(model, ADDRESS_A)]) as bus:
        bus.faults.strict.add(ADDRESS_A)
        drv, dev, meter = bus.driver, bus.device(ADDRESS_A), bus.meters[ADDRESS_A]
        values = await drv.read(dev, profile)
        truth = meter.values(1)
        first = bus.server.stats.requests
        again = await drv.read(dev, profile)
        second = bus.server.stats.requests - first

    assert set(values) == {(name, 1) for name in answered}
    for name in answered:
        assert values[(name, 1)] == expected_value(profile.quantities[name], truth[name]), name
    assert values[("total_energy", 1)] > 0
    assert set(again) == set(values)
    blocks = [di for di in profile.reads() if dlt.is_block_di(di)]
    refused = len(blocks) + len(TARIFFS & set(profile.quantities))
    assert drv.refusals.take() == refused
    assert first == len(profile.reads()) + sum(len(profile.reads()[di]) for di in blocks)
    assert second == len(answered), "one request per answered quantity, none refused"


async def test_the_heartbeat_counts_refusals_and_the_readings_carry_the_rest(
    tmp_path: Path,
) -> None:
    """Both kinds of DL/T 645-2007 profile (block and single energy identifiers) on one bus
    of meters that refuse block and tariff identifiers, polled by the agent: every reading
    carries what the meters answer, no device backs off, and the heartbeat counts the
    refusals."""
    models = ("dlt645-2007-prepaid", "acrel-ddsy1352-dlt645")
    clock = FakeClock()
    sims = [
        SimulatedMeter(PROFILES[m], 1, address=a, balance=Decimal(50), clock=clock)
        for m, a in zip(models, (ADDRESS_A, ADDRESS_B), strict=True)
    ]
    clock.t += 600
    responder = Dlt645Responder(sims, Faults(strict={ADDRESS_A, ADDRESS_B}))
    server = LineServer(responder)
    port = await server.start_tcp()
    devices = [
        DeviceConfig(key=f"m{s.address}", profile=s.profile.model, address=s.address) for s in sims
    ]
    cfg = AgentConfig(
        gateway="gw-dlt",
        data_dir=tmp_path,
        poll_interval_s=0.2,
        buses=[BusConfig(name="dlt", transport="tcp", port=port, timeout_s=0.5, devices=devices)],
    )
    agent = Agent(cfg, load_profiles())
    task = asyncio.create_task(agent.buses[0].run())
    try:
        await asyncio.sleep(1.0)
        heartbeat = agent.heartbeat()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
    readings = [Reading.model_validate_json(body) for _, body in agent.outbox.peek(READING, 1000)]
    agent.outbox.close()
    stats = heartbeat.buses["dlt"]
    # the block profile: 0001FF00 and its four tariff members; the other: four tariffs
    assert stats.refused == 9 and stats.refused_items == 9
    assert stats.devices_backing_off == 0 and stats.errors == 0
    for dev in devices:
        mine = [r for r in readings if r.device == dev.key]
        assert len(mine) >= 3, dev.key
        for r in mine:
            assert r.total is not None and r.total > 0
            assert r.meter_balance is not None and r.voltage is not None
            assert r.supply is Supply.ON and r.purchase_count == 0
            assert r.tou is None  # refused by the meter


class Lying(Dlt645Responder):
    """A meter whose replies carry another address or another DI than asked."""

    def __init__(self, *args: object, lie: str, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.lie = lie

    def respond(self, buffer: bytes) -> tuple[int, bytes | None] | None:
        result = super().respond(buffer)
        if result is None or result[1] is None:
            return result
        frame = dlt.decode_frame(result[1]).frame
        if self.lie == "address":
            frame = dlt.Frame(ADDRESS_B, frame.control, frame.data)
        else:
            frame = dlt.Frame(
                frame.address, frame.control, dlt.encode_di(0x00010000) + frame.data[4:]
            )
        return result[0], dlt.encode_frame(frame)


@pytest.mark.parametrize("lie", ["address", "di"])
async def test_a_reply_that_answers_something_else_is_a_decode_failure(lie: str) -> None:
    profile = PROFILES["acrel-ddsy1352-dlt645"]
    clock = FakeClock()
    meter = SimulatedMeter(profile, 1, address=ADDRESS_A, clock=clock, balance=Decimal(5))
    server = LineServer(Lying([meter], lie=lie))
    port = await server.start_tcp()
    driver = Dlt645Driver(Link.tcp("127.0.0.1", port), 0.5)
    dev = DeviceConfig(key="a", profile=profile.model, address=ADDRESS_A)
    try:
        with pytest.raises(DecodeFailure, match="address" if lie == "address" else "DI"):
            await driver.read(dev, profile)
    finally:
        await driver.close()
        await server.stop()


# -- DL/T 645-1997 -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_1997_meter_reads_and_has_no_controls(transport: str) -> None:
    profile = PROFILES["dlt645-1997-meter"]
    async with dlt_bus(transport, [(profile.model, ADDRESS_A)], timeout_s=0.3) as bus:
        meter, dev = bus.meters[ADDRESS_A], bus.device(ADDRESS_A)
        values = await bus.driver.read(dev, profile)
        assert (
            Decimal(0)
            <= meter.values(1)["total_energy"] - values[("total_energy", 1)]
            < (Decimal("0.01"))
        )
        with pytest.raises(Unsupported):
            await bus.driver.control(dev, profile, "trip", 1, deadline())
        with pytest.raises(Unsupported):
            await bus.driver.recharge(dev, profile, Decimal(1), 1)
        # a 1997 meter does not understand the 2007 read-address request: silence
        with pytest.raises(DeviceTimeout):
            await bus.driver.read_address()


# -- the agent's path: bus config → factory → driver -------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_agent_bus_config_builds_a_working_driver(transport: str) -> None:
    """The driver the agent builds from its bus config (make_driver) reads and trips a
    meter, and the agent's supply rule sees the relay open."""
    profile = PROFILES["acrel-dtsy1352-dlt645"]
    clock = FakeClock()
    meter = SimulatedMeter(profile, 1, address=ADDRESS_A, clock=clock, balance=Decimal(80))
    server = LineServer(Dlt645Responder([meter]))
    device = {"key": "shop-1", "profile": profile.model, "address": ADDRESS_A}
    if transport == "pty":
        path = await server.start_pty()
        where: dict[str, object] = {"transport": "serial", "serial": {"port": path, "parity": "N"}}
    else:
        where = {"transport": "tcp", "port": await server.start_tcp()}
    bus = BusConfig.model_validate({"name": "dlt", "timeout_s": 0.5, "devices": [device], **where})
    driver = make_driver(bus, PROFILES)  # type: ignore[arg-type]
    dev = bus.devices[0]
    try:
        clock.t += 900
        meter.advance()
        assert supply_on(profile, await driver.read(dev, profile), 1) is True
        await driver.control(dev, profile, "trip", 1, deadline())
        assert supply_on(profile, await driver.read(dev, profile), 1) is False
    finally:
        await driver.close()
        await server.stop()


async def test_a_sim_config_meter_can_be_strict() -> None:
    """``strict: true`` in a `prepay-gateway sim` file makes that meter refuse block and
    tariff identifiers; its neighbour answers them."""
    bus = SimBus.model_validate(
        {
            "transport": "tcp",
            "meters": [
                {"profile": "dlt645-2007-prepaid", "address": ADDRESS_A, "strict": True},
                {"profile": "dlt645-2007-prepaid", "address": ADDRESS_B},
            ],
        }
    )
    running = await start_bus(bus, load_profiles())
    port = int(running.where.rsplit(":", 1)[1])
    driver = Dlt645Driver(Link.tcp("127.0.0.1", port), 0.5)
    profile = PROFILES["dlt645-2007-prepaid"]
    try:
        a = await driver.read(
            DeviceConfig(key="a", profile=profile.model, address=ADDRESS_A), profile
        )
        b = await driver.read(
            DeviceConfig(key="b", profile=profile.model, address=ADDRESS_B), profile
        )
    finally:
        await driver.close()
        await running.stop()
    assert running.faults.strict == {ADDRESS_A}
    assert {n for n, _ in b} - {n for n, _ in a} == TARIFFS
