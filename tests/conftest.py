"""Test services: the real PostgreSQL and MQTT broker named by DATABASE_URL / MQTT_URL, or
embedded ones when unset (the same rule as the application). Never mocked.

Each test session migrates a fresh database of its own; each test seeds its own property
group (tenant), so row-level security keeps tests apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from cloud.db import Database, libpq_url, migrate
from cloud.embedded import EmbeddedBroker, start_embedded_postgres
from cloud.registry.service import GroupSpec, MeterSpec, Seeded, seed_group
from cloud.settings import CloudSettings

# Nobody prints in the suite: no receipts drawn in the background after each sale (the one
# test of drawing ahead turns it on for its own app).
os.environ.setdefault("PREPAY_DRAW_RECEIPTS_AHEAD", "false")

ROOT = Path(__file__).resolve().parent.parent


def _env(*names: str) -> str | None:
    for n in names:
        if os.environ.get(n):
            return os.environ[n]
    return None


@pytest.fixture(scope="session")
def admin_url() -> str:
    url = _env("PREPAY_DATABASE_URL", "DATABASE_URL")
    if url:
        return libpq_url(url)
    return start_embedded_postgres(ROOT / ".prepay" / "test-pg", "postgres")


@pytest.fixture(scope="session")
def db_url(admin_url: str) -> Iterator[str]:
    name = f"prepay_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _as_url(admin_url, name)
    migrate(url)
    yield url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _as_url(admin_url: str, dbname: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(database=dbname).render_as_string(hide_password=False)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database.connect(db_url, None, "prepay_app")
    yield database
    await database.dispose()


class _BrokerThread:
    """The embedded broker in its own thread and loop, for the whole test session."""

    def __init__(self) -> None:
        self.broker = EmbeddedBroker()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.broker.start())
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> str:
        self.thread.start()
        self.ready.wait(20)
        return self.broker.url


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    url = _env("PREPAY_MQTT_URL", "MQTT_URL")
    return url if url else _BrokerThread().start()


@pytest.fixture(scope="session")
def shared_group() -> str | None:
    """Shared subscriptions on a real broker; amqtt (embedded) has none."""
    return "ingest" if _env("PREPAY_MQTT_URL", "MQTT_URL") else None


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def group_spec(meters: int = 1, balance: str = "10.00", price: str = "1.0000") -> GroupSpec:
    tag = uuid.uuid4().hex[:8]
    return GroupSpec(
        slug=f"g{tag}",
        name=f"Group {tag}",
        gateway_code=f"gw-{tag}",
        unit_price=Decimal(price),
        friendly_hours=False,  # a test cuts at any hour unless it sets friendly hours
        # The suite's fixed dates (month ends, TOU boundaries) must not age out of a site's
        # default year: tests of the allowed age set their own (test_ingest_dates.py).
        reading_max_age_days=3650,
        meters=[MeterSpec(f"m{i}", i, f"Shop {i}", Decimal(balance)) for i in range(1, meters + 1)],
    )


@pytest.fixture
async def group(db: Database) -> Seeded:
    return await seed_group(db, group_spec())


@contextlib.asynccontextmanager
async def api_client(settings: CloudSettings, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API in-process (ASGI) on ``settings``, against the test database."""
    from cloud.api.app import create_app
    from cloud.runtime import Wiring

    wiring = Wiring.build(settings, db_url)
    transport = httpx.ASGITransport(app=create_app(wiring.services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        await wiring.db.dispose()


async def admin_auth(http: httpx.AsyncClient, slug: str) -> dict[str, str]:
    """Bearer headers for the seeded group's administrator."""
    r = await http.post(
        "/api/v1/auth/token", json={"tenant": slug, "username": "admin", "password": "demo-admin"}
    )
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['access_token']}"}


async def wait_for(cond: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``cond`` every 0.1 s until it holds; fail naming ``what`` after ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.1)


async def console_form(
    http: httpx.AsyncClient, url: str, data: dict[str, str], **kwargs: Any
) -> httpx.Response:
    """POST a console form as the browser does: with this client's CSRF token (fetched
    from the login page the first time)."""
    if http.cookies.get("prepay_csrf") is None:
        await http.get("/console/login")
    token = http.cookies.get("prepay_csrf")
    assert token, "the console set no CSRF cookie"
    return await http.post(url, data={**data, "csrf_token": token}, **kwargs)


async def console_login(
    http: httpx.AsyncClient, slug: str, username: str = "admin", password: str = "demo-admin"
) -> httpx.Response:
    r = await console_form(
        http,
        "/console/login",
        {"tenant": slug, "username": username, "password": password},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return r
