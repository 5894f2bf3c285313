"""A benchmark's scratch database on the configured server (made, migrated by the caller,
dropped at the end) and the broker URL, from the same environment as the tests."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from cloud.db import libpq_url


@dataclass(frozen=True)
class ScratchDatabase:
    admin: str  # libpq URL of the server's admin database
    name: str
    url: str  # the scratch database's URL
    mqtt_url: str

    @classmethod
    def create(cls) -> ScratchDatabase:
        admin = libpq_url(os.environ.get("PREPAY_DATABASE_URL") or os.environ["DATABASE_URL"])
        mqtt_url = os.environ.get("PREPAY_MQTT_URL") or os.environ.get(
            "MQTT_URL", "mqtt://127.0.0.1:1883"
        )
        name = f"prepay_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = make_url(admin).set(database=name).render_as_string(hide_password=False)
        return cls(admin, name, url, mqtt_url)

    def drop(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )
