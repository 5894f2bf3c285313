"""Commissioning end to end against a real Mosquitto running the shipped config and ACL: a
claim code becomes a gateway credential the broker accepts (after `prepay broker-sync`),
with only that gateway's rights; revoking it locks the gateway out."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import httpx
import pytest

from cloud.db import Database
from cloud.registry.broker_sync import render, write_if_changed
from cloud.registry.commissioning import broker_password_lines
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from contract.mqtt import Topics, UpKind
from tests.conftest import admin_auth, api_client, group_spec
from tests.integration.test_broker_acl import (
    GATEWAYS_PASSWD,
    NOT_AUTHORIZED,
    Broker,
    _code,
    receive_until,
    run_broker,
    token,
)

T = Topics()


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _sync(db: Database, broker: Broker) -> None:
    """What `prepay broker-sync --password-file … --pid-file …` does."""
    text = render(await broker_password_lines(db), None)
    if write_if_changed(broker.directory / GATEWAYS_PASSWD, text):
        broker.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)  # the reload is asynchronous


async def test_a_commissioned_gateway_connects_with_only_its_rights_until_revoked(
    db: Database, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    spec = group_spec()
    group = await seed_group(db, spec)
    auth = await admin_auth(http, spec.slug)
    claim = await http.post(f"/api/v1/sites/{group.site_id}/claim-codes", json={}, headers=auth)
    ident = (
        await http.post("/api/v1/gateways/commission", json={"claim": claim.json()["code"]})
    ).json()
    gw, password = ident["gateway"], ident["password"]

    with run_broker(tmp_path) as b:
        await _sync(db, b)
        async with b.cloud() as cloud:
            await cloud.subscribe(T.all_up(), qos=1)
            async with b.gateway(gw, password=password) as g:
                forged = token("forged")
                await g.publish(T.up("G1", UpKind.TELEMETRY), forged, qos=1)  # not its topic
                mine = token("own")
                await g.publish(T.up(gw, UpKind.TELEMETRY), mine, qos=1)
                got = await receive_until(cloud, mine)
                assert forged not in {bytes(m.payload) for m in got if isinstance(m.payload, bytes)}

            revoked = await http.post(f"/api/v1/gateways/{gw}/revoke-credential", headers=auth)
            assert revoked.status_code == 200
            await _sync(db, b)
            with pytest.raises(aiomqtt.MqttCodeError) as refused:
                async with b.gateway(gw, password=password):
                    pass
            assert _code(refused.value) in NOT_AUTHORIZED
