"""`prepay demo`: the whole system on one machine with embedded defaults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from pydantic import SecretStr

from cloud.api.app import create_app
from cloud.auth import PERMISSIONS, Principal
from cloud.control.dispatcher import Dispatcher
from cloud.control.service import CommandTiming
from cloud.db import Database, migrate
from cloud.embedded import EmbeddedBroker, free_port
from cloud.field import books
from cloud.ingest.consumer import lanes, run_lanes
from cloud.ingest.service import IngestService
from cloud.lifecycle.service import (
    CustomerData,
    DeviceSpec,
    FirstSale,
    InstallRequest,
    OpenRequest,
    PointOrder,
    install,
    open_account,
)
from cloud.payments.wechat.jobs import payments_forever
from cloud.payments.wechat.merchant import MerchantSettings, set_merchant
from cloud.payments.wechat.settings import PaySettings
from cloud.rating.service import close_usage_windows_forever
from cloud.reconcile.jobs import reconcile_forever
from cloud.reconcile.service import Reconciler
from cloud.registry import admin
from cloud.registry.admin import OperatorDraft
from cloud.registry.admin_core import PremisesDraft
from cloud.registry.service import GroupSpec, MeterSpec, Seeded, seed_group
from cloud.runtime import Wiring, owner_url, serve_http
from cloud.settings import CloudSettings
from cloud.tariffs.admin import NewTariff, create_tariff
from cloud.tariffs.rules import VersionDraft
from contract.mqtt import Topics
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
from meter_profiles.loader import load_profiles
from meter_profiles.simulators.cjt188 import Cjt188Responder
from meter_profiles.simulators.line import LineServer
from meter_profiles.simulators.meter import LoadCurve, SimulatedMeter
from meter_profiles.simulators.modbus_tcp import ModbusTcpSimulator
from notifications.settings import NotifySettings
from notifications.worker import NotifyWorker, providers_from
from standins.launch import WeChatTestMerchants, start_wechat
from standins.twilio import TwilioStandIn
from standins.wechat import WeChatStandIn

log = logging.getLogger(__name__)

SIM_SPEED = 60.0  # one wall-clock second = one simulated minute
DEMO = GroupSpec(
    slug="demo",
    name="演示物业集团",
    site="河畔市场",
    # Simulated time runs SIM_SPEED times faster than the readings' wall-clock timestamps,
    # so the points may draw that much more per hour before rating calls it impossible.
    max_rate=Decimal(15) * Decimal(SIM_SPEED),
    # The demo shows a cut at any hour; a real site keeps the default friendly hours.
    friendly_hours=False,
    alarms=(Decimal("5.00"), Decimal("2.00")),
    meters=[
        MeterSpec("shop-101", 1, "好运面馆", Decimal("1.50")),
        MeterSpec("shop-102", 2, "绿茶小馆", Decimal("6.00")),
        MeterSpec("shop-103", 3, "手机维修", Decimal("20.00")),
        MeterSpec("shop-104", 4, "鲜果铺", Decimal("50.00")),
    ],
)

#: The flat 陈家 (B栋-3-301) has its water meter installed: a CJ/T 188 valve meter on a bus
#: of its own behind a (simulated) serial-to-Ethernet converter.
WATER = "cjt188-valve-water"
WATER_KEY, WATER_BUS, WATER_ADDRESS = "water-301", "water", "00000000000301"
WATER_START = 20.0  # m³ on the register at installation


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
    http_port = port or (settings.api_port if _port_free(settings.api_port) else free_port())
    api_base = f"http://{settings.api_host}:{http_port}"
    merchants = WeChatTestMerchants()
    wechat, pay, written = await start_wechat(
        settings.api_host, 0, 0, data / "wechat-keys", merchants
    )
    pay_settings = PaySettings(
        base_url=pay.url, public_base_url=api_base, wechat_api_base_url=wechat.url
    )
    wiring = Wiring.build(settings, url, pay=pay_settings)
    db = wiring.db
    if not await _tenant_exists(wiring, DEMO.slug):
        await seed_office(db, await seed_group(db, DEMO), wiring.services.timing)
    tenant_phone = await _tenant_app(wiring, merchants, wechat.secret, written[1])
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
    water_meter = SimulatedMeter(
        profiles[WATER],
        1,
        address=WATER_ADDRESS,
        curve=LoadCurve(base=0.02, peak=0.25, seed=301),
        speed=SIM_SPEED,
        start_total=start_kwh.get(WATER_KEY, WATER_START),
    )
    water_line = LineServer(Cjt188Responder([water_meter]))
    water_port = await water_line.start_tcp()
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
                ),
                BusConfig(
                    name=WATER_BUS,
                    transport="tcp",
                    port=water_port,
                    devices=[DeviceConfig(key=WATER_KEY, profile=WATER, address=WATER_ADDRESS)],
                ),
            ],
        ),
        profiles,
    )
    topics = Topics(settings.mqtt_prefix)
    ingest = lanes(IngestService(db, wiring.services.timing), mqtt_url, topics, shared)
    dispatcher = Dispatcher(db, mqtt_url, topics, wiring.services.timing)
    twilio = TwilioStandIn()
    notify = await _notify_through(twilio, wechat, settings.api_host, http_port)
    wiring.services.notify_settings = notify
    notifier = NotifyWorker(db, providers_from(notify), notify)
    app = create_app(wiring.services)

    tasks = [
        asyncio.create_task(run_lanes(ingest), name="ingest"),
        asyncio.create_task(dispatcher.run(), name="dispatcher"),
        asyncio.create_task(notifier.run(), name="notifications"),
        asyncio.create_task(payments_forever(wiring.services.wechat_pay), name="payments"),
        asyncio.create_task(
            reconcile_forever(Reconciler(wiring.services.wechat_pay)), name="reconcile"
        ),
        asyncio.create_task(
            close_usage_windows_forever(
                wiring.db, wiring.services.timing, lambda: datetime.now(UTC), timedelta(minutes=1)
            ),
            name="usage-windows",
        ),
        asyncio.create_task(agent.run(), name="gateway-agent"),
        asyncio.create_task(serve_http(app, settings.api_host, http_port), name="api"),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.sleep(0.5)
    _banner(settings.api_host, http_port, url, mqtt_url, data, twilio.url, wechat.url)
    _tenant_banner(api_base, tenant_phone, pay.url)
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
        await water_line.stop()
        await twilio.stop()
        await wechat.stop()
        await pay.stop()
        with contextlib.suppress(Exception):
            await wiring.services.wechat_pay.close()
        if broker:
            with contextlib.suppress(Exception):
                await broker.stop()
        await db.dispose()
        print("Stopped cleanly.", flush=True)


CLERK = ("clerk", "demo-clerk")
INSTALLER = ("installer", "demo-installer")
FIELD = ("reader", "demo-reader")


async def seed_office(db: Database, seeded: Seeded, timing: CommandTiming) -> None:
    """The business office of the demo group: two buildings (shops on floors 1–2 of A栋,
    flats on floors 3–4 of B栋), the four metered shops placed in A栋, flats with
    electricity and water — 陈家's water meter installed, with ¥30 of credit, the others
    waiting for their meters (装表) —, a water tariff, a second outlet, a counter clerk
    scoped to that outlet and an installer."""
    now = datetime.now(UTC)
    who = Principal(seeded.tenant_id, seeded.operator_id, "admin", frozenset(PERMISSIONS))
    a = await admin.create_building(db, who, seeded.site_id, "A栋", now)
    b = await admin.create_building(db, who, seeded.site_id, "B栋", now)
    shops = {}
    for floor, numbers in (("1", ("101", "102", "103", "104")), ("2", ("201", "202"))):
        for n in numbers:
            draft = PremisesDraft(floor, n, "shop", Decimal("36.00"))
            shops[n] = await admin.create_premises(db, who, a.id, draft, now)
    flats = []
    for floor in ("3", "4"):
        for n in ("01", "02", "03"):
            draft = PremisesDraft(floor, f"{floor}{n}", "flat", Decimal("68.50"))
            flats.append(await admin.create_premises(db, who, b.id, draft, now))
    async with db.tenant(seeded.tenant_id) as conn:
        for key, point in seeded.points.items():  # shop-101 … shop-104 → A栋-1-101 …
            number = key.removeprefix("shop-")
            await conn.execute(
                sa.text("UPDATE service_point SET premises_id = :p, name = :n WHERE id = :id"),
                {"p": shops[number].id, "n": f"A栋-1-{number} 电", "id": point},
            )
        await conn.execute(
            sa.text("UPDATE outlet SET name = '一号营业厅' WHERE id = :o"), {"o": seeded.outlet_id}
        )
        # the shops' tenants get their alerts by SMS (to the Twilio stand-in)
        await conn.execute(
            sa.text(
                "UPDATE customer SET phone = '+86138000' || lpad((row_number)::text, 5, '0') "
                "FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) FROM customer) n "
                "WHERE n.id = customer.id"
            )
        )
        power = await conn.scalar(sa.text("SELECT id FROM tariff WHERE utility = 'electricity'"))
    water = await create_tariff(
        db,
        who,
        NewTariff(
            "居民水价", "water", seeded.site_id, VersionDraft("flat", {"unit_price": "3.8000"})
        ),
        now,
    )
    for flat, name in zip(flats, ("陈家", "刘家", "赵家", "孙家", "周家", "吴家"), strict=True):
        points = (PointOrder("electricity", power), PointOrder("water", water))
        first = (
            FirstSale(Decimal("30.00"), "cash", seeded.outlet_id, "demo-301")
            if name == "陈家"
            else None
        )
        req = OpenRequest(flat.id, points, customer=CustomerData(name), first_sale=first)
        opened = await open_account(db, who, req, now, timing)
        if name == "陈家":  # its water meter is in; the rest wait for the installer
            spec = DeviceSpec(
                DEMO.gateway_code, WATER_KEY, 1, WATER, WATER_BUS, WATER_ADDRESS, "SW-301"
            )
            register = Decimal(str(WATER_START))
            await install(db, who, opened.points[1], InstallRequest(spec, register), now, timing)
    second = await admin.create_outlet(db, who, seeded.site_id, "二号营业厅", now)
    clerk_role = await admin.create_role(
        db,
        who,
        "收费员",
        [
            "registry.view",
            "account.open",
            "account.close",
            "sale.create",
            "sale.reverse",
            "dunning.send",
        ],
        now,
    )
    installer_role = await admin.create_role(
        db, who, "装表员", ["registry.view", "meter.install", "gateway.commission"], now
    )
    await admin.create_operator(
        db,
        who,
        OperatorDraft(CLERK[0], "王收费", CLERK[1], clerk_role.id, "outlet", (second.id,)),
        now,
    )
    await admin.create_operator(
        db, who, OperatorDraft(INSTALLER[0], "李师傅", INSTALLER[1], installer_role.id), now
    )
    await seed_field(db, who, seeded, now)


async def seed_field(db: Database, who: Principal, seeded: Seeded, now: datetime) -> None:
    """A field worker (抄表员) with meter book A1 of the four shops, its reading cycle open
    from today: the gateway has not been heard yet, so every shop is a task."""
    role = await admin.create_role(db, who, "抄表员", ["field.work"], now)
    reader = await admin.create_operator(
        db, who, OperatorDraft(FIELD[0], "赵抄表", FIELD[1], role.id), now
    )
    book = await books.create_book(db, who, seeded.site_id, "A1", "A栋一层商铺", now)
    await books.set_route(db, who, book, list(seeded.points.values()), now)
    await books.assign(db, who, book, reader.id, now)
    await books.open_cycle(db, who, book, now.date(), now)


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


async def _notify_through(
    twilio: TwilioStandIn, wechat: WeChatStandIn, host: str, port: int
) -> NotifySettings:
    """The demo's notifications go to local stand-ins of Twilio and WeChat (their status
    callbacks come back to this API, signed), which log what they accept."""
    await twilio.start(host)
    return NotifySettings(
        sms_provider="twilio",
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=SecretStr(twilio.auth_token),
        twilio_base_url=twilio.url,
        public_base_url=f"http://{host}:{port}",
        wechat_appid=wechat.appid,
        wechat_secret=SecretStr(wechat.secret),
        wechat_base_url=wechat.url,
    )


async def _tenant_app(
    wiring: Wiring, merchants: WeChatTestMerchants, app_secret: str, keys: Path
) -> str:
    """The demo group's WeChat Pay merchant, a sub-merchant under the stand-in's service
    provider (its keys are new each start, so it is set each start), and a mobile number
    on file for every customer without one so a tenant can bind. Returns 好运面馆's phone."""
    meta = json.loads(await asyncio.to_thread(keys.read_text))
    private_key = await asyncio.to_thread((keys.parent / meta["private_key_file"]).read_text)
    public_key = await asyncio.to_thread((keys.parent / meta["public_key_file"]).read_text)
    async with wiring.db.platform() as conn:
        tenant = await conn.scalar(
            sa.text("SELECT id FROM tenant WHERE slug = :s"), {"s": DEMO.slug}
        )
    await set_merchant(
        wiring.db,
        wiring.services.wechat_pay.box,
        tenant,
        MerchantSettings(
            mode="partner",
            mchid=merchants.sp_mchid,
            appid=merchants.appid,
            cert_serial_no=meta["cert_serial_no"],
            private_key=private_key,
            apiv3_key=meta["apiv3_key"],
            sub_mchid=merchants.sub_mchid,
            app_secret=app_secret,
            public_key=public_key,
            public_key_id=meta["public_key_id"],
        ),
        "demo",
        datetime.now(UTC),
    )
    async with wiring.db.tenant(tenant) as conn:
        await conn.execute(
            sa.text(
                "UPDATE customer SET phone = '138000' || lpad((n.row_number)::text, 5, '0') "
                "FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) FROM customer) n "
                "WHERE n.id = customer.id AND (customer.phone IS NULL OR customer.phone = '')"
            )
        )
        phone = await conn.scalar(
            sa.text(
                "SELECT c.phone FROM account a JOIN customer c ON c.id = a.customer_id "
                "WHERE a.number = 'A000001'"
            )
        )
    return str(phone or "").removeprefix("+86")


def _tenant_banner(api_base: str, phone: str, pay_url: str) -> None:
    print(
        f"""Tenant app (H5, a phone's page)  {api_base}/h5/{DEMO.slug}/
  Log in with the phone {phone} (好运面馆's tenant); in development the SMS code is shown on the page.
  Bind account A000001 with the phone {phone}, then top up: paying goes through the WeChat Pay
  stand-in's cashier page ({pay_url}/standin/cashier), which pays the order and brings you back.
""",
        flush=True,
    )


def _banner(
    host: str,
    port: int,
    db_url: str,
    mqtt_url: str,
    data: Path,
    twilio_url: str = "",
    wechat_url: str = "",
) -> None:
    print(
        f"""
PrepayCloud demo is running.

  Console   http://{host}:{port}/console/
  Field app http://{host}:{port}/field/  (a phone's page: download the book, read offline)
  Logins    property group: {DEMO.slug}
    administrator (every permission)         user: {DEMO.admin_username:<10} password: {DEMO.admin_password}
    counter clerk (二号营业厅 only)            user: {CLERK[0]:<10} password: {CLERK[1]}
    installer (装表)                          user: {INSTALLER[0]:<10} password: {INSTALLER[1]}
    field worker (表册 A1, phone app /field/)  user: {FIELD[0]:<10} password: {FIELD[1]}
  API docs  http://{host}:{port}/docs
  Database  {db_url}
  Broker    {mqtt_url}
  Data      {data.resolve()}
  SMS       Twilio stand-in {twilio_url} (WeChat stand-in {wechat_url}); each message is logged

Four simulated DDSY1352 meters and a CJ/T 188 water meter (陈家, B栋-3-301) are polled every 5 s
(simulated time runs 60x); the other flats' meters wait for the installer (装表).
"好运面馆" (A栋-1-101, account A000001) starts with ¥1.50 and is cut off within about a minute; top it up:

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
