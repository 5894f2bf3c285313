"""The installer's pages: a site's claim codes (issued once and shown once, listed as
waiting / used / revoked, revoked so the gateway cannot use it), a gateway's buses from its
heartbeats, a meter it reports that nobody registered installed from its page, and a
config checked before it is sent. Bad input is refused in Chinese and changes nothing;
another group's claim, gateway or point is not found; without the permission, refused."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa

from cloud.auth import Principal
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.service import Heartbeat, IngestService
from cloud.lifecycle import service as lifecycle
from cloud.registry.commissioning import ClaimRefused, exchange_claim
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from contract.mqtt import Ack, AckStatus, Reading, TelemetryBatch
from tests.conftest import api_client, console_form, console_login, group_spec


@pytest.fixture
async def http(db_url: str, mqtt_url: str, topic_prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = CloudSettings(database_url=db_url, mqtt_url=mqtt_url, mqtt_prefix=topic_prefix)
    async with api_client(settings, db_url) as client:
        yield client


async def test_claim_codes_issued_listed_and_revoked(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    await console_login(http, spec.slug)

    page = await http.get("/console/installer/claims")
    assert page.status_code == 200 and "认领码" in page.text
    bad = await console_form(
        http, "/console/installer/claims", {"site": str(g.site_id), "hours": "abc"}
    )
    assert bad.status_code == 422 and "小时" in bad.text
    nosite = await console_form(http, "/console/installer/claims", {"site": "abc", "hours": "2"})
    assert nosite.status_code == 422 and "请选择站点" in nosite.text
    issued = await console_form(
        http, "/console/installer/claims", {"site": str(g.site_id), "hours": "2"}
    )
    assert issued.status_code == 201
    shown = re.search(
        r'aria-label="新认领码">([0-9A-Z]{4})-([0-9A-Z]{4})-([0-9A-Z]{4})<', issued.text
    )
    assert shown, issued.text
    code = "".join(shown.groups())
    assert "等待使用" in issued.text

    async with db.tenant(g.tenant_id) as conn:
        claim_id = await conn.scalar(
            sa.text("SELECT id FROM gateway_claim WHERE site_id = :s"), {"s": g.site_id}
        )
    revoked = await console_form(
        http, f"/console/installer/claims/{claim_id}/revoke", {"site": str(g.site_id)},
        follow_redirects=True,
    )  # fmt: skip
    assert revoked.status_code == 200 and "已撤销" in revoked.text
    with pytest.raises(ClaimRefused):
        await exchange_claim(db, code, datetime.now(UTC))
    again = await console_form(
        http, f"/console/installer/claims/{claim_id}/revoke", {"site": str(g.site_id)}
    )
    assert again.status_code == 409 and "已使用、已撤销或已过期" in again.text


async def test_claims_of_another_group_or_without_permission(
    db: Database, http: httpx.AsyncClient
) -> None:
    g = await seed_group(db, group_spec())
    other_spec = group_spec()
    other = await seed_group(db, other_spec)
    async with db.tenant(g.tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO gateway_claim (id, tenant_id, site_id, code_hash, expires_at, "
                "created_at, created_by) VALUES (gen_random_uuid(), :t, :s, :h, :e, now(), 'x')"
            ),
            {
                "t": g.tenant_id,
                "s": g.site_id,
                "h": uuid.uuid4().hex,
                "e": datetime.now(UTC) + timedelta(hours=1),
            },
        )
        claim_id = await conn.scalar(sa.text("SELECT id FROM gateway_claim"))
    await console_login(http, other_spec.slug)
    r = await console_form(http, f"/console/installer/claims/{claim_id}/revoke", {"site": ""})
    assert r.status_code == 404
    r = await console_form(
        http, "/console/installer/claims", {"site": str(g.site_id), "hours": "2"}
    )
    assert r.status_code == 404
    page = await http.get(f"/console/installer/claims?site={g.site_id}")
    assert page.status_code == 404 and "未找到" in page.text  # not its own site instead
    assert (await http.get(f"/console/gateways/{group_spec().gateway_code}")).status_code == 404
    async with db.tenant(g.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT revoked_at FROM gateway_claim")) is None
    # an operator whose role lacks gateway.commission
    async with db.tenant(other.tenant_id) as conn:
        await conn.execute(sa.text("UPDATE role SET permissions = '{registry.view}'"))
    r = await http.get("/console/installer/claims")
    assert r.status_code == 403


async def test_a_gateways_buses_an_unregistered_meter_installed_and_a_config_checked(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    other_spec = group_spec()
    other = await seed_group(db, other_spec)
    ingest = IngestService(db, CommandTiming())
    now = datetime.now(UTC)
    await ingest.gateway_presence(
        spec.gateway_code, True, now, 3,
        Heartbeat({"rs485-1": {"transactions": 1234, "timeouts": 7, "errors": 1,
                               "utilisation": 0.42}}, 12),
    )  # fmt: skip
    # the seeded meter comes off its point; a meter nobody registered reports
    can = frozenset({"meter.install", "registry.view"})
    admin = Principal(g.tenant_id, g.operator_id, "admin", can, "tenant", frozenset())
    point = g.points["m1"]
    await lifecycle.remove(db, admin, point, Decimal("5.000"), now - timedelta(hours=2),
                           CommandTiming())  # fmt: skip
    batch = TelemetryBatch(
        gateway=spec.gateway_code, boot_id="b1", seq=1, sent_at=now,
        readings=(Reading(device="new-7", measured_at=now - timedelta(minutes=5),
                          total=Decimal("42.500")),),
    )  # fmt: skip
    await ingest.store_telemetry(spec.gateway_code, batch, now)

    await console_login(http, spec.slug)
    page = await http.get(f"/console/gateways/{spec.gateway_code}")
    assert page.status_code == 200
    assert "rs485-1" in page.text and "1234" in page.text and "42%" in page.text
    assert "登记并安装 new-7" in page.text

    url = f"/console/gateways/{spec.gateway_code}/install"
    fields = {"key": "new-7", "channel": "1", "profile": "acrel-ddsy1352-modbus", "bus": "rs485-1",
              "address": "7"}  # fmt: skip
    bad = await console_form(http, url, {**fields, "point": "nope"})
    assert bad.status_code == 422 and "计量点" in bad.text
    theirs = await console_form(http, url, {**fields, "point": str(other.points["m1"])})
    assert theirs.status_code == 404
    done = await console_form(http, url, {**fields, "point": str(point)}, follow_redirects=True)
    assert done.status_code == 200 and "已安装" in done.text, done.text
    async with db.tenant(g.tenant_id) as conn:
        register = await conn.scalar(
            sa.text(
                "SELECT install_register FROM binding WHERE service_point_id = :p "
                "AND removed_at IS NULL"
            ),
            {"p": point},
        )
    assert register == Decimal("42.500")

    cfg = f"/console/gateways/{spec.gateway_code}/config"
    for text, words in (
        ("{not json", "JSON"),
        ('{"broker": "x"}', "不从云端接收"),
        ('{"poll_interval_s": 0}', "poll_interval_s"),
        ("[]", "JSON 对象"),
    ):
        r = await console_form(http, cfg, {"config": text})
        assert r.status_code == 422 and words in r.text, (text, r.text[-800:])
    async with db.tenant(g.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT config_pushed FROM gateway")) == 0
    ok = await console_form(http, cfg, {"config": '{"poll_interval_s": 30}'}, follow_redirects=True)
    assert ok.status_code == 200 and "已发送" in ok.text
    async with db.tenant(g.tenant_id) as conn:
        assert await conn.scalar(sa.text("SELECT config_pushed FROM gateway")) == 1
    foreign = await console_form(
        http, f"/console/gateways/{other_spec.gateway_code}/config", {"config": "{}"}
    )
    assert foreign.status_code == 404


async def test_test_this_meter_reads_it_now_and_shows_the_answer(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    g = await seed_group(db, spec)
    other_spec = group_spec()
    await seed_group(db, other_spec)
    await console_login(http, spec.slug)
    url = f"/console/gateways/{spec.gateway_code}/test"
    bad = await console_form(http, url, {"key": "m1", "channel": "x"})
    assert bad.status_code == 422 and "通道" in bad.text
    assert (await console_form(http, url, {"key": "nope", "channel": "1"})).status_code == 404
    foreign = f"/console/gateways/{other_spec.gateway_code}/test"
    assert (await console_form(http, foreign, {"key": "m1", "channel": "1"})).status_code == 404
    asked = await console_form(http, url, {"key": "m1", "channel": "1"}, follow_redirects=True)
    assert asked.status_code == 200 and "等待发送到网关" in asked.text
    assert 'hx-trigger="every 2s"' in asked.text
    test_id = uuid.UUID(str(asked.url).rsplit("/", 1)[1])
    async with db.tenant(g.tenant_id) as conn:
        action = await conn.scalar(
            sa.text("SELECT action FROM device_command WHERE id = :id"), {"id": test_id}
        )
    assert action == "read_now"

    # the gateway read the meter and answered
    ingest = IngestService(db, CommandTiming())
    now = datetime.now(UTC)
    batch = TelemetryBatch(
        gateway=spec.gateway_code, boot_id="b1", seq=1, sent_at=now,
        readings=(Reading(device="m1", measured_at=now, total=Decimal("321.250")),),
    )  # fmt: skip
    await ingest.store_telemetry(spec.gateway_code, batch, now + timedelta(seconds=1))
    ack = Ack(id=test_id, gateway=spec.gateway_code, status=AckStatus.OK, detail="read", at=now)
    await ingest.store_ack(spec.gateway_code, ack, now + timedelta(seconds=1))
    frag = await http.get(str(asked.url), headers={"HX-Request": "true"})
    assert frag.status_code == 200 and "表计已应答" in frag.text and "321.250" in frag.text
    assert "hx-trigger" not in frag.text  # done: the page stops asking

    await console_login(http, other_spec.slug)
    assert (await http.get(str(asked.url))).status_code == 404
