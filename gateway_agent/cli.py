"""`prepay-gateway`: the gateway agent's command line (run, sim, scan, decode, commission)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["decode"]:
        from gateway_agent.decode import main as decode_main

        code: int = decode_main(argv[1:])
        return code
    if argv[:1] == ["commission"]:
        from gateway_agent.commission import main as commission_main

        return commission_main(argv[1:])
    if argv[:1] == ["scan"]:
        from gateway_agent.scan import main as scan_main

        return scan_main(argv[1:])
    parser = argparse.ArgumentParser(prog="prepay-gateway", description="PrepayCloud gateway agent")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="poll the configured buses and talk to the cloud")
    run.add_argument("--config", type=Path, required=True, help="agent YAML config")
    sim = sub.add_parser("sim", help="serve a bus of simulated meters from a YAML file")
    sim.add_argument("--config", type=Path, required=True)
    sim.add_argument("--profiles-dir", type=Path, default=None, help="installer's profiles")
    sub.add_parser("decode", help="decode a captured frame (DL/T 645, CJ/T 188, Modbus RTU)")
    sub.add_parser("scan", help="find the meters on a bus and print a config snippet")
    sub.add_parser("commission", help="exchange a claim code for this gateway's credentials")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        if args.cmd == "run":
            return asyncio.run(_run(args.config))
        if args.cmd == "sim":
            return asyncio.run(_sim(args.config, args.profiles_dir))
    except KeyboardInterrupt:
        return 130
    return 2


async def _run(path: Path) -> int:
    from gateway_agent.agent import Agent
    from gateway_agent.config import ConfigError, load_config
    from meter_profiles.loader import ProfileError, load_profiles

    try:
        cfg = load_config(path)
        profiles = load_profiles(cfg.profiles_dir)
        agent = Agent(cfg, profiles)
    except (ConfigError, ProfileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    await agent.run()
    return 0


async def _sim(path: Path, profiles_dir: Path | None = None) -> int:
    from meter_profiles.loader import ProfileError, load_profiles
    from meter_profiles.simulators.bus import SimConfigError, load_sim_config, start_bus

    try:
        cfg = load_sim_config(path)
        profiles = load_profiles(profiles_dir)
        running = []
        for bus in cfg.buses:
            running.append(await start_bus(bus, profiles, cfg.speed))
    except (SimConfigError, ProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in running:
        ids = [m.address if r.protocol != "modbus" else m.unit for m in r.meters]
        print(
            f"simulated bus {r.name}: {r.protocol} over {r.transport} at {r.where}, meters {ids}",
            flush=True,
        )
    try:
        await asyncio.Event().wait()
    finally:
        for r in running:
            await r.stop()
    return 0
