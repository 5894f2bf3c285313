"""CJ/T 188 valve water meters end to end: the shipped profile, read and controlled by the
gateway's driver through the simulator, over a pseudo-terminal pair (a real serial path,
paced at 9600 baud; parity N because even parity cannot be set on a pty) and over TCP (a
serial-to-Ethernet converter). The simulated meters run on a manual clock, so a test decides
exactly how much water flows between two reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

import pytest

from gateway_agent.config import DeviceConfig
from gateway_agent.drivers import DecodeFailure, DeviceException, DeviceTimeout, Unsupported
from gateway_agent.drivers.cjt188 import Cjt188Driver, convert_flow
from gateway_agent.drivers.link import Link, SerialSettings
from meter_profiles.decode import supply_on
from meter_profiles.loader import load_profiles
from meter_profiles.schema import Cjt188Profile, CjtQuantity
from meter_profiles.simulators.cjt188 import Cjt188Responder
from meter_profiles.simulators.line import Faults, LineServer, LineTiming
from meter_profiles.simulators.meter import SimulatedMeter

PROFILE = load_profiles()["cjt188-valve-water"]
assert isinstance(PROFILE, Cjt188Profile)
CENT = Decimal("0.01")
METER_1 = "00000012345678"
METER_2 = "00000087654321"
SIM_HOUR = 1.0  # with speed 3600, one manual-clock second is one simulated hour


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def hours(self, n: float) -> None:
        self.now += n * SIM_HOUR


@dataclass
class Bus:
    driver: Cjt188Driver
    server: LineServer
    faults: Faults
    meters: dict[str, SimulatedMeter]
    clock: ManualClock

    def device(self, address: str, key: str = "w1") -> DeviceConfig:
        return DeviceConfig(key=key, profile=PROFILE.model, address=address)


Start = Callable[..., Awaitable[Bus]]


@pytest.fixture(params=["pty", "tcp"])
async def start(request: pytest.FixtureRequest) -> AsyncIterator[Start]:
    """Start a simulated bus of meters (address → start total, or a SimulatedMeter's
    profile override) and a driver on it, over the transport of the test's parameter."""
    running: list[tuple[LineServer, Cjt188Driver]] = []

    async def _start(
        totals: dict[str, float], sim_profile: Cjt188Profile = PROFILE, timeout_s: float = 0.5
    ) -> Bus:
        clock = ManualClock()
        meters = {
            address: SimulatedMeter(
                sim_profile, i + 1, address=address, start_total=total, speed=3600, clock=clock
            )
            for i, (address, total) in enumerate(totals.items())
        }
        faults = Faults()
        responder = Cjt188Responder(list(meters.values()), faults)
        if request.param == "pty":
            server = LineServer(responder, LineTiming(9600, bits_per_char=10, reply_delay_s=0.002))
            path = await server.start_pty()
            link = Link.serial(SerialSettings(path, baudrate=9600, parity="N"))
        else:
            server = LineServer(responder, LineTiming(reply_delay_s=0.002))
            port = await server.start_tcp()
            link = Link.tcp("127.0.0.1", port)
        driver = Cjt188Driver(link, timeout_s)
        running.append((server, driver))
        return Bus(driver, server, faults, meters, clock)

    yield _start
    for server, driver in running:
        await driver.close()
        await server.stop()


def expected_total(meter: SimulatedMeter) -> Decimal:
    """What the meter's register shows: its total truncated to the profile's 0.01 m³."""
    return meter.values(1)["total_volume"].quantize(CENT, rounding=ROUND_DOWN)


async def test_read_gives_the_simulated_meters_volume_and_status(start: Start) -> None:
    bus = await start({METER_1: 123.456789})
    meter = bus.meters[METER_1]
    values = await bus.driver.read(bus.device(METER_1), PROFILE)
    assert values[("total_volume", 1)] == Decimal("123.45") == expected_total(meter)
    assert values[("settlement_volume", 1)] == Decimal("123.45")
    assert values[("status_word", 1)] == 0
    assert values[("valve_state", 1)] == 0
    assert values[("battery_low", 1)] == 0
    assert supply_on(PROFILE, values, 1) is True

    bus.clock.hours(2)  # two simulated daytime hours of water
    values = await bus.driver.read(bus.device(METER_1), PROFILE)
    assert values[("total_volume", 1)] == expected_total(meter)
    assert values[("total_volume", 1)] > Decimal("123.50")


async def test_valve_close_stops_consumption_and_open_resumes_it(start: Start) -> None:
    bus = await start({METER_1: 10.0})
    device = bus.device(METER_1)
    meter = bus.meters[METER_1]
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    bus.clock.hours(1)

    answer = await bus.driver.control(device, PROFILE, "valve_close", 1, deadline)
    assert answer["valve"] == "closed"
    assert answer["status_word"] == "0x0001"
    assert answer["battery_low"] == "false"
    assert meter.controls[-1] == ("valve_close", 1)
    closed = await bus.driver.read(device, PROFILE)
    assert closed[("valve_state", 1)] == 1
    assert closed[("status_word", 1)] == 1
    assert supply_on(PROFILE, closed, 1) is False
    assert closed[("total_volume", 1)] > Decimal("10.00")

    bus.clock.hours(3)
    still = await bus.driver.read(device, PROFILE)
    assert still[("total_volume", 1)] == closed[("total_volume", 1)]

    answer = await bus.driver.control(device, PROFILE, "valve_open", 1, deadline)
    assert answer["valve"] == "open"
    bus.clock.hours(1)
    opened = await bus.driver.read(device, PROFILE)
    assert supply_on(PROFILE, opened, 1) is True
    assert opened[("total_volume", 1)] > closed[("total_volume", 1)]
    assert opened[("total_volume", 1)] == expected_total(meter)


async def test_two_meters_on_one_bus_are_addressed_separately(start: Start) -> None:
    bus = await start({METER_1: 5.0, METER_2: 700.0})
    one, two = bus.device(METER_1, "w1"), bus.device(METER_2, "w2")
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    await bus.driver.control(two, PROFILE, "valve_close", 1, deadline)
    bus.clock.hours(1)
    first = await bus.driver.read(one, PROFILE)
    second = await bus.driver.read(two, PROFILE)
    assert first[("total_volume", 1)] == expected_total(bus.meters[METER_1])
    assert second[("total_volume", 1)] == Decimal("700.00")
    assert first[("valve_state", 1)] == 0
    assert second[("valve_state", 1)] == 1
    assert bus.meters[METER_1].controls == []


async def test_read_address_with_the_wildcard(start: Start) -> None:
    bus = await start({METER_2: 1.0})
    assert await bus.driver.read_address() == (0x10, METER_2)


async def test_read_address_with_two_meters_is_a_collision(start: Start) -> None:
    bus = await start({METER_1: 1.0, METER_2: 1.0})
    with pytest.raises(DecodeFailure):
        await bus.driver.read_address()


async def test_litres_reported_by_the_meter_are_read_as_cubic_metres(start: Start) -> None:
    litre_quantities = {
        "total_volume": CjtQuantity(field="current_flow", unit="L"),
        "settlement_volume": CjtQuantity(field="settlement_flow", unit="L"),
    }
    litres = PROFILE.model_copy(update={"model": "cjt188-litres", "quantities": litre_quantities})
    bus = await start({METER_1: 1.23456}, sim_profile=litres)
    values = await bus.driver.read(bus.device(METER_1), PROFILE)
    # the meter sends 1234.56 L (unit code 29); the profile keeps m³: exact, no float
    assert values[("total_volume", 1)] == Decimal("1.23456")
    assert values[("settlement_volume", 1)] == Decimal("1.23456")


def test_unknown_or_foreign_unit_codes_are_decode_failures() -> None:
    assert convert_flow(Decimal("1234.56"), 0x29, "m³") == Decimal("1.23456")
    assert convert_flow(Decimal("1.5"), 0x2C, "L") == Decimal("1500")
    assert convert_flow(Decimal("1.5"), 0x2C, "m³") == Decimal("1.5")
    with pytest.raises(DecodeFailure, match="unknown unit code 99"):
        convert_flow(Decimal(1), 0x99, "m³")
    with pytest.raises(DecodeFailure, match="kWh"):
        convert_flow(Decimal(1), 0x05, "m³")


async def test_a_silent_meter_times_out(start: Start) -> None:
    bus = await start({METER_1: 1.0}, timeout_s=0.2)
    bus.faults.silent.add(METER_1)
    with pytest.raises(DeviceTimeout):
        await bus.driver.read(bus.device(METER_1), PROFILE)


async def test_a_corrupted_reply_is_a_decode_failure(start: Start) -> None:
    bus = await start({METER_1: 1.0})
    bus.faults.corrupt.add(METER_1)
    with pytest.raises(DecodeFailure, match="checksum"):
        await bus.driver.read(bus.device(METER_1), PROFILE)
    bus.faults.clear()
    values = await bus.driver.read(bus.device(METER_1), PROFILE)
    assert values[("total_volume", 1)] == Decimal("1.00")


async def test_an_error_reply_is_a_device_exception_with_its_status(start: Start) -> None:
    bus = await start({METER_1: 1.0})
    bus.faults.exception[METER_1] = 0x0041  # valve closed (01) + a maker's fault bit
    with pytest.raises(DeviceException) as caught:
        await bus.driver.read(bus.device(METER_1), PROFILE)
    assert caught.value.code == 0x0041
    assert caught.value.answer["valve"] == "closed"
    assert caught.value.answer["status_word"] == "0x0041"
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    with pytest.raises(DeviceException) as caught:
        await bus.driver.control(bus.device(METER_1), PROFILE, "valve_close", 1, deadline)
    assert caught.value.code == 0x0041


async def test_garbage_is_a_decode_failure_and_the_bus_keeps_working(start: Start) -> None:
    bus = await start({METER_1: 1.0, METER_2: 2.0})
    bus.faults.garbage.add(METER_1)
    with pytest.raises(DecodeFailure):
        await bus.driver.read(bus.device(METER_1), PROFILE)
    other = await bus.driver.read(bus.device(METER_2, "w2"), PROFILE)
    assert other[("total_volume", 1)] == Decimal("2.00")
    bus.faults.clear()
    again = await bus.driver.read(bus.device(METER_1), PROFILE)
    assert again[("total_volume", 1)] == Decimal("1.00")


async def test_recharge_time_sync_and_foreign_controls_send_nothing(start: Start) -> None:
    bus = await start({METER_1: 1.0})
    device = bus.device(METER_1)
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    with pytest.raises(Unsupported):
        await bus.driver.recharge(device, PROFILE, Decimal("10.00"), 1)
    with pytest.raises(Unsupported):
        await bus.driver.time_sync(datetime.now(UTC))
    with pytest.raises(Unsupported):
        await bus.driver.control(device, PROFILE, "trip", 1, deadline)
    assert bus.server.stats.requests == 0
    assert bus.meters[METER_1].controls == []


async def test_di_byte_order_is_a_profile_setting(start: Start) -> None:
    low_first = PROFILE.model_copy(update={"model": "cjt188-low-first", "di_low_first": True})
    bus = await start({METER_1: 3.0}, sim_profile=low_first)
    values = await bus.driver.read(bus.device(METER_1), low_first)
    assert values[("total_volume", 1)] == Decimal("3.00")
    # asked with the DI as written (90 1F), this meter reads DI 1F 90: unknown, error reply
    with pytest.raises(DeviceException) as caught:
        await bus.driver.read(bus.device(METER_1), PROFILE)
    assert caught.value.code & 0x8000
