"""`prepay demo`: the whole system on one machine with embedded defaults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from pydantic import SecretStr

from cloud.api.app import create_app
from cloud.control.dispatcher import Dispatcher
from cloud.db import migrate
from cloud.embedded import EmbeddedBroker, free_port
from cloud.ingest.consumer import lanes, run_lanes
from cloud.ingest.service import IngestService
from cloud.registry.service import GroupSpec, MeterSpec, seed_group
from cloud.runtime import Wiring, owner_url, serve_http
from cloud.settings import CloudSettings
from contract.mqtt import Topics
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
from meter_profiles.loader import load_profiles
from meter_profiles.simulators.meter import LoadCurve, SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator

log = logging.getLogger(__name__)

SIM_SPEED = 60.0  # one wall-clock second = one simulated minute
DEMO = GroupSpec(
    slug="demo",
    name="Demo Property Group",
    # Simulated time runs SIM_SPEED times faster than the readings' wall-clock timestamps,
    # so the points may draw that much more per hour before rating calls it impossible.
    max_rate=Decimal(15) * Decimal(SIM_SPEED),
    # The demo shows a cut at any hour; a real site keeps the default friendly hours.
    friendly_hours=False,
    alarms=(Decimal("5.00"), Decimal("2.00")),
    meters=[
        MeterSpec("shop-101", 1, "Lucky Noodles (101)", Decimal("1.50")),
        MeterSpec("shop-102", 2, "Green Tea House (102)", Decimal("6.00")),
        MeterSpec("shop-103", 3, "Phone Repair (103)", Decimal("20.00")),
        MeterSpec("shop-104", 4, "Fresh Fruit (104)", Decimal("50.00")),
    ],
)


def _demo_secret(data: Path) -> str:
    """The demo's session key: random, made once per data directory (mode 0600)."""
    path = data / "secret_key"
    if not path.exists():
        data.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


async def run_demo(settings: CloudSettings, port: int | None = None) -> None:
    data = settings.data_dir / "demo"
    settings = settings.model_copy(update={"data_dir": data})
    if settings.secret_key is None:  # a key of the demo's own, kept so sessions survive
        settings = settings.model_copy(update={"secret_key": SecretStr(_demo_secret(data))})
    url = await asyncio.to_thread(owner_url, settings, "prepay_demo")
    await asyncio.to_thread(migrate, url, settings.app_role)
    wiring = Wiring.build(settings, url)
    db = wiring.db
    if not await _tenant_exists(wiring, DEMO.slug):
        await seed_group(db, DEMO)
    start_kwh = await _last_registers(wiring)

    broker: EmbeddedBroker | None = None
    mqtt_url = settings.mqtt_url
    shared = settings.mqtt_shared_group
    if not mqtt_url:
        broker = EmbeddedBroker()
        await broker.start()
        mqtt_url, shared = broker.url, None  # amqtt has no shared subscriptions

    profiles = load_profiles()
    profile = profiles["acrel-ddsy1352-modbus"]
    sim = ModbusTcpSimulator(
        [
            SimulatedMeter(
                profile,
                m.unit,
                curve=LoadCurve(seed=m.unit, peak=1.5 + m.unit / 2),
                speed=SIM_SPEED,
                start_total=start_kwh.get(m.key, 100.0 * m.unit),
            )
            for m in DEMO.meters
        ]
    )
    await sim.start()
    agent = Agent(
        AgentConfig(
            gateway=DEMO.gateway_code,
            mqtt_url=mqtt_url,
            mqtt_prefix=settings.mqtt_prefix,
            data_dir=data / "gateway",
            poll_interval_s=5.0,
            buses=[
                BusConfig(
                    name=DEMO.bus,
                    port=sim.port,
                    devices=[
                        DeviceConfig(key=m.key, profile=profile.model, unit=m.unit)
                        for m in DEMO.meters
                    ],
                )
            ],
        ),
        profiles,
    )
    topics = Topics(settings.mqtt_prefix)
    ingest = lanes(IngestService(db, wiring.services.timing), mqtt_url, topics, shared)
    dispatcher = Dispatcher(db, mqtt_url, topics, wiring.services.timing)
    http_port = port or (settings.api_port if _port_free(settings.api_port) else free_port())
    app = create_app(wiring.services)

    tasks = [
        asyncio.create_task(run_lanes(ingest), name="ingest"),
        asyncio.create_task(dispatcher.run(), name="dispatcher"),
        asyncio.create_task(agent.run(), name="gateway-agent"),
        asyncio.create_task(serve_http(app, settings.api_host, http_port), name="api"),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.sleep(0.5)
    _banner(settings.api_host, http_port, url, mqtt_url, data)
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not waiter and t.exception():
                raise t.exception()  # type: ignore[misc]
    finally:
        print("\nShutting down…", flush=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sim.stop()
        if broker:
            with contextlib.suppress(Exception):
                await broker.stop()
        await db.dispose()
        print("Stopped cleanly.", flush=True)


async def _tenant_exists(wiring: Wiring, slug: str) -> bool:
    async with wiring.db.platform() as conn:
        return bool(await conn.scalar(sa.text("SELECT 1 FROM tenant WHERE slug = :s"), {"s": slug}))


async def _last_registers(wiring: Wiring) -> dict[str, float]:
    """Resume simulated meters where they stopped, so a restarted demo keeps its registers."""
    async with wiring.db.platform() as conn:
        tenant = await conn.scalar(
            sa.text("SELECT id FROM tenant WHERE slug = :s"), {"s": DEMO.slug}
        )
    async with wiring.db.tenant(tenant) as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT d.key, max(r.total) AS total FROM device d JOIN channel c "
                "ON c.device_id = d.id JOIN reading r ON r.channel_id = c.id GROUP BY d.key"
            )
        )
        return {r.key: float(r.total) for r in rows if r.total is not None}


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _banner(host: str, port: int, db_url: str, mqtt_url: str, data: Path) -> None:
    print(
        f"""
PrepayCloud demo is running.

  Console   http://{host}:{port}/console/
  Login     property group: {DEMO.slug}   user: {DEMO.admin_username}   password: {DEMO.admin_password}
  API docs  http://{host}:{port}/docs
  Database  {db_url}
  Broker    {mqtt_url}
  Data      {data.resolve()}

Four simulated DDSY1352 meters are polled every 5 s (simulated time runs 60x).
"Lucky Noodles (101)" starts with ¥1.50 and is cut off within about a minute; top it up:

  TOKEN=$(curl -s -X POST http://{host}:{port}/api/v1/auth/token -H 'content-type: application/json' \\
    -d '{{"tenant":"{DEMO.slug}","username":"{DEMO.admin_username}","password":"{DEMO.admin_password}"}}' \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -s -X POST http://{host}:{port}/api/v1/sales -H "authorization: Bearer $TOKEN" \\
    -H "Idempotency-Key: $(date +%s%N)" -H 'content-type: application/json' \\
    -d '{{"account":"A000001","amount":"20.00","method":"cash"}}'

Press Ctrl-C to stop.
""",
        flush=True,
    )
