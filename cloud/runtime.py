"""Wiring for the cloud processes: resolve embedded or real services, build the bundle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
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


async def serve_http(app: FastAPI, host: str, port: int, sock: socket.socket | None = None) -> None:
    """Serve ``app`` on host:port, or on ``sock`` (a listening socket several processes
    share: ``prepay api --processes N``)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = _Server(config)
    try:
        await server.serve(sockets=[sock] if sock is not None else None)
    except asyncio.CancelledError:
        server.should_exit = True
        raise


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for ``prepay api --processes N``: made before the
    processes fork, so the kernel spreads the connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_processes(n: int, child: Callable[[], int]) -> int:
    """Fork ``n`` processes each running ``child()``; SIGTERM/SIGINT to this one stops
    them all. Returns the first non-zero exit code (0 when all ended cleanly). One that
    dies stops the others: a supervisor (systemd) restarts the service whole."""
    pids: list[int] = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                code = child()
            finally:
                os._exit(code)
        pids.append(pid)

    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    left = set(pids)
    while left:
        pid, status = os.wait()
        left.discard(pid)
        rc = os.waitstatus_to_exitcode(status)
        if stopping and rc == -signal.SIGTERM:  # stopped by us: a clean end
            continue
        if rc and not code:
            code = rc if rc > 0 else 128 - rc
            stop(signal.SIGTERM, None)
    return code
