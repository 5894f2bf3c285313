"""Wiring for the cloud processes: resolve embedded or real services, build the bundle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import uvicorn
from fastapi import FastAPI

from cloud.api.deps import Services
from cloud.auth import Sessions
from cloud.control.service import CommandTiming
from cloud.db import Database
from cloud.embedded import start_embedded_postgres
from cloud.payments.wechat.settings import PaySettings
from cloud.settings import CloudSettings

log = logging.getLogger(__name__)


def owner_url(settings: CloudSettings, embedded_db: str = "prepay") -> str:
    """The configured PostgreSQL, or an embedded one under the data directory."""
    if settings.database_url:
        return settings.database_url
    log.info("no DATABASE_URL: starting embedded PostgreSQL in %s", settings.data_dir / "pg")
    return start_embedded_postgres(settings.data_dir / "pg", embedded_db)


def timing(settings: CloudSettings) -> CommandTiming:
    return CommandTiming(
        deadline=timedelta(seconds=settings.command_deadline_s),
        retry=timedelta(seconds=settings.command_retry_s),
    )


@dataclass
class Wiring:
    settings: CloudSettings
    db: Database
    services: Services

    @classmethod
    def build(
        cls,
        settings: CloudSettings,
        url: str,
        *,
        serves_sessions: bool = False,
        pay: PaySettings | None = None,
    ) -> Wiring:
        """Raises :class:`~cloud.settings.WeakSecret` before connecting anything when the
        session key is weak, or unset where ``serves_sessions``."""
        secret = settings.session_secret(required=serves_sessions)
        db = Database.connect(url, settings.app_database_url, settings.app_role)
        sessions = Sessions(db, secret, settings.session_max_age_s)
        broker = settings.gateway_broker_url or _without_credentials(
            settings.mqtt_url or "mqtt://127.0.0.1:1883"
        )
        services = Services(
            db,
            sessions,
            timing(settings),
            broker,
            settings.mqtt_prefix,
            settings.mqtt_url,
            secure_cookies=settings.environment == "production",
            draw_receipts_ahead=settings.draw_receipts_ahead,
            data_dir=settings.data_dir,
            environment=settings.environment,
            pay_settings=pay or PaySettings(),
        )
        return cls(settings, db, services)


def _without_credentials(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, "", "", ""))


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process's main() owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(app: FastAPI, host: str, port: int) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = _Server(config)
    try:
        await server.serve()
    except asyncio.CancelledError:
        server.should_exit = True
        raise
