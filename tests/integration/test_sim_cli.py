"""`prepay-gateway sim` serves a config file's buses; the real drivers read them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

from gateway_agent.config import BusConfig, DeviceConfig, SerialPortConfig
from gateway_agent.drivers.factory import make_driver
from meter_profiles.loader import load_profiles

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "meter_profiles/simulators/examples/mixed-buses.yaml"
)


async def test_sim_serves_every_bus_of_the_example(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "prepay-gateway"),
        "sim",
        "--config",
        str(EXAMPLE),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    where: dict[str, str] = {}
    try:
        while len(where) < 3:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "sim exited early"
            m = re.match(r"simulated bus (\S+): \S+ over \S+ at (\S+),", line)
            if m:
                where[m[1]] = m[2]
        profiles = load_profiles()
        host, port = where["shops-modbus"].rsplit(":", 1)
        modbus = BusConfig(
            name="a",
            transport="modbus_tcp",
            host=host,
            port=int(port),
            devices=[DeviceConfig(key="s1", profile="acrel-ddsy1352-modbus", unit=1)],
        )
        host, port = where["market-dlt645"].rsplit(":", 1)
        dlt = BusConfig(
            name="b",
            transport="tcp",
            host=host,
            port=int(port),
            timeout_s=2.0,
            devices=[DeviceConfig(key="m1", profile="dlt645-2007-prepaid", address="000000000161")],
        )
        water = BusConfig(
            name="c",
            transport="serial",
            serial=SerialPortConfig(port=where["dorm-water"], baudrate=9600, parity="N"),
            timeout_s=2.0,
            devices=[
                DeviceConfig(key="w1", profile="cjt188-valve-water", address="00000012345678")
            ],
        )
        totals = {}
        for bus, quantity in (
            (modbus, "total_energy"),
            (dlt, "remaining_amount"),
            (water, "total_volume"),
        ):
            driver = make_driver(bus, profiles)
            try:
                dev = bus.devices[0]
                values = await driver.read(dev, profiles[dev.profile])
                totals[bus.name] = values[(quantity, 1)]
            finally:
                await driver.close()
        assert totals["a"] >= 1200
        assert 0 < totals["b"] <= 30
        assert totals["c"] >= 35
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 10)
