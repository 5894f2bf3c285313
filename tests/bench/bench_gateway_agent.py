"""Benchmark: the gateway agent as it runs in the field (issue 4's closing figures).

1. ``memory``: resident memory (VmRSS / VmHWM from /proc) of a ``prepay-gateway run``
   process polling 256 simulated DDSY1352 meters on 8 buses (4 Modbus TCP, 4 Modbus RTU over
   TCP, served by a ``prepay-gateway sim`` process) with a 1,000,000-reading backlog already
   in its on-disk outbox, the broker unreachable so the backlog stays. Target: <= 40 MB.
2. ``drain``: a Mosquitto is then started on the port the agent keeps trying; a subscriber
   counts readings; reported: seconds until the outbox is empty and readings/s.
3. ``bus``: one paced 9600-baud bus (LineServer, 11-bit characters, 5 ms reply delay, Modbus
   RTU over TCP, in its own process) polled as fast as the agent can (tiny poll interval);
   reported: the scheduler's utilisation and transactions from ``Agent.heartbeat()``.

Run: ``.venv/bin/python tests/bench/bench_gateway_agent.py [--backlog 1000000]
[--rss-seconds 30] [--bus-seconds 20] [--only memory,drain,bus]``. Prints a JSON summary.
Not collected by pytest (tests/bench is outside testpaths); no timed assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import yaml

from contract.mqtt import Receipt, dump

BIN = Path(sys.executable).with_name("prepay-gateway")
MOSQUITTO = "/usr/sbin/mosquitto"
PROFILE = "acrel-ddsy1352-modbus"
BUSES = 8
PER_BUS = 32
PREFIX = "bench"
GATEWAY = "gw-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_parts_kb(pid: int) -> dict[str, int]:
    """VmRSS split into anonymous (heap) and file-backed (code, shared libraries) pages."""
    keep = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in keep:
            out[k] = int(v.split()[0])
    return out


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            fields[k] = int(v.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the backlog ----------------------------------------------------------------------------
def prefill(path: Path, n: int) -> float:
    """Write ``n`` reading rows into the agent's outbox (its own schema), as the agent would
    have queued them: one JSON body per reading, 256 devices, 15-minute-ish spacing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
        "kind TEXT NOT NULL, body BLOB NOT NULL)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id)")
    start = datetime.now(UTC) - timedelta(hours=6)
    devices = BUSES * PER_BUS

    def rows() -> Any:
        for i in range(n):
            dev = i % devices
            at = start + timedelta(microseconds=(i // devices) * 20_000 + dev)
            total = 1000 + dev + (i // devices) * 0.01
            body = (
                f'{{"device":"b{dev // PER_BUS}m{dev % PER_BUS + 1}","channel":1,'
                f'"measured_at":"{at.isoformat().replace("+00:00", "Z")}",'
                f'"total":"{total:.2f}","tou":null,"voltage":"229.8","current":"3.51",'
                f'"power":"0.806","supply":"on","meter_balance":null,"purchase_count":null}}'
            )
            yield ("reading", body.encode())

    db.execute("BEGIN")
    db.executemany("INSERT INTO outbox (kind, body) VALUES (?, ?)", rows())
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return time.monotonic() - t0


def depth(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return int(db.execute("SELECT count(*) FROM outbox WHERE kind = 'reading'").fetchone()[0])
    finally:
        db.close()


# -- configs -----------------------------------------------------------------------------------
def sim_config(path: Path, ports: list[int]) -> None:
    buses = []
    for b, port in enumerate(ports):
        buses.append(
            {
                "name": f"b{b}",
                "transport": "modbus_tcp" if b % 2 == 0 else "tcp",
                "port": port,
                "meters": [
                    {"profile": PROFILE, "unit": u, "base": 0.5, "peak": 2.0}
                    for u in range(1, PER_BUS + 1)
                ],
            }
        )
    path.write_text(yaml.safe_dump({"speed": 60, "buses": buses}))


def agent_config(path: Path, data_dir: Path, mqtt_port: int, ports: list[int], cap: int) -> None:
    buses = []
    for b, port in enumerate(ports):
        buses.append(
            {
                "name": f"b{b}",
                "transport": "modbus_tcp" if b % 2 == 0 else "tcp",
                "port": port,
                "timeout_s": 0.5,
                "devices": [
                    {"key": f"b{b}m{u}", "profile": PROFILE, "unit": u}
                    for u in range(1, PER_BUS + 1)
                ],
            }
        )
    path.write_text(
        yaml.safe_dump(
            {
                "gateway": GATEWAY,
                "mqtt_url": f"mqtt://127.0.0.1:{mqtt_port}",
                "mqtt_prefix": PREFIX,
                "data_dir": str(data_dir),
                "poll_interval_s": 5.0,
                "queue_cap": cap,
                "heartbeat_s": 10,
                "reconnect_min_s": 0.5,
                "reconnect_max_s": 1.0,
                "buses": buses,
            }
        )
    )


def mosquitto(root: Path, port: int) -> subprocess.Popen[bytes]:
    conf = root / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\n"
        "max_queued_messages 0\nmax_inflight_messages 0\nmax_packet_size 16777216\n"
        "log_dest stderr\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc


# -- 1 + 2: memory with a backlog, then drain ---------------------------------------------------
def memory_and_drain(tmp: Path, backlog: int, rss_seconds: float, drain: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    data_dir = tmp / "gw"
    outbox = data_dir / "outbox.sqlite3"
    out["prefill_s"] = round(prefill(outbox, backlog), 1)
    out["outbox_file_mb"] = round(outbox.stat().st_size / 2**20, 1)
    ports = [free_port() for _ in range(BUSES)]
    mqtt_port = free_port()  # nothing listens here yet: the broker is unreachable
    sim_yaml, agent_yaml = tmp / "sim.yaml", tmp / "agent.yaml"
    sim_config(sim_yaml, ports)
    agent_config(agent_yaml, data_dir, mqtt_port, ports, cap=backlog + 500_000)
    log = (tmp / "agent.log").open("wb")
    sim = agent = broker = None
    try:
        sim = subprocess.Popen(
            [str(BIN), "sim", "--config", str(sim_yaml)], stdout=subprocess.DEVNULL
        )
        for p in ports:
            wait_port(p, sim)
        t0 = time.monotonic()
        agent = subprocess.Popen(
            [str(BIN), "run", "--config", str(agent_yaml)], stdout=log, stderr=subprocess.STDOUT
        )
        samples: list[tuple[float, int]] = []
        while time.monotonic() - t0 < rss_seconds:
            time.sleep(0.25)
            assert agent.poll() is None, "the agent died"
            samples.append((time.monotonic() - t0, rss_kb(agent.pid)[0]))
        hwm = rss_kb(agent.pid)[1]
        parts = {k: round(v / 1024, 1) for k, v in rss_parts_kb(agent.pid).items()}
        steady = [kb for t, kb in samples if t >= rss_seconds / 2]
        polled = depth(outbox) - backlog
        out["memory"] = {
            "meters": BUSES * PER_BUS,
            "buses": BUSES,
            "backlog": backlog,
            "seconds": rss_seconds,
            "peak_rss_mb": round(hwm / 1024, 1),
            "steady_rss_mb": round(sum(steady) / len(steady) / 1024, 1),
            "max_sampled_rss_mb": round(max(kb for _, kb in samples) / 1024, 1),
            "rss_at_1s_mb": round(next(kb for t, kb in samples if t >= 1.0) / 1024, 1),
            "readings_polled_meanwhile": polled,
            "breakdown_mb_at_end": parts,
            "target_mb": 40,
        }
        if not drain:
            return out

        # 2. The broker appears on the port the agent keeps trying; count what arrives.
        broker = mosquitto(tmp, mqtt_port)
        counted = {"readings": 0, "messages": 0}
        start_depth = depth(outbox)

        async def count_until_empty() -> float:
            import aiomqtt

            async with aiomqtt.Client(
                "127.0.0.1", mqtt_port, identifier="bench-counter", max_queued_incoming_messages=0
            ) as mqtt:
                await mqtt.subscribe(f"{PREFIX}/gw/{GATEWAY}/up/telemetry", qos=1)
                t1 = time.monotonic()
                peak = 0

                async def watch() -> None:
                    nonlocal peak
                    while True:
                        peak = max(peak, rss_kb(agent.pid)[0])
                        await asyncio.sleep(0.25)

                w = asyncio.create_task(watch())
                receipts = f"{PREFIX}/gw/{GATEWAY}/down/receipt"
                async for m in mqtt.messages:
                    p = m.payload
                    assert isinstance(p, bytes)
                    counted["messages"] += 1
                    n = p.count(b'"measured_at"')
                    counted["readings"] += n
                    # play the cloud: the agent forgets a batch only on its receipt
                    head = json.loads(p[: p.index(b',"readings":[')] + b"}")
                    receipt = Receipt(
                        gateway=GATEWAY, boot_id=head["boot_id"], seq=head["seq"], stored=n
                    )
                    await mqtt.publish(receipts, dump(receipt), qos=1)
                    if counted["readings"] >= start_depth and depth(outbox) == 0:
                        break
                w.cancel()
                counted["drain_peak_rss_kb"] = peak
                return time.monotonic() - t1

        secs = asyncio.run(asyncio.wait_for(count_until_empty(), 900))
        out["drain"] = {
            "readings_at_broker_start": start_depth,
            "readings_received": counted["readings"],
            "messages": counted["messages"],
            "seconds": round(secs, 1),
            "readings_per_s": round(counted["readings"] / secs),
            "peak_rss_during_drain_mb": round(counted["drain_peak_rss_kb"] / 1024, 1),
            "agent_vmhwm_mb": round(rss_kb(agent.pid)[1] / 1024, 1),
        }
        return out
    finally:
        stop(agent)
        stop(sim)
        stop(broker)
        log.close()


# -- 3: a paced 9600-baud bus -------------------------------------------------------------------
def bus_utilisation(tmp: Path, meters: int, seconds: float) -> dict[str, Any]:
    from gateway_agent.agent import Agent
    from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
    from meter_profiles.loader import load_profiles

    port = free_port()
    sim_yaml = tmp / "paced.yaml"
    sim_yaml.write_text(
        yaml.safe_dump(
            {
                "speed": 60,
                "buses": [
                    {
                        "name": "paced",
                        "transport": "tcp",
                        "port": port,
                        "baudrate": 9600,
                        "bits_per_char": 11,
                        "reply_delay_ms": 5,
                        "meters": [{"profile": PROFILE, "unit": u} for u in range(1, meters + 1)],
                    }
                ],
            }
        )
    )
    sim = subprocess.Popen([str(BIN), "sim", "--config", str(sim_yaml)], stdout=subprocess.DEVNULL)
    try:
        wait_port(port, sim)

        async def run() -> dict[str, Any]:
            agent = Agent(
                AgentConfig(
                    gateway=GATEWAY,
                    mqtt_url=f"mqtt://127.0.0.1:{free_port()}",  # polling only
                    data_dir=tmp / "paced-gw",
                    poll_interval_s=0.001,
                    reconnect_min_s=5,
                    reconnect_max_s=5,
                    buses=[
                        BusConfig(
                            name="paced",
                            transport="tcp",
                            port=port,
                            timeout_s=1.0,
                            devices=[
                                DeviceConfig(key=f"m{u}", profile=PROFILE, unit=u)
                                for u in range(1, meters + 1)
                            ],
                        )
                    ],
                ),
                load_profiles(),
            )
            task = asyncio.create_task(agent.run())
            await asyncio.sleep(2.0)  # connect, warm up
            agent.heartbeat()  # take_stats: resets the counters
            t0 = time.monotonic()
            await asyncio.sleep(seconds)
            hb = agent.heartbeat()
            span = time.monotonic() - t0
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            stats = hb.buses["paced"]
            return {
                "meters": meters,
                "seconds": round(span, 1),
                "baud": 9600,
                "reply_delay_ms": 5,
                "heartbeat": stats.model_dump(mode="json"),
                "reads_per_s": round(stats.transactions / span, 2),
            }

        return asyncio.run(run())
    finally:
        stop(sim)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=1_000_000)
    ap.add_argument("--rss-seconds", type=float, default=30.0)
    ap.add_argument("--bus-seconds", type=float, default=20.0)
    ap.add_argument("--bus-meters", type=int, default=4)
    ap.add_argument("--only", default="memory,drain,bus")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    summary: dict[str, Any] = {"python": sys.version.split()[0], "tmp": str(tmp)}
    try:
        if only & {"memory", "drain"}:
            summary |= memory_and_drain(tmp, args.backlog, args.rss_seconds, "drain" in only)
        if "bus" in only:
            summary["bus"] = bus_utilisation(tmp, args.bus_meters, args.bus_seconds)
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
