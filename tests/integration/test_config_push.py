"""The cloud pushes a versioned, retained config; an agent that connects later applies it;
ingest records the version the gateway reports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.ingest.consumer import IngestConsumer
from cloud.ingest.service import IngestService
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings
from contract.mqtt import Topics
from gateway_agent.agent import Agent
from gateway_agent.config import AgentConfig
from meter_profiles.loader import load_profiles
from tests.conftest import admin_auth, api_client, group_spec


@pytest.fixture
async def http(db_url: str, mqtt_url: str, topic_prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = CloudSettings(database_url=db_url, mqtt_url=mqtt_url, mqtt_prefix=topic_prefix)
    async with api_client(settings, db_url) as client:
        yield client


async def test_a_pushed_config_reaches_a_gateway_that_connects_later(
    db: Database,
    http: httpx.AsyncClient,
    mqtt_url: str,
    topic_prefix: str,
    shared_group: str | None,
    tmp_path: Path,
) -> None:
    spec = group_spec()
    group = await seed_group(db, spec)
    auth = await admin_auth(http, spec.slug)
    gw = spec.gateway_code

    bad = await http.post(
        f"/api/v1/gateways/{gw}/config", json={"config": {"gateway": "x"}}, headers=auth
    )
    assert bad.status_code == 422 and "gateway" in bad.json()["detail"]
    missing = await http.post(
        "/api/v1/gateways/gw-nope/config", json={"config": {"heartbeat_s": 5}}, headers=auth
    )
    assert missing.status_code == 404
    first = await http.post(
        f"/api/v1/gateways/{gw}/config", json={"config": {"heartbeat_s": 30}}, headers=auth
    )
    second = await http.post(
        f"/api/v1/gateways/{gw}/config",
        json={"config": {"heartbeat_s": 0.3, "poll_interval_s": 7}},
        headers=auth,
    )
    assert (first.status_code, first.json()["version"]) == (202, 1)
    assert (second.status_code, second.json()["version"]) == (202, 2)

    consumer = IngestConsumer(
        IngestService(db, CommandTiming()), mqtt_url, Topics(topic_prefix), shared_group
    )
    agent = Agent(
        AgentConfig(
            gateway=gw, mqtt_url=mqtt_url, mqtt_prefix=topic_prefix, data_dir=tmp_path, buses=[]
        ),
        load_profiles(),
    )
    tasks = [asyncio.create_task(consumer.run())]
    await asyncio.wait_for(consumer.ready.wait(), 10)
    tasks.append(asyncio.create_task(agent.run()))
    try:
        for _ in range(100):  # the retained version 2 arrives; heartbeats report it
            async with db.tenant(group.tenant_id) as conn:
                row = (
                    await conn.execute(
                        sa.text("SELECT online, config_version, config_pushed FROM gateway")
                    )
                ).one()
            if row.config_version == 2:
                break
            await asyncio.sleep(0.1)
        assert (row.online, row.config_version, row.config_pushed) == (True, 2, 2)
        assert agent.cfg.poll_interval_s == 7
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
