"""The gateway agent never loads pydantic: it was about 12 MB of the agent's resident memory
on a small board (tests/bench/README.md). A child process goes through the agent's real
start (``prepay-gateway run``'s path: its config file, the profiles, the agent) and polls a
simulated meter and talks to the broker for a while; then no pydantic module may be loaded."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import yaml

from meter_profiles.loader import load_profiles
from meter_profiles.simulators.meter import SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator

CHILD = r"""
import asyncio, contextlib, json, sys
from pathlib import Path

import gateway_agent.cli  # the entry point's module, as `prepay-gateway run` loads it
from gateway_agent.agent import Agent
from gateway_agent.config import load_config
from gateway_agent.outbox import READING
from meter_profiles.loader import load_profiles


async def main() -> None:
    cfg = load_config(Path(sys.argv[1]))  # what gateway_agent.cli._run does, then runs a while
    agent = Agent(cfg, load_profiles(cfg.profiles_dir))
    task = asyncio.create_task(agent.run())
    for _ in range(100):
        await asyncio.sleep(0.1)
        if agent.connected.is_set() and agent.seq > 0:
            break
    await asyncio.sleep(0.5)
    published, queued = agent.seq, agent.outbox.depth(READING)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core"))
    print(json.dumps({"loaded": loaded, "published": published, "queued": queued}))


asyncio.run(main())
"""


async def test_the_running_agent_never_imports_pydantic(
    tmp_path: Path, mqtt_url: str, topic_prefix: str
) -> None:
    sim = ModbusTcpSimulator([SimulatedMeter(load_profiles()["acrel-ddsy1352-modbus"], 1)])
    await sim.start()
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "gateway": "gw-imports",
                "mqtt_url": mqtt_url,
                "mqtt_prefix": topic_prefix,
                "data_dir": str(tmp_path / "data"),
                "poll_interval_s": 0.2,
                "buses": [
                    {
                        "name": "bus1",
                        "port": sim.port,
                        "devices": [{"key": "m1", "profile": "acrel-ddsy1352-modbus"}],
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await sim.stop()
    assert proc.returncode == 0, err.decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["published"] > 0 or report["queued"] > 0  # it really polled the meter
    assert report["loaded"] == []
