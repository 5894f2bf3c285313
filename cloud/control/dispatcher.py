"""The command dispatcher: publishes queued commands to gateways, retries, expires.

Woken by ``NOTIFY prepay_command`` (payload: the tenant) the instant a service queues a
command, and sweeping every tenant once a second for retries and deadlines. Rows are taken
``FOR UPDATE SKIP LOCKED`` so several dispatchers can run side by side.

A gateway known to be offline (its retained state or last will said so) gets nothing: its
commands wait, expire at their deadline, and when it is back the control sweep converges
its twins with fresh commands for the current desired state, never the stale ones. Every
few seconds the dispatcher also runs that sweep (:func:`cloud.control.service.sweep_tenant`):
decisions that fall due (a notice or friendly period ends, keep-power expires) and twins
that have not converged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import aiomqtt
import psycopg
import sqlalchemy as sa
from prometheus_client import Counter

from cloud.aio import raise_if_cancelled
from cloud.control.service import NOTIFY_CHANNEL, CommandTiming, expire_overdue, sweep_tenant
from cloud.db import Database
from cloud.mqtt import client
from cloud.notify import outbox
from contract.mqtt import Command, CommandAction, DownKind, Topics, dump

log = logging.getLogger(__name__)
DISPATCHED = Counter("prepay_commands_total", "Commands by dispatcher outcome", ["outcome"])

_DUE = sa.text(
    "SELECT c.id, c.action, c.params, c.created_at, c.deadline, c.state, c.sent_at, "
    "c.attempts, g.code AS gateway, d.key AS device, ch.number AS channel "
    "FROM device_command c JOIN gateway g ON g.id = c.gateway_id "
    "JOIN channel ch ON ch.id = c.channel_id JOIN device d ON d.id = ch.device_id "
    "WHERE (c.state = 'queued' OR (c.state = 'sent' AND c.sent_at < :retry_before)) "
    "AND c.deadline > :now AND (g.online OR g.last_seen_at IS NULL) "
    "ORDER BY c.created_at FOR UPDATE OF c SKIP LOCKED LIMIT 500"
)


class Dispatcher:
    def __init__(
        self,
        db: Database,
        mqtt_url: str,
        topics: Topics,
        timing: CommandTiming,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sweep_s: float = 1.0,
        control_every: int = 5,
    ) -> None:
        self.db = db
        self.mqtt_url = mqtt_url
        self.topics = topics
        self.timing = timing
        self.clock = clock
        self.sweep_s = sweep_s
        self.control_every = control_every
        self._sweeps = 0
        self._wake: asyncio.Queue[uuid.UUID | None] = asyncio.Queue()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="dispatcher-listen")
        try:
            while True:
                try:
                    async with client(self.mqtt_url, f"dispatcher-{uuid.uuid4().hex[:8]}") as mqtt:
                        self.ready.set()
                        await self._loop(mqtt)
                except aiomqtt.MqttError as exc:
                    self.ready.clear()
                    log.warning("dispatcher lost the broker (%s); reconnecting", exc)
                    await asyncio.sleep(1.0)
                except Exception:  # the database away (a failover, a killed backend)
                    raise_if_cancelled()
                    self.ready.clear()
                    log.exception("dispatcher failed; starting again in 1 s")
                    await asyncio.sleep(1.0)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _loop(self, mqtt: aiomqtt.Client) -> None:
        await self._sweep(mqtt)
        while True:
            try:
                async with asyncio.timeout(self.sweep_s):  # wait_for can swallow a cancel
                    tenant = await self._wake.get()
            except TimeoutError:
                await self._sweep(mqtt)
                continue
            if tenant is not None:
                await self.dispatch(mqtt, tenant)

    async def _sweep(self, mqtt: aiomqtt.Client) -> None:
        control = self._sweeps % self.control_every == 0
        self._sweeps += 1
        for tenant in await self.db.tenant_ids():
            if control:
                try:
                    async with self.db.tenant(tenant) as conn:
                        await sweep_tenant(conn, tenant, self.clock(), self.timing)
                        await outbox.gateways_offline(conn, tenant, self.clock())
                except Exception:  # one tenant's failure must not stop the others
                    raise_if_cancelled()
                    log.exception("control sweep failed for tenant %s", tenant)
            await self.dispatch(mqtt, tenant)

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.db.app_libpq_url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    await self._wake.put(None)
                    async for note in conn.notifies():
                        with contextlib.suppress(ValueError):
                            await self._wake.put(uuid.UUID(note.payload))
            except psycopg.OperationalError as exc:
                log.warning("dispatcher LISTEN connection lost (%s); retrying", exc)
                await asyncio.sleep(1.0)

    async def dispatch(self, mqtt: aiomqtt.Client, tenant_id: uuid.UUID) -> int:
        """Publish this tenant's due commands; returns how many went out."""
        now = self.clock()
        sent = 0
        async with self.db.tenant(tenant_id) as conn:
            expired = await expire_overdue(conn, now)
            if expired:
                DISPATCHED.labels("expired").inc(expired)
            due = {"retry_before": now - self.timing.retry, "now": now}
            for r in (await conn.execute(_DUE, due)).all():
                if (
                    r.state == "sent"
                    and r.sent_at + self.timing.retry * (2 ** min(r.attempts - 1, 5)) > now
                ):
                    continue  # exponential backoff between re-sends
                cmd = Command(
                    id=r.id,
                    device=r.device,
                    channel=r.channel,
                    action=CommandAction(r.action),
                    params=r.params or {},
                    issued_at=r.created_at,
                    deadline=r.deadline,
                )
                await mqtt.publish(self.topics.down(r.gateway, DownKind.CMD), dump(cmd), qos=1)
                await conn.execute(
                    sa.text(
                        "UPDATE device_command SET state = 'sent', sent_at = :now, "
                        "attempts = attempts + 1 WHERE id = :id"
                    ),
                    {"now": now, "id": r.id},
                )
                DISPATCHED.labels("resent" if r.state == "sent" else "sent").inc()
                sent += 1
        return sent
