"""Prepaid control against the real database and broker: twins, commands, supersede,
late and duplicate acks, offline gateways, the operator API and meter-controlled points."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import aiomqtt
import httpx
import pytest
import sqlalchemy as sa

from cloud.auth import Principal, hash_password
from cloud.control.dispatcher import Dispatcher
from cloud.control.policy import SupplyState
from cloud.control.service import CommandTiming, apply_ack, expire_overdue, sweep_tenant
from cloud.db import Database
from cloud.ingest.consumer import lanes
from cloud.ingest.service import IngestService
from cloud.payments.counter import SaleRequest, sell_credit
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from contract.mqtt import (
    Ack,
    AckStatus,
    DownKind,
    Reading,
    TelemetryBatch,
    Topics,
    UpKind,
    dump,
)
from tests.conftest import admin_auth, api_client, console_form, console_login, group_spec, wait_for

TIMING = CommandTiming(deadline=timedelta(minutes=2), retry=timedelta(seconds=5))


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


class Shop:
    """One seeded group with one DDSY1352 point (¥10.00 at ¥1/kWh) and its gateway."""

    def __init__(self, db: Database, group: Seeded, slug: str) -> None:
        self.db, self.group, self.slug = db, group, slug
        self.ingest = IngestService(db, TIMING)
        self.seq = 0
        self.t = datetime.now(UTC) - timedelta(minutes=30)

    @property
    def point(self) -> uuid.UUID:
        return self.group.points["m1"]

    async def gateway(self) -> str:
        return str(await self.q("SELECT code FROM gateway"))

    async def q(self, sql: str, **params: object) -> object:
        async with self.db.tenant(self.group.tenant_id) as conn:
            return await conn.scalar(sa.text(sql), params)

    async def rows(self, sql: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
        async with self.db.tenant(self.group.tenant_id) as conn:
            return list((await conn.execute(sa.text(sql), params)).all())

    async def read(self, total: str, supply: str = "on", **kw: object) -> None:
        """A reading one minute after the last, as the gateway would send it."""
        self.seq += 1
        self.t += timedelta(minutes=1)
        reading = Reading.model_validate(
            {"device": "m1", "measured_at": self.t, "total": total, "supply": supply, **kw}
        )
        gw = await self.gateway()
        batch = TelemetryBatch(
            gateway=gw, boot_id="b", seq=self.seq, sent_at=self.t, readings=(reading,)
        )
        await self.ingest.store_telemetry(gw, batch, datetime.now(UTC))

    async def commands(self) -> list[tuple[str, str]]:
        rows = await self.rows("SELECT action, state FROM device_command ORDER BY created_at")
        return [(r[0], r[1]) for r in rows]

    async def twin(self) -> tuple[object, ...]:
        rows = await self.rows(
            "SELECT desired, reported, desired_keep, reported_keep FROM supply_twin"
        )
        return tuple(rows[0]) if rows else ()

    async def events(self) -> list[str]:
        return [str(r[0]) for r in await self.rows("SELECT kind FROM control_event ORDER BY at")]

    async def sell(self, amount: str, key: str) -> None:
        who = Principal(
            self.group.tenant_id,
            self.group.operator_id,
            "admin",
            frozenset({"sale.create"}),
        )
        req = SaleRequest(self.group.accounts["m1"], Decimal(amount), "cash")
        await sell_credit(self.db, who, req, key, datetime.now(UTC), TIMING)


async def shop(db: Database, balance: str = "10.00") -> Shop:
    spec = group_spec(balance=balance)
    spec.max_rate = Decimal(10_000)
    return Shop(db, await seed_group(db, spec), spec.slug)


async def test_exhaustion_trips_and_a_top_up_supersedes_the_trip_in_flight(
    db: Database, mqtt_url: str, topic_prefix: str
) -> None:
    s = await shop(db)
    await s.read("100.00")
    await s.read("109.00")  # ¥1.00 left: on
    assert await s.commands() == []
    await s.read("111.00")  # ¥-1.00: exhausted, cut
    assert await s.commands() == [("trip", "queued")]
    assert await s.twin() == ("off", "on", None, None)

    topics = Topics(topic_prefix)
    gw = await s.gateway()
    async with aiomqtt.Client("127.0.0.1", int(mqtt_url.rsplit(":", 1)[1])) as sub:
        await sub.subscribe(topics.down(gw, DownKind.CMD), qos=1)
        dispatcher = Dispatcher(db, mqtt_url, topics, TIMING)
        async with aiomqtt.Client("127.0.0.1", int(mqtt_url.rsplit(":", 1)[1])) as pub:
            assert await dispatcher.dispatch(pub, s.group.tenant_id) == 1
        async with asyncio.timeout(5):
            msg = await anext(sub.messages)
    trip = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
    assert trip["action"] == "trip"
    assert await s.commands() == [("trip", "sent")]

    await s.sell("20.00", "race-1")  # lands while the trip is in flight
    assert await s.commands() == [("trip", "superseded"), ("close", "queued")]
    assert await s.twin() == ("on", "on", None, None)

    close_id = await s.q("SELECT id FROM device_command WHERE action = 'close'")
    trip_id = uuid.UUID(trip["id"])
    t1 = datetime.now(UTC)
    async with db.tenant(s.group.tenant_id) as conn:
        # the trip had already reached the meter: its late ack changes no command...
        late = await apply_ack(conn, trip_id, AckStatus.OK, {}, SupplyState.OFF, t1)
    assert late is False
    assert await s.commands() == [("trip", "superseded"), ("close", "queued")]
    assert (await s.twin())[1] == "off"  # ...but the meter's word is news
    async with db.tenant(s.group.tenant_id) as conn:
        done = await apply_ack(
            conn, close_id, AckStatus.OK, {}, SupplyState.ON, t1 + timedelta(seconds=1)
        )
        again = await apply_ack(
            conn, close_id, AckStatus.OK, {}, SupplyState.ON, t1 + timedelta(seconds=2)
        )
        stale = await apply_ack(conn, trip_id, AckStatus.OK, {}, SupplyState.OFF, t1)
    assert done is True and again is False and stale is False
    assert await s.commands() == [("trip", "superseded"), ("close", "acked")]
    assert await s.twin() == ("on", "on", None, None)  # ends supplied
    assert await s.events() == ["supply_cut", "supply_restored"]


async def test_an_offline_gateway_gets_nothing_and_converges_with_a_fresh_command(
    db: Database, mqtt_url: str, topic_prefix: str
) -> None:
    s = await shop(db)
    gw = await s.gateway()
    now = datetime.now(UTC)
    await s.read("100.00")
    await s.read("111.00")  # exhausted: a trip is queued, and the gateway goes away
    await s.ingest.gateway_presence(gw, False, now - timedelta(minutes=1), None)
    assert await s.commands() == [("trip", "queued")]
    stale_id = await s.q("SELECT id FROM device_command")

    topics = Topics(topic_prefix)
    port = int(mqtt_url.rsplit(":", 1)[1])
    async with aiomqtt.Client("127.0.0.1", port) as sub:
        await sub.subscribe(topics.down(gw, DownKind.CMD), qos=1)
        # the dispatcher's clock an hour on: what it does meanwhile, and what it finds then
        now -= timedelta(hours=1)
        async with db.tenant(s.group.tenant_id) as conn:
            await conn.execute(
                sa.text(
                    "UPDATE device_command SET created_at = created_at - interval '1 hour', "
                    "deadline = deadline - interval '1 hour'"
                )
            )
        hour_later = Dispatcher(db, mqtt_url, topics, TIMING, clock=lambda: now)
        async with aiomqtt.Client("127.0.0.1", port) as pub:
            assert await hour_later.dispatch(pub, s.group.tenant_id) == 0  # offline: held
            hour_later.clock = lambda: now + timedelta(hours=1)
            assert await hour_later.dispatch(pub, s.group.tenant_id) == 0
            assert await s.commands() == [("trip", "expired")]
            # back online: one fresh trip for the state desired now, never the stale one
            await s.ingest.gateway_presence(gw, True, datetime.now(UTC), None)
            assert await s.commands() == [("trip", "expired"), ("trip", "queued")]
            hour_later.clock = lambda: datetime.now(UTC)
            assert await hour_later.dispatch(pub, s.group.tenant_id) == 1
        async with asyncio.timeout(5):
            msg = await anext(sub.messages)
        got = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
        assert got["action"] == "trip" and got["id"] != str(stale_id)
        assert datetime.fromisoformat(got["deadline"]) > datetime.now(UTC)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await anext(sub.messages)  # nothing else: the stale trip never went out


async def test_top_up_while_offline_needs_no_command_at_all(db: Database) -> None:
    s = await shop(db)
    gw = await s.gateway()
    now = datetime.now(UTC)
    await s.read("100.00")
    await s.read("111.00")
    await s.ingest.gateway_presence(gw, False, now - timedelta(minutes=1), None)
    async with db.tenant(s.group.tenant_id) as conn:
        assert await expire_overdue(conn, now + timedelta(hours=1)) == 1
    await s.sell("50.00", "while-away")  # desired on again; the meter never went off
    await s.ingest.gateway_presence(gw, True, datetime.now(UTC), None)
    assert await s.commands() == [("trip", "expired")]
    assert await s.twin() == ("on", "on", None, None)


async def test_notice_period_then_the_sweep_cuts(db: Database) -> None:
    s = await shop(db)
    async with db.tenant(s.group.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE site SET notice_minutes = 60"))
    await s.read("100.00")
    await s.read("111.00")
    assert await s.commands() == []
    assert await s.events() == ["arrears_notice"]
    recheck = await s.q("SELECT recheck_at FROM control_state")
    assert isinstance(recheck, datetime)
    async with db.tenant(s.group.tenant_id) as conn:
        early = await sweep_tenant(conn, s.group.tenant_id, recheck - timedelta(seconds=1), TIMING)
    assert early.commands == 0
    async with db.tenant(s.group.tenant_id) as conn:
        due = await sweep_tenant(conn, s.group.tenant_id, recheck, TIMING)
    assert due.commands == 1
    assert await s.commands() == [("trip", "queued")]
    assert await s.events() == ["arrears_notice", "supply_cut"]


async def test_low_balance_alarms_once_per_crossing(db: Database) -> None:
    s = await shop(db, balance="30.00")
    async with db.tenant(s.group.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE service_point SET alarm1 = 20, alarm2 = 5"))
    for total in ["100", "105", "111", "112", "126", "127"]:
        await s.read(total)
    # 25 → 19 (level 1) → 18 → 4 (level 2) → 3
    assert await s.events() == ["low_balance_1", "low_balance_2"]
    await s.sell("30.00", "refill")  # 33: both re-armed
    await s.read("142")  # 18: level 1 again
    assert await s.events() == ["low_balance_1", "low_balance_2", "low_balance_1"]


# --- operators -------------------------------------------------------------------------


async def test_trip_needs_arrears_or_an_override_and_is_audited(
    db: Database, http: httpx.AsyncClient
) -> None:
    s = await shop(db)
    auth = await admin_auth(http, s.slug)
    url = f"/api/v1/service-points/{s.point}/control"
    refused = await http.post(url, json={"action": "trip", "reason": "dunning"}, headers=auth)
    assert refused.status_code == 409
    assert "not in arrears" in refused.json()["detail"]
    assert "live balance 10.00" in refused.json()["detail"]
    assert await s.commands() == []

    ok = await http.post(
        url,
        json={"action": "trip", "reason": "unsafe wiring reported", "override": True},
        headers=auth,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["supply"] == "off"
    assert await s.commands() == [("trip", "queued")]
    origin = await s.q("SELECT origin FROM device_command")
    assert origin == "operator:admin"
    audit = await s.rows("SELECT action, detail FROM audit_event WHERE action LIKE 'control.%'")
    assert [a[0] for a in audit] == ["control.trip"]
    assert audit[0][1]["reason"] == "unsafe wiring reported"
    assert audit[0][1]["balance"] == "10.00"

    view = (await http.get(url, headers=auth)).json()
    assert view["balance"] == "10.00" and view["in_arrears"] is False
    assert view["override"]["supply"] == "off" and view["decision"]["supply"] == "off"
    assert view["twin"]["desired"] == "off"

    back = await http.post(url, json={"action": "restore", "reason": "fixed"}, headers=auth)
    assert back.status_code == 200 and back.json()["supply"] == "on"
    assert await s.commands() == [("trip", "superseded"), ("close", "queued")]


async def test_trip_of_a_point_in_arrears_is_allowed(db: Database, http: httpx.AsyncClient) -> None:
    s = await shop(db)
    async with db.tenant(s.group.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE site SET notice_minutes = 1440"))
    await s.read("100.00")
    await s.read("112.00")  # ¥-2.00, in the notice period: still on
    assert await s.commands() == []
    auth = await admin_auth(http, s.slug)
    url = f"/api/v1/service-points/{s.point}/control"
    view = (await http.get(url, headers=auth)).json()
    assert view["in_arrears"] is True and view["arrears"] == "2.00"
    r = await http.post(url, json={"action": "trip", "reason": "dunning visit"}, headers=auth)
    assert r.status_code == 200 and r.json()["supply"] == "off"
    assert await s.commands() == [("trip", "queued")]
    await s.sell("10.00", "paid-up")  # the arrears trip ends once paid
    assert await s.commands() == [("trip", "superseded"), ("close", "queued")]


async def test_keep_power_refuses_cuts_in_the_cloud(db: Database, http: httpx.AsyncClient) -> None:
    s = await shop(db)
    await s.read("100.00")
    auth = await admin_auth(http, s.slug)
    url = f"/api/v1/service-points/{s.point}/control"
    r = await http.post(
        url, json={"action": "keep_power_on", "reason": "dialysis patient"}, headers=auth
    )
    assert r.status_code == 200, r.text
    assert await s.commands() == [("keep_power_on", "queued")]
    await s.read("120.00")  # ¥-10.00: would be cut
    assert await s.commands() == [("keep_power_on", "queued")]
    trip = await http.post(
        url, json={"action": "trip", "reason": "x" * 5, "override": True}, headers=auth
    )
    assert trip.status_code == 409 and "keep-power" in trip.json()["detail"]
    view = (await http.get(url, headers=auth)).json()
    assert "keep-power" in view["decision"]["reason"]
    off = await http.post(url, json={"action": "keep_power_off", "reason": "moved"}, headers=auth)
    assert off.status_code == 200 and off.json()["supply"] == "off"
    # keep-power off reaches the meter before the trip does
    assert await s.commands() == [
        ("keep_power_on", "superseded"),  # never reached the meter
        ("keep_power_off", "queued"),
        ("trip", "queued"),
    ]


async def test_site_wide_control_checks_each_point(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec(meters=3)
    group = await seed_group(db, spec)
    s = Shop(db, group, spec.slug)
    await s.read("100.00")
    await s.read("115.00")  # m1 in arrears (its notice: none, so it is already cut)
    auth = await admin_auth(http, spec.slug)
    r = await http.post(
        f"/api/v1/sites/{group.site_id}/control",
        json={"action": "keep_power_on", "reason": "typhoon warning"},
        headers=auth,
    )
    assert r.status_code == 200 and all(p["done"] for p in r.json()) and len(r.json()) == 3
    r = await http.post(
        f"/api/v1/sites/{group.site_id}/control",
        json={"action": "trip", "reason": "evacuation"},
        headers=auth,
    )
    assert [p["done"] for p in r.json()] == [False, False, False]
    assert all("keep-power" in p["message"] for p in r.json())


async def test_bad_control_requests(db: Database, http: httpx.AsyncClient) -> None:
    s = await shop(db)
    other = await shop(db)
    auth = await admin_auth(http, s.slug)
    url = f"/api/v1/service-points/{s.point}/control"
    foreign = f"/api/v1/service-points/{other.point}/control"
    assert (
        await http.post(
            foreign, json={"action": "trip", "reason": "abc", "override": True}, headers=auth
        )
    ).status_code == 404
    assert (await http.get(foreign, headers=auth)).status_code == 404
    assert (
        await http.post(
            f"/api/v1/sites/{other.group.site_id}/control",
            json={"action": "trip", "reason": "abc"},
            headers=auth,
        )
    ).status_code == 404
    assert (await http.post(url, json={"action": "trip"}, headers=auth)).status_code == 422
    assert (
        await http.post(url, json={"action": "nuke", "reason": "abc"}, headers=auth)
    ).status_code == 422
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    r = await http.post(
        url, json={"action": "keep_power_on", "reason": "abc", "until": past}, headers=auth
    )
    assert r.status_code == 422 and "not in the future" in r.json()["detail"]
    r = await http.post(url, json={"action": "keep_power_off", "reason": "abc"}, headers=auth)
    assert r.status_code == 409
    assert await s.commands() == [] and await other.commands() == []

    # an operator without control.trip
    async with db.tenant(s.group.tenant_id) as conn:
        role = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO role (id, tenant_id, name, permissions) "
                "VALUES (:id, :t, 'cashier', ARRAY['registry.view', 'sale.create'])"
            ),
            {"id": role, "t": s.group.tenant_id},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO operator (id, tenant_id, username, display_name, password_hash, "
                "role_id, active) VALUES (gen_random_uuid(), :t, 'cashier', 'Cashier', :h, "
                ":r, true)"
            ),
            {"t": s.group.tenant_id, "h": hash_password("cashier-pw"), "r": role},
        )
    token = await http.post(
        "/api/v1/auth/token",
        json={"tenant": s.slug, "username": "cashier", "password": "cashier-pw"},
    )
    cashier = {"authorization": f"Bearer {token.json()['access_token']}"}
    r = await http.post(
        url, json={"action": "trip", "reason": "abc", "override": True}, headers=cashier
    )
    assert r.status_code == 403 and "control.trip" in r.json()["detail"]


# --- meter-controlled points --------------------------------------------------------------


async def test_meter_controlled_top_up_is_a_recharge_with_the_next_purchase_count(
    db: Database,
) -> None:
    s = await shop(db)
    async with db.tenant(s.group.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE service_point SET control_mode = 'meter', alarm1 = 10, alarm2 = 3")
        )
    await s.sell("30.00", "no-count-yet")  # the meter's purchase count is not known yet
    assert await s.commands() == []
    orders = await s.rows("SELECT kind FROM work_order")
    assert [o[0] for o in orders] == ["recharge_unknown_count"]

    await s.read("100.00", meter_balance=Decimal("12.00"), purchase_count=7)
    # the meter's own balance: level 1; its purchase count is mirrored from its readings
    await s.read("103.00", meter_balance=Decimal("9.00"), purchase_count=7)
    assert await s.events() == ["low_balance_1"]
    assert await s.commands() == []  # the meter decides its supply
    assert await s.q("SELECT meter_balance FROM control_state") == Decimal("9.00")
    assert await s.q("SELECT purchase_count FROM control_state") == 7
    await s.sell("50.00", "second")
    rows = await s.rows("SELECT action, params, deadline - created_at FROM device_command")
    assert [(r[0], r[1]["amount"], r[1]["purchase_count"]) for r in rows] == [
        ("recharge", "50.00", "8")
    ]
    assert rows[0][2] == TIMING.recharge_deadline
    command = await s.q("SELECT id FROM device_command")
    async with db.tenant(s.group.tenant_id) as conn:
        await apply_ack(conn, command, AckStatus.OK, {}, None, datetime.now(UTC))  # type: ignore[arg-type]
    assert await s.q("SELECT purchase_count FROM control_state") == 8
    await s.sell("5.00", "third")
    counts = await s.rows(
        "SELECT params->>'purchase_count' FROM device_command ORDER BY created_at"
    )
    assert [c[0] for c in counts] == ["8", "9"]
    await s.sell("6.00", "fourth")  # while 9 is on its way: 10
    counts = await s.rows(
        "SELECT params->>'purchase_count' FROM device_command ORDER BY created_at"
    )
    assert [c[0] for c in counts] == ["8", "9", "10"]
    # an undeliverable recharge becomes a work order; the money stays in the wallet
    async with db.tenant(s.group.tenant_id) as conn:
        assert await expire_overdue(conn, datetime.now(UTC) + timedelta(days=2)) == 2
    orders = await s.rows("SELECT kind, detail FROM work_order ORDER BY created_at, detail")
    assert [o[0] for o in orders] == [
        "recharge_unknown_count",
        "recharge_failed",
        "recharge_failed",
    ]
    assert {o[1]["purchase_count"] for o in orders[1:]} == {"9", "10"}
    assert all(o[1]["status"] == "expired" for o in orders[1:])
    # the next top-up follows the meter's count, not the recharges that never arrived
    await s.sell("7.00", "fifth")
    last = await s.q(
        "SELECT params->>'purchase_count' FROM device_command ORDER BY created_at DESC LIMIT 1"
    )
    assert last == "9"


async def test_a_meter_controlled_points_trip_ends_with_the_relay_closed_again(
    db: Database, http: httpx.AsyncClient
) -> None:
    """An operator's trip of a meter-controlled point until a time: when it expires the
    meter gets a close (it would never close a remotely opened relay by itself) and the
    cloud wants nothing of its supply any more; a meter whose own balance is in arrears at
    the end is left tripped. Once released, nothing more is sent."""
    s = await shop(db)
    async with db.tenant(s.group.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE service_point SET control_mode = 'meter'"))
    await s.read("100.00", meter_balance=Decimal("20.00"), purchase_count=3)
    auth = await admin_auth(http, s.slug)
    until = datetime.now(UTC) + timedelta(minutes=10)
    url = f"/api/v1/service-points/{s.point}/control"
    body = {"action": "trip", "reason": "wiring check", "override": True}
    r = await http.post(url, json={**body, "until": until.isoformat()}, headers=auth)
    assert r.status_code == 200, r.text
    assert await s.commands() == [("trip", "queued")]
    async with db.tenant(s.group.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE device_command SET state = 'acked', finished_at = now()")
        )
        await conn.execute(sa.text("UPDATE supply_twin SET reported = 'off'"))
        assert (
            await sweep_tenant(conn, s.group.tenant_id, until - timedelta(minutes=1), TIMING)
        ).commands == 0
        assert (
            await sweep_tenant(conn, s.group.tenant_id, until + timedelta(seconds=1), TIMING)
        ).commands == 1
    assert await s.commands() == [("trip", "acked"), ("close", "queued")]
    assert (await s.twin())[0] is None  # the meter decides again
    async with db.tenant(s.group.tenant_id) as conn:
        later = until + timedelta(minutes=5)
        assert (await sweep_tenant(conn, s.group.tenant_id, later, TIMING)).commands == 0

    # tripped again, and by the end the meter's own credit has run out: it stays off
    r = await http.post(
        url, json={**body, "until": (later + timedelta(minutes=10)).isoformat()}, headers=auth
    )
    assert r.status_code == 200, r.text
    await s.read("130.00", meter_balance=Decimal("-1.00"), purchase_count=3, supply="off")
    async with db.tenant(s.group.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "UPDATE device_command SET state = 'acked', finished_at = now() "
                "WHERE state = 'queued'"
            )
        )
        end = later + timedelta(minutes=11)
        assert (await sweep_tenant(conn, s.group.tenant_id, end, TIMING)).commands == 0
    # (the first close was made at the simulated expiry, after the second trip's wall clock)
    assert sorted(c[0] for c in await s.commands()) == ["close", "trip", "trip"]
    assert (await s.twin())[0] is None


async def test_a_close_only_meter_gets_close_allowed_and_the_twin_waits_for_the_tenant(
    db: Database,
) -> None:
    s = await shop(db)
    async with db.tenant(s.group.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE device SET close_only = true"))
    await s.read("100.00")
    await s.read("111.00")
    await s.read("111.00", supply="off")  # tripped
    trip = await s.q("SELECT id FROM device_command WHERE action = 'trip'")
    async with db.tenant(s.group.tenant_id) as conn:
        await apply_ack(conn, trip, AckStatus.OK, {}, SupplyState.OFF, s.t)  # type: ignore[arg-type]
    await s.sell("20.00", "pay")
    assert await s.commands() == [("trip", "acked"), ("close_allowed", "queued")]
    allowed = await s.q("SELECT id FROM device_command WHERE action = 'close_allowed'")
    async with db.tenant(s.group.tenant_id) as conn:
        # the meter allows closing; its relay stays open until the tenant presses the button
        await apply_ack(
            conn, allowed, AckStatus.OK, {}, SupplyState.OFF, s.t + timedelta(seconds=1)
        )  # type: ignore[arg-type]
        later = datetime.now(UTC) + timedelta(hours=1)
        assert (await sweep_tenant(conn, s.group.tenant_id, later, TIMING)).commands == 0
    await s.read("111.00", supply="off")
    assert await s.commands() == [("trip", "acked"), ("close_allowed", "acked")]
    assert await s.twin() == ("on", "off", None, None)  # waiting for the tenant
    await s.read("111.00", supply="on")  # pressed
    assert await s.twin() == ("on", "on", None, None)
    assert await s.commands() == [("trip", "acked"), ("close_allowed", "acked")]


async def test_console_shows_the_pre_disconnection_check_and_applies_actions(
    db: Database, http: httpx.AsyncClient
) -> None:
    s = await shop(db)
    await console_login(http, s.slug)
    assert f"/console/points/{s.point}" in (await http.get("/console/")).text
    page = await http.get(f"/console/points/{s.point}")
    assert page.status_code == 200
    assert "10.00" in page.text and "in credit" in page.text
    refused = await console_form(
        http, f"/console/points/{s.point}/control", {"action": "trip", "reason": "dunning"}
    )
    assert refused.status_code == 409
    assert "not in arrears: live balance 10.00" in refused.text
    assert await s.commands() == []
    done = await console_form(
        http,
        f"/console/points/{s.point}/control",
        {"action": "trip", "reason": "meter room flooded", "override": "true"},
    )
    assert done.status_code == 200 and "supply off" in done.text
    assert "meter room flooded" in done.text  # the override and the queued command
    assert await s.commands() == [("trip", "queued")]
    other = await shop(db)
    assert (await http.get(f"/console/points/{other.point}")).status_code == 404


async def test_a_meter_that_cannot_report_its_state_is_not_sent_the_same_command_forever(
    db: Database,
) -> None:
    s = await shop(db)
    await s.read("100.00", supply=None)  # type: ignore[arg-type]
    await s.read("111.00", supply=None)  # type: ignore[arg-type]
    # an unknown state is made sure of once (close), then the cut supersedes it
    assert await s.commands() == [("close", "superseded"), ("trip", "queued")]
    trip = await s.q("SELECT id FROM device_command WHERE action = 'trip'")
    async with db.tenant(s.group.tenant_id) as conn:
        await apply_ack(conn, trip, AckStatus.OK, {}, None, datetime.now(UTC))  # type: ignore[arg-type]
        later = datetime.now(UTC) + timedelta(hours=1)
        assert (await sweep_tenant(conn, s.group.tenant_id, later, TIMING)).commands == 0
    assert await s.commands() == [("close", "superseded"), ("trip", "acked")]
    # a failed one is retried, after the backoff
    async with db.tenant(s.group.tenant_id) as conn:
        await conn.execute(
            sa.text("UPDATE device_command SET state = 'failed' WHERE id = :i"), {"i": trip}
        )
        assert (await sweep_tenant(conn, s.group.tenant_id, later, TIMING)).commands == 1
    assert await s.commands() == [("close", "superseded"), ("trip", "failed"), ("trip", "queued")]


async def test_top_ups_racing_readings_of_a_tripped_meter_never_deadlock(db: Database) -> None:
    """Ingest, top-ups and operators take control state before the twin, everywhere."""
    s = await shop(db, balance="0.00")
    await s.read("100.00")
    total = Decimal("100.00")
    for i in range(8):
        await s.read(str(total), supply="off")
        total += Decimal("0.01") if i % 2 else Decimal(0)
        # a reading (reported off) and a top-up of the same tripped point, at once
        await asyncio.gather(s.read(str(total), supply="off"), s.sell("1.00", f"race-{i}"))
    assert await s.q("SELECT count(*) FROM counter_sale") == 8


async def test_acks_have_a_lane_of_their_own(
    db: Database, mqtt_url: str, topic_prefix: str, shared_group: str | None
) -> None:
    """The ack lane commits an ack while the uplink lane is busy (here: not even running)."""
    s = await shop(db)
    await s.read("100.00")
    await s.read("111.00")
    trip = await s.q("SELECT id FROM device_command WHERE action = 'trip'")
    gw = await s.gateway()
    topics = Topics(topic_prefix)
    acks, uplink = lanes(s.ingest, mqtt_url, topics, shared_group)
    assert acks.kinds == (UpKind.ACK,) and UpKind.ACK not in (uplink.kinds or ())
    task = asyncio.create_task(acks.run())
    try:
        async with asyncio.timeout(10):
            await acks.ready.wait()
        port = int(mqtt_url.rsplit(":", 1)[1])
        async with aiomqtt.Client("127.0.0.1", port) as pub:
            ack = Ack.model_validate(
                {
                    "id": trip,
                    "gateway": gw,
                    "status": "ok",
                    "reported_supply": "off",
                    "at": datetime.now(UTC),
                }
            )
            await pub.publish(topics.up(gw, UpKind.ACK), dump(ack), qos=1)
            batch = TelemetryBatch(
                gateway=gw,
                boot_id="b",
                seq=99,
                sent_at=datetime.now(UTC),
                readings=(Reading(device="m1", measured_at=datetime.now(UTC), total=Decimal(112)),),
            )
            await pub.publish(topics.up(gw, UpKind.TELEMETRY), dump(batch), qos=1)

        async def acked() -> bool:
            return await s.commands() == [("trip", "acked")]

        await wait_for(acked, 10, "the ack")
        await asyncio.sleep(0.3)
        assert await s.q("SELECT count(*) FROM reading") == 2  # telemetry is the other lane's
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
