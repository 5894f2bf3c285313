"""The ingest consumer: one MQTT subscription (shared across workers where the broker
supports it). The telemetry batches waiting in the queue are taken together and each
gateway's are stored in one transaction (one mark, wallet and twin write per point for all
of them); each batch's receipt is sent once that transaction has committed. A batch that
fails with others is tried again on its own, so a bad one never blocks those beside it."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import aiomqtt
from prometheus_client import Counter

from cloud.aio import raise_if_cancelled
from cloud.ingest.service import Heartbeat, IngestService, UnknownGateway
from cloud.metrics import BUS_TRANSACTIONS, BUS_UTILISATION, GATEWAY_BACKLOG, INGEST_LAG
from cloud.mqtt import client
from contract.mqtt import (
    SUPPORTED_VERSIONS,
    Ack,
    ContractError,
    Direction,
    DownKind,
    Envelope,
    EventKind,
    GatewayEvent,
    GatewayState,
    Receipt,
    ReceiptStatus,
    TelemetryBatch,
    Topics,
    UpKind,
    dump,
    envelope,
)

log = logging.getLogger(__name__)

MAX_MESSAGES = 64  # messages taken from the queue at once
MAX_READINGS = 20_000  # readings of one gateway stored in one transaction
_UP_KINDS = frozenset(k.value for k in UpKind)

MESSAGES = Counter("prepay_ingest_messages_total", "Uplink messages handled", ["kind", "outcome"])
READINGS = Counter("prepay_ingest_readings_total", "Readings by outcome", ["outcome"])


class IngestConsumer:
    def __init__(
        self,
        service: IngestService,
        mqtt_url: str,
        topics: Topics,
        shared_group: str | None,
        worker_name: str | None = None,
        kinds: Sequence[UpKind] | None = None,
    ) -> None:
        """``kinds``: the uplink kinds this consumer takes (all when None); see
        :func:`run_lanes` for the ack lane."""
        self.service = service
        self.kinds = tuple(kinds) if kinds else None
        self.mqtt_url = mqtt_url
        self.topics = topics
        self.shared_group = shared_group
        self.name = worker_name or f"ingest-{uuid.uuid4().hex[:8]}"
        self.rejected: dict[str, int] = {}
        self.handled = 0
        self.ready = asyncio.Event()

    async def run(self) -> None:
        backoff = 1.0
        while True:
            try:
                async with client(self.mqtt_url, self.name) as mqtt:
                    for kind in self.kinds or (None,):
                        await mqtt.subscribe(self.topics.all_up(self.shared_group, kind), qos=1)
                    self.ready.set()
                    backoff = 1.0
                    async for message in mqtt.messages:
                        taken = [message]
                        while len(mqtt.messages) and len(taken) < MAX_MESSAGES:
                            taken.append(await anext(mqtt.messages))
                        receipts = await self.handle_many(
                            [(str(m.topic), _payload(m)) for m in taken]
                        )
                        for receipt in receipts:
                            if receipt is not None:
                                down = self.topics.down(receipt.gateway, DownKind.RECEIPT)
                                await mqtt.publish(down, dump(receipt), qos=1)
            except aiomqtt.MqttError as exc:
                self.ready.clear()
                log.warning("ingest lost the broker (%s); reconnecting in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                # the broker is local to the cloud: come back soon, so gateways waiting for
                # receipts are not left re-sending (a little jitter spreads the workers)
                backoff = min(backoff * 2, 5.0) * random.uniform(0.8, 1.0)

    def _reject(self, kind: str, reason: str, topic: str) -> None:
        key = f"{kind}:{reason}"
        self.rejected[key] = self.rejected.get(key, 0) + 1
        MESSAGES.labels(kind, reason).inc()
        if self.rejected[key] == 1 or self.rejected[key] % 1000 == 0:
            log.warning(
                "rejected %s message on %s: %s (x%d)", kind, topic, reason, self.rejected[key]
            )

    async def handle(self, topic: str, raw: bytes) -> Receipt | None:
        """Handle one uplink message; never raises for bad input. For a telemetry batch,
        returns the receipt to send the gateway (None when it must re-send later)."""
        return (await self.handle_many([(topic, raw)]))[0]

    async def handle_many(self, messages: Sequence[tuple[str, bytes]]) -> list[Receipt | None]:
        """Handle (topic, payload) messages in order, each gateway's valid telemetry batches
        together (up to any other message of the queue, which waits for them); one receipt
        or None per message, as :meth:`handle` returns."""
        receipts: list[Receipt | None] = [None] * len(messages)
        waiting: dict[str, list[tuple[int, TelemetryBatch]]] = defaultdict(list)
        try:
            for i, (topic, raw) in enumerate(messages):
                try:
                    batch = self._telemetry(topic, raw)
                    if isinstance(batch, TelemetryBatch):
                        waiting[batch.gateway].append((i, batch))
                        continue
                    await self._store_waiting(waiting, receipts)
                    receipts[i] = await self._handle(topic, raw, batch)
                except Exception:
                    # Nothing a message holds may stop the worker: whatever slipped past the
                    # checks is counted and logged, and the next message is handled.
                    raise_if_cancelled()
                    self._reject("unknown", "error", topic)
                    log.exception("failed to handle a message on %s", topic[:200])
            await self._store_waiting(waiting, receipts)
        finally:
            self.handled += len(messages)
        return receipts

    def _telemetry(self, topic: str, raw: bytes) -> TelemetryBatch | ContractError | None:
        """A valid telemetry batch on its own gateway's topic, or why a telemetry payload
        was refused (so it is decoded once); None for other topics (which :meth:`_handle`
        sorts out and answers)."""
        parsed = self.topics.parse(topic)
        if parsed is None or parsed[1] is not Direction.UP or parsed[2] != UpKind.TELEMETRY:
            return None
        try:
            batch = TelemetryBatch.model_validate_json(raw)
        except ContractError as exc:
            return exc
        return batch if batch.gateway == parsed[0] else None

    async def _store_waiting(
        self,
        waiting: dict[str, list[tuple[int, TelemetryBatch]]],
        receipts: list[Receipt | None],
    ) -> None:
        for gateway, items in waiting.items():
            group: list[tuple[int, TelemetryBatch]] = []
            size = 0
            for item in items:
                if group and size + len(item[1].readings) > MAX_READINGS:
                    await self._store_group(gateway, group, receipts)
                    group, size = [], 0
                group.append(item)
                size += len(item[1].readings)
            await self._store_group(gateway, group, receipts)
        waiting.clear()

    async def _store_group(
        self,
        gateway: str,
        items: list[tuple[int, TelemetryBatch]],
        receipts: list[Receipt | None],
    ) -> None:
        """Store ``items`` (index in ``receipts``, batch) of one gateway in one transaction;
        if that fails, each on its own, so only a bad batch goes without a receipt."""
        kind, topic = UpKind.TELEMETRY, self.topics.up(gateway, UpKind.TELEMETRY)
        try:
            results = await self.service.store_telemetry_many(
                gateway, [b for _, b in items], datetime.now(UTC)
            )
        except Exception as exc:
            raise_if_cancelled()
            if len(items) > 1:
                for item in items:
                    await self._store_group(gateway, [item], receipts)
            elif isinstance(exc, UnknownGateway):
                self._reject(kind, "unknown_gateway", topic)  # kept by the gateway until known
            else:
                # A database or bug error must not stop the stream; the batch is counted and
                # logged with its traceback. No receipt: the gateway sends it again.
                self._reject(kind, "error", topic)
                log.exception("failed to ingest %s from %s", kind, gateway)
            return
        committed = datetime.now(UTC)
        for (i, batch), result in zip(items, results, strict=True):
            if batch.readings:
                newest = max(r.measured_at for r in batch.readings)
                INGEST_LAG.observe(max((committed - newest).total_seconds(), 0.0))
            READINGS.labels("stored").inc(result.stored)
            READINGS.labels("duplicate").inc(result.duplicates)
            for reason, n in result.quarantined.items():
                READINGS.labels(f"quarantined_{reason}").inc(n)
            MESSAGES.labels(kind, "ok").inc()
            receipts[i] = Receipt(
                gateway=gateway,
                boot_id=batch.boot_id,
                seq=batch.seq,
                stored=result.stored,
                duplicates=result.duplicates,
                quarantined=sum(result.quarantined.values()),
            )

    async def _handle(
        self, topic: str, raw: bytes, refused: ContractError | None = None
    ) -> Receipt | None:
        """Handle one message that is not a valid telemetry batch of its own gateway
        (``refused``: why the telemetry model refused it, when it was decoded already)."""
        parsed = self.topics.parse(topic)
        if parsed is None or parsed[1] is not Direction.UP:
            self._reject("unknown", "foreign_topic", topic[:200])
            return None
        gateway, _, kind = parsed
        if kind not in _UP_KINDS:  # also keeps the counters' labels to the known kinds
            self._reject("unknown", "unknown_kind", topic[:200])
            return None
        if refused is not None:
            return self._refused(gateway, kind, topic, raw, refused)
        now = datetime.now(UTC)
        try:
            if kind == UpKind.TELEMETRY:
                batch = TelemetryBatch.model_validate_json(raw)
                if batch.gateway != gateway:
                    raise UnknownGateway(f"batch names {batch.gateway!r} on {gateway!r}'s topic")
                receipts: list[Receipt | None] = [None]
                await self._store_group(gateway, [(0, batch)], receipts)
                return receipts[0]
            if kind == UpKind.ACK:
                await self.service.store_ack(gateway, Ack.model_validate_json(raw), now)
            elif kind == UpKind.STATE:
                state = GatewayState.model_validate_json(raw)
                if state.gateway != gateway:
                    raise UnknownGateway(f"state names {state.gateway!r} on {gateway!r}'s topic")
                await self.service.gateway_presence(gateway, state.online, now, None)
            elif kind == UpKind.EVENT:
                event = GatewayEvent.model_validate_json(raw)
                if event.gateway != gateway:
                    raise UnknownGateway(f"event names {event.gateway!r} on {gateway!r}'s topic")
                if event.kind is EventKind.HEARTBEAT:
                    await self.service.gateway_presence(
                        gateway, True, now, event.config_version, Heartbeat.of(event)
                    )
                    _bus_metrics(event)
                elif event.kind in (EventKind.CONFIG_APPLIED, EventKind.CONFIG_REJECTED):
                    applied = (
                        event.config_version if event.kind is EventKind.CONFIG_APPLIED else None
                    )
                    await self.service.gateway_presence(gateway, True, now, applied)
                if event.kind is not EventKind.HEARTBEAT:
                    log.info("gateway %s: %s %s", gateway, event.kind.value, event.detail)
            MESSAGES.labels(kind, "ok").inc()
        except ContractError as exc:
            return self._refused(gateway, kind, topic, raw, exc)
        except UnknownGateway:
            self._reject(kind, "unknown_gateway", topic)  # kept by the gateway until known
        except Exception:
            raise_if_cancelled()
            # A database or bug error must not stop the stream; the message is counted and
            # logged with its traceback. No receipt: the gateway sends the batch again.
            self._reject(kind, "error", topic)
            log.exception("failed to ingest %s from %s", kind, gateway)
        return None

    def _refused(
        self, gateway: str, kind: str, topic: str, raw: bytes, exc: ContractError
    ) -> Receipt | None:
        """Count a payload its model refused and answer it. Parsed once: only now is it read
        again, for its version and which batch it was."""
        env = envelope(raw)
        if env is None:
            self._reject(kind, "malformed", topic)
            log.debug("malformed %s payload: %s", kind, exc)
            return None  # nothing says which batch it was: no receipt can name it
        if env.version not in SUPPORTED_VERSIONS:
            if env.version is None:
                self._reject(kind, "malformed", topic)
                return _rejected(gateway, kind, env, "no schema version")
            self._reject(kind, f"unsupported_version_{env.version}", topic)
            return None  # a newer cloud may take it: the gateway keeps it
        self._reject(kind, "invalid", topic)
        log.debug("invalid %s payload: %s", kind, exc)
        return _rejected(gateway, kind, env, f"invalid: {exc}")


def _rejected(gateway: str, kind: str, env: Envelope, why: str) -> Receipt | None:
    """A receipt that tells the gateway to drop a telemetry batch no cloud can ever store
    (when the batch still says, validly, which it was)."""
    if kind != UpKind.TELEMETRY:
        return None
    boot_id, seq = env.boot_id, env.seq
    if not (isinstance(boot_id, str) and 1 <= len(boot_id) <= 64):
        return None
    if not (isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**63):
        return None
    return Receipt(
        gateway=gateway,
        boot_id=boot_id,
        seq=seq,
        status=ReceiptStatus.REJECTED,
        detail=why[:200],
    )


def _payload(message: aiomqtt.Message) -> bytes:
    p = message.payload
    if isinstance(p, bytes | bytearray):
        return bytes(p)
    return str(p).encode()


LANES: tuple[tuple[str, tuple[UpKind, ...]], ...] = (
    ("acks", (UpKind.ACK,)),
    ("uplink", (UpKind.TELEMETRY, UpKind.EVENT, UpKind.STATE)),
)


def lanes(
    service: IngestService,
    mqtt_url: str,
    topics: Topics,
    shared_group: str | None,
    worker_name: str | None = None,
) -> list[IngestConsumer]:
    """An ingest worker as two consumers, each with its own MQTT session: command acks in a
    lane of their own, so an ack is committed the moment it arrives instead of waiting
    behind the telemetry batches queued before it (a restored supply shows at once), and
    the rest (telemetry, events, presence) in order in the other."""
    base = worker_name or f"ingest-{uuid.uuid4().hex[:8]}"
    return [
        IngestConsumer(service, mqtt_url, topics, shared_group, f"{base}-{name}", kinds)
        for name, kinds in LANES
    ]


async def run_lanes(consumers: Sequence[IngestConsumer]) -> None:
    async with asyncio.TaskGroup() as tg:
        for c in consumers:
            tg.create_task(c.run(), name=c.name)


def _bus_metrics(event: GatewayEvent) -> None:
    """A heartbeat's bus statistics and outbox backlog, for the dashboard."""
    for bus, stats in event.buses.items():
        BUS_UTILISATION.labels(event.gateway, bus).set(stats.utilisation)
        ok = stats.transactions - stats.timeouts - stats.errors
        BUS_TRANSACTIONS.labels("ok").inc(max(ok, 0))
        BUS_TRANSACTIONS.labels("timeout").inc(stats.timeouts)
        BUS_TRANSACTIONS.labels("error").inc(stats.errors)
    if event.queue_depth is not None:
        GATEWAY_BACKLOG.labels(event.gateway).set(event.queue_depth)
