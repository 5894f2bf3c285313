"""Pushing a gateway's configuration: versioned, retained on its ``down/config`` topic so a
gateway that is offline gets it when it connects. The gateway validates it, applies it
without losing its queue and reports the version it runs (heartbeats, ``config_applied``
/ ``config_rejected`` events, which ingest records on the gateway row)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from cloud import audit
from cloud.auth import Principal
from cloud.db import Database
from cloud.errors import Invalid, NotFound
from cloud.mqtt import client
from contract.mqtt import CONFIG_PUSHABLE, ConfigPush, DownKind, Topics, dump


@dataclass(frozen=True)
class Pushed:
    gateway: str
    version: int
    push_id: uuid.UUID


async def push_config(
    db: Database,
    who: Principal,
    gateway: str,
    config: dict[str, Any],
    now: datetime,
    mqtt_url: str,
    topics: Topics,
) -> Pushed:
    who.require("gateway.configure")
    foreign = sorted(set(config) - CONFIG_PUSHABLE)
    if foreign:
        raise Invalid(f"a gateway does not take these from the cloud: {', '.join(foreign)}")
    if not config:
        raise Invalid("an empty config changes nothing")
    async with db.tenant(who.tenant_id) as conn:
        version = await conn.scalar(
            sa.text(
                "UPDATE gateway SET config_pushed = config_pushed + 1 WHERE code = :c "
                "RETURNING config_pushed"
            ),
            {"c": gateway},
        )
        if version is None:
            raise NotFound(f"no gateway {gateway}")
        push = ConfigPush(id=uuid.uuid4(), version=int(version), config=config, issued_at=now)
        # published inside the transaction: if the broker is down the version is not spent
        async with client(mqtt_url, f"cloud-config-{push.id.hex[:12]}") as mqtt:
            await mqtt.publish(
                topics.down(gateway, DownKind.CONFIG), dump(push), qos=1, retain=True
            )
        await audit.record(
            conn,
            who.tenant_id,
            who.actor,
            "gateway.config_pushed",
            gateway,
            now,
            {"version": str(version), "id": str(push.id)},
        )
    return Pushed(gateway, int(version), push.id)
