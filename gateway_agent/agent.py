"""The gateway agent: one asyncio process, one poller per bus, a store-and-forward outbox,
and command execution exactly once per command id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec

from contract.link import Client
from contract.mqtt import (
    Ack,
    AckStatus,
    BrokerAddress,
    BusStats,
    Command,
    CommandAction,
    ConfigPush,
    ContractError,
    DownKind,
    EventKind,
    GatewayEvent,
    GatewayState,
    Reading,
    Receipt,
    ReceiptStatus,
    Supply,
    Topics,
    UpKind,
    dump,
)
from contract.structs import MAX_JSON_BYTES
from gateway_agent.config import (
    AgentConfig,
    BusConfig,
    ConfigError,
    DeviceConfig,
    TlsConfig,
    merge_pushed,
)
from gateway_agent.drivers import (
    Answer,
    DecodeFailure,
    DeviceException,
    DeviceTimeout,
    Unsupported,
    Values,
)
from gateway_agent.drivers.factory import make_driver
from gateway_agent.outbox import EVENT, READING, Outbox
from gateway_agent.scheduler import BusScheduler
from meter_profiles.decode import supply_on
from meter_profiles.loader import parse_profile
from meter_profiles.schema import AnyProfile

log = logging.getLogger(__name__)

LOST_AFTER_S = 2.0  # an overtaken batch still unconfirmed this long after sending was lost


Clock = Callable[[], datetime]
_SUPPLY_ACTIONS = {
    CommandAction.TRIP: "trip",
    CommandAction.CLOSE: "close",
    CommandAction.CLOSE_ALLOWED: "close_allowed",
    CommandAction.KEEP_POWER_ON: "keep_power_on",
    CommandAction.KEEP_POWER_OFF: "keep_power_off",
    CommandAction.VALVE_OPEN: "valve_open",
    CommandAction.VALVE_CLOSE: "valve_close",
}


class BusRunner:
    """One bus: its scheduler polls the devices; commands are submitted to the scheduler so
    they run on the bus before the next poll, one transaction at a time."""

    def __init__(self, cfg: BusConfig, profiles: dict[str, AnyProfile], agent: Agent) -> None:
        self.cfg = cfg
        self.agent = agent
        self.driver = make_driver(cfg, profiles)
        self.profiles = {d.key: profiles[d.profile] for d in cfg.devices}
        self.devices = {d.key: d for d in cfg.devices}
        # the newest supply command seen per (device, channel): an older one still waiting
        # for the bus is superseded, never carried out after it (a trip queued behind the
        # close that cancels it would cut the point)
        self._newest_supply: dict[tuple[str, int], tuple[datetime, uuid.UUID]] = {}
        self.scheduler = BusScheduler(
            cfg,
            self.driver,
            profiles,
            agent.cfg.poll_interval_s,
            on_values=self._store,
            on_health=agent.device_health,
        )

    async def run(self) -> None:
        await self.scheduler.run()

    def _store(self, dev: DeviceConfig, values: Values) -> list[Reading]:
        readings = self._readings(dev, values)
        self.agent.enqueue(readings)
        return readings

    def _readings(self, dev: DeviceConfig, values: Values) -> list[Reading]:
        profile = self.profiles[dev.key]
        at = self.agent.clock()
        return [_reading(dev, profile, values, ch, at) for ch in range(1, profile.channels + 1)]

    async def poll(self, dev: DeviceConfig) -> list[Reading]:
        """Read ``dev`` now (on the bus, before the next scheduled poll)."""

        return await self.scheduler.submit(lambda: self._read_and_store(dev))

    async def _read_and_store(self, dev: DeviceConfig) -> list[Reading]:
        values = await self.scheduler.read(dev)
        return [] if values is None else self._store(dev, values)

    async def execute(self, cmd: Command) -> Ack:
        dev = self.devices[cmd.device]
        profile = self.profiles[cmd.device]
        if cmd.action is CommandAction.READ_NOW:
            readings = await self.poll(dev)
            status = AckStatus.OK if readings else AckStatus.FAILED
            return self.agent.ack(cmd, status, "read" if readings else "no answer")
        if cmd.channel > profile.channels:
            return self.agent.ack(
                cmd, AckStatus.INVALID, f"{profile.model} has no channel {cmd.channel}"
            )
        if cmd.action in _SUPPLY_ACTIONS:
            key = (cmd.device, cmd.channel)
            newest = self._newest_supply.get(key)
            if newest is None or cmd.issued_at >= newest[0]:  # a tie: the later arrival
                self._newest_supply[key] = (cmd.issued_at, cmd.id)
        return await self.scheduler.submit(lambda: self._execute_on_bus(cmd, dev, profile))

    def _superseded_by(self, cmd: Command) -> uuid.UUID | None:
        if cmd.action not in _SUPPLY_ACTIONS:
            return None
        newest = self._newest_supply.get((cmd.device, cmd.channel))
        return None if newest is None or newest[1] == cmd.id else newest[1]

    async def _execute_on_bus(self, cmd: Command, dev: DeviceConfig, profile: AnyProfile) -> Ack:
        if cmd.deadline <= self.agent.clock():  # it may have waited for the bus
            return self.agent.ack(
                cmd, AckStatus.EXPIRED, f"deadline {cmd.deadline.isoformat()} passed"
            )
        if (newer := self._superseded_by(cmd)) is not None:
            return self.agent.ack(
                cmd, AckStatus.SUPERSEDED, f"superseded by {newer} before it reached the meter"
            )
        try:
            answer, done = await self.scheduler.transaction(
                dev, lambda: self._carry_out(cmd, dev, profile)
            )
        except Unsupported as exc:
            return self.agent.ack(cmd, AckStatus.INVALID, str(exc))
        except DeviceException as exc:
            return self.agent.ack(cmd, AckStatus.FAILED, str(exc), exc.answer)
        except (DeviceTimeout, DecodeFailure) as exc:
            return self.agent.ack(cmd, AckStatus.FAILED, str(exc))
        readings = await self._read_and_store(dev)
        supply = next((r.supply for r in readings if r.channel == cmd.channel), None)
        if supply is not None:
            answer = {**answer, "supply": supply.value}
        return self.agent.ack(cmd, AckStatus.OK, done, answer, reported=supply)

    async def _carry_out(
        self, cmd: Command, dev: DeviceConfig, profile: AnyProfile
    ) -> tuple[Answer, str]:
        if cmd.action is CommandAction.RECHARGE:
            amount, count = _recharge_params(cmd.params)
            answer = await self.driver.recharge(dev, profile, amount, count)
            return answer, f"recharged {amount} as purchase {count}"
        if cmd.action is CommandAction.TIME_SYNC:
            return await self.driver.time_sync(self.agent.clock()), "time set"
        action = _SUPPLY_ACTIONS.get(cmd.action)
        if action is None:
            raise Unsupported(f"{cmd.action} is not supported")
        answer = await self.driver.control(dev, profile, action, cmd.channel, cmd.deadline)
        return answer, f"{action} done"


def _recharge_params(params: dict[str, str]) -> tuple[Decimal, int]:
    try:
        amount = Decimal(params["amount"])
        count = int(params["purchase_count"])
    except (KeyError, ArithmeticError, ValueError) as exc:
        raise Unsupported(
            "recharge needs params amount (decimal string) and purchase_count (integer)"
        ) from exc
    if not amount.is_finite() or amount <= 0 or count <= 0:
        raise Unsupported(f"recharge amount {amount} and purchase count {count} must be positive")
    return amount, count


def _reading(
    dev: DeviceConfig,
    profile: AnyProfile,
    values: Values,
    ch: int,
    at: datetime,
) -> Reading:
    def q(name: str) -> Decimal | None:
        return values.get((name, ch))

    on = supply_on(profile, values, ch)
    spike, peak, flat, valley = (
        values.get((n, ch)) for n in ("tou_spike", "tou_peak", "tou_flat", "tou_valley")
    )
    tou = None
    if spike is not None and peak is not None and flat is not None and valley is not None:
        tou = (spike, peak, flat, valley)
    count = q("purchase_count")
    return Reading(
        device=dev.key,
        channel=ch,
        measured_at=at,
        total=q("total_energy") if profile.utility == "electricity" else q("total_volume"),
        tou=tou,
        voltage=q("voltage") if q("voltage") is not None else q("voltage_a"),
        current=q("current") if q("current") is not None else q("current_a"),
        power=q("power"),
        supply=None if on is None else (Supply.ON if on else Supply.OFF),
        meter_balance=q("remaining_amount"),
        purchase_count=None if count is None else int(count),
    )


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        profiles: dict[str, AnyProfile],
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.clock = clock
        self.topics = Topics(cfg.mqtt_prefix)
        self.boot_id = uuid.uuid4().hex
        self.seq = 0
        self.base_profiles = profiles
        self.cfg = cfg
        self.buses: list[BusRunner] = []
        self._bus_of: dict[str, BusRunner] = {}
        pushed = _load_pushed(cfg)
        self._install(pushed or cfg)  # a persisted pushed config outranks the local file
        self.outbox = Outbox(cfg.data_dir / "outbox.sqlite3", cfg.queue_cap)
        self._pending = asyncio.Event()
        self._inflight: dict[str, asyncio.Future[Ack]] = {}
        self._unconfirmed: dict[int, float] = {}  # batch seq -> when it was published
        self._bus_tasks: list[asyncio.Task[None]] = []
        self._command_tasks: set[asyncio.Task[None]] = set()
        self._downlink_failures = 0  # commands that raised instead of answering
        self.connected = asyncio.Event()

    def _install(self, cfg: AgentConfig) -> None:
        """Build the buses of ``cfg`` (raises ConfigError / ValueError, changing nothing)."""
        profiles = dict(self.base_profiles)
        for doc in cfg.profiles:
            try:
                p = parse_profile(doc)
            except ContractError as exc:
                raise ConfigError(f"pushed profile: {exc}") from exc
            profiles[p.model] = p
        buses = [BusRunner(b, profiles, self) for b in cfg.buses]
        self.cfg = cfg
        self.buses = buses
        self._bus_of = {d.key: bus for bus in buses for d in bus.cfg.devices}

    # -- outbox ---------------------------------------------------------------------
    def enqueue(self, readings: list[Reading]) -> None:
        dropped = self.outbox.put(READING, [r.model_dump_json().encode() for r in readings])
        if dropped:
            log.error(
                "outbox over its cap of %d: %d oldest readings dropped (%d in all)",
                self.outbox.cap,
                dropped,
                self.outbox.dropped,
            )
            self.event(
                EventKind.QUEUE_OVERFLOW,
                f"outbox cap {self.outbox.cap} reached: {dropped} oldest readings dropped",
                dropped_total=self.outbox.dropped,
            )
        self._pending.set()

    def event(self, kind: EventKind, detail: str = "", **fields: object) -> None:
        """Queue an event for the cloud (store-and-forward like readings, never dropped)."""
        ev = GatewayEvent.model_validate(
            {
                "gateway": self.cfg.gateway,
                "boot_id": self.boot_id,
                "kind": kind,
                "at": self.clock(),
                "detail": detail,
                **fields,
            }
        )
        self.outbox.put(EVENT, [dump(ev)])
        self._pending.set()

    def device_health(self, dev: DeviceConfig, online: bool, detail: str) -> None:
        kind = EventKind.DEVICE_ONLINE if online else EventKind.DEVICE_OFFLINE
        self.event(kind, detail, device=dev.key)

    async def _publisher(self, mqtt: aiomqtt.Client) -> None:
        """Events one by one (PUBACK), readings in numbered batches kept until the cloud's
        receipt; at most ``publish_window`` batches unconfirmed at a time."""
        topic = self.topics.up(self.cfg.gateway, UpKind.TELEMETRY)
        event_topic = self.topics.up(self.cfg.gateway, UpKind.EVENT)
        loop = asyncio.get_running_loop()
        self.outbox.unmark_all()  # a new session: whatever was unconfirmed goes again
        self._unconfirmed.clear()
        while True:
            self._pending.clear()
            events = self.outbox.peek(EVENT, 50)
            for i, body in events:
                await mqtt.publish(event_topic, body, qos=1)
                self.outbox.remove([i], EVENT)
            now = loop.time()
            for seq, sent in list(self._unconfirmed.items()):
                if now - sent > self.cfg.receipt_timeout_s:
                    log.warning("no receipt for batch %d in %.0fs: sending again", seq, now - sent)
                    self.outbox.unmark(seq)
                    del self._unconfirmed[seq]
            if len(self._unconfirmed) < self.cfg.publish_window:
                rows = self.outbox.peek_unsent(self.cfg.publish_batch)
                if rows:
                    self.seq += 1
                    self.outbox.mark([i for i, _ in rows], self.seq)
                    self._unconfirmed[self.seq] = now
                    payload = self._batch([body for _, body in rows], self.seq)
                    await mqtt.publish(topic, payload, qos=1)
                    continue
            if not events:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.5, self.cfg.receipt_timeout_s / 4)):
                        await self._pending.wait()

    def confirm(self, raw: bytes) -> None:
        """The cloud's receipt for a batch: forget its rows (a receipt for another boot's
        batch is ignored; those rows were sent again under this boot)."""
        try:
            receipt = Receipt.model_validate_json(raw)
        except ContractError as exc:
            log.warning("unreadable receipt: %s", exc.errors()[0]["msg"])
            return
        if receipt.boot_id != self.boot_id or receipt.seq not in self._unconfirmed:
            return
        del self._unconfirmed[receipt.seq]
        # The cloud answers a gateway's batches about in order: an earlier batch still
        # without a receipt seconds after it was sent was lost (e.g. published while no
        # ingest worker was subscribed). Send it again now rather than after the timeout.
        now = asyncio.get_running_loop().time()
        for seq, at in list(self._unconfirmed.items()):
            if seq < receipt.seq and now - at > LOST_AFTER_S:
                log.warning(
                    "batch %d was overtaken by batch %d: sending it again", seq, receipt.seq
                )
                self.outbox.unmark(seq)
                del self._unconfirmed[seq]
        n = self.outbox.confirm(receipt.seq)
        if receipt.status is ReceiptStatus.REJECTED:
            detail = f"the cloud rejected batch {receipt.seq} ({n} readings): {receipt.detail}"
            log.error("%s", detail)
            self.event(EventKind.BATCH_REJECTED, detail)
        self._pending.set()

    def heartbeat(self) -> GatewayEvent:
        return GatewayEvent(
            gateway=self.cfg.gateway,
            boot_id=self.boot_id,
            kind=EventKind.HEARTBEAT,
            at=self.clock(),
            config_version=self.cfg.config_version,
            queue_depth=self.outbox.depth(),
            dropped_total=self.outbox.dropped,
            buses={
                b.cfg.name: BusStats.model_validate(b.scheduler.take_stats()) for b in self.buses
            },
        )

    async def _heartbeats(self, mqtt: aiomqtt.Client) -> None:
        topic = self.topics.up(self.cfg.gateway, UpKind.EVENT)
        while True:
            await asyncio.sleep(self.cfg.heartbeat_s)
            await mqtt.publish(topic, dump(self.heartbeat()), qos=0)

    def _batch(self, bodies: list[bytes], seq: int) -> bytes:
        head = (
            f'{{"v":1,"gateway":"{self.cfg.gateway}","boot_id":"{self.boot_id}",'
            f'"seq":{seq},"sent_at":"{self.clock().isoformat()}","readings":['
        )
        return head.encode() + b",".join(bodies) + b"]}"

    # -- commands -------------------------------------------------------------------
    def ack(
        self,
        cmd: Command,
        status: AckStatus,
        detail: str,
        answer: dict[str, str] | None = None,
        reported: Supply | None = None,
    ) -> Ack:
        return Ack(
            id=cmd.id,
            gateway=self.cfg.gateway,
            status=status,
            detail=detail,
            meter_answer=answer or {},
            reported_supply=reported,
            device=cmd.device,
            channel=cmd.channel,
            at=self.clock(),
        )

    async def handle_command(self, raw: bytes) -> Ack:
        """Execute a command at most once per id, across restarts: a repeat returns the
        stored ack (``duplicate``) without touching the meter; a repeat that arrives while
        the first is still on the bus waits for its result."""
        try:
            cmd = Command.model_validate_json(raw)
        except ContractError as exc:
            return Ack(
                id=_command_id(raw),
                gateway=self.cfg.gateway,
                status=AckStatus.INVALID,
                detail=f"invalid command: {exc.errors()[0]['msg']}",
                at=self.clock(),
            )
        key = str(cmd.id)
        running = self._inflight.get(key)
        if running is not None:
            ack = await asyncio.shield(running)
            return ack.model_copy(update={"duplicate": True})
        first, stored = self.outbox.begin(key)
        if not first:
            if stored is not None:
                return Ack.model_validate_json(stored).model_copy(update={"duplicate": True})
            ack = self.ack(
                cmd,
                AckStatus.FAILED,
                "interrupted by a restart before the meter answered; not repeated "
                "(send a new command after checking the meter)",
            )
            self.outbox.remember(key, dump(ack))
            return ack
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            if cmd.deadline <= self.clock():
                ack = self.ack(
                    cmd, AckStatus.EXPIRED, f"deadline {cmd.deadline.isoformat()} passed"
                )
            elif cmd.device not in self._bus_of:
                ack = self.ack(cmd, AckStatus.INVALID, f"unknown device {cmd.device!r}")
            else:
                ack = await self._bus_of[cmd.device].execute(cmd)
            self.outbox.remember(key, dump(ack))
            future.set_result(ack)
            return ack
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[key]

    # -- pushed configuration ---------------------------------------------------------
    async def apply_config(self, raw: bytes) -> Ack:
        """Validate and apply a pushed config; the queue and the command journal stay. An
        invalid one is refused with the reason and the running config stays."""
        try:
            push = ConfigPush.model_validate_json(raw)
        except ContractError as exc:
            return self._config_ack(_command_id(raw), AckStatus.INVALID, _first_error(exc))
        if push.version <= self.cfg.config_version:
            return self._config_ack(
                push.id, AckStatus.OK, f"version {push.version} already applied", duplicate=True
            )
        previous = (self.cfg, self.buses, self._bus_of)
        try:
            new_cfg = merge_pushed(self.cfg, push.version, push.config)
            self._install(new_cfg)
        except Exception as exc:  # any config it cannot run is refused; the running one stays
            # (a retained config that raised out of here would crash-loop the agent)
            self.cfg, self.buses, self._bus_of = previous
            detail = f"config version {push.version} rejected: {exc}"
            log.error("%s", detail)
            self.event(EventKind.CONFIG_REJECTED, detail, config_version=push.version)
            return self._config_ack(push.id, AckStatus.INVALID, detail)
        old_tasks, self._bus_tasks = self._bus_tasks, []
        if self._command_tasks:
            await asyncio.gather(*self._command_tasks, return_exceptions=True)
        for t in old_tasks:
            t.cancel()
        await asyncio.gather(*old_tasks, return_exceptions=True)
        self._start_buses()
        _save_pushed(new_cfg, push.config)
        self.event(EventKind.CONFIG_APPLIED, f"version {push.version}", config_version=push.version)
        log.info("applied config version %d", push.version)
        return self._config_ack(push.id, AckStatus.OK, f"version {push.version} applied")

    def _config_ack(
        self, id_: uuid.UUID | None, status: AckStatus, detail: str, *, duplicate: bool = False
    ) -> Ack:
        return Ack(
            id=id_,
            gateway=self.cfg.gateway,
            status=status,
            detail=detail,
            meter_answer={"config_version": str(self.cfg.config_version)},
            at=self.clock(),
            duplicate=duplicate,
        )

    async def _downlink(self, mqtt: aiomqtt.Client) -> None:
        ack_topic = self.topics.up(self.cfg.gateway, UpKind.ACK)
        config_topic = self.topics.down(self.cfg.gateway, DownKind.CONFIG)
        receipt_topic = self.topics.down(self.cfg.gateway, DownKind.RECEIPT)

        async def command(raw: bytes) -> None:
            ack = await self.handle_command(raw)
            await mqtt.publish(ack_topic, dump(ack), qos=1)

        async for message in mqtt.messages:
            raw = (
                message.payload
                if isinstance(message.payload, bytes)
                else str(message.payload).encode()
            )
            if message.topic.matches(receipt_topic):
                self.confirm(raw)
                continue
            if message.topic.matches(config_topic):
                if raw:  # an empty retained message clears the topic
                    await mqtt.publish(ack_topic, dump(await self.apply_config(raw)), qos=1)
                continue
            task = asyncio.create_task(command(raw))  # buses run their commands concurrently
            self._command_tasks.add(task)
            task.add_done_callback(self._command_done)

    def _command_done(self, task: asyncio.Task[None]) -> None:
        self._command_tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._downlink_failures += 1
            if self._downlink_failures == 1 or self._downlink_failures % 100 == 0:
                log.error("a command could not be handled (x%d): %r", self._downlink_failures, exc)

    # -- lifecycle ------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        addr = BrokerAddress.parse(self.cfg.mqtt_url)
        state_topic = self.topics.up(self.cfg.gateway, UpKind.STATE)
        offline = dump(GatewayState(gateway=self.cfg.gateway, online=False, boot_id=self.boot_id))
        return Client(
            addr.host,
            addr.port,
            identifier=self.cfg.gateway,
            username=self.cfg.mqtt_username or addr.username,
            password=self.cfg.mqtt_password or addr.password,
            tls_context=tls_context(self.cfg.tls) if addr.tls or self.cfg.tls else None,
            clean_session=False,  # a persistent session: commands sent while offline wait
            keepalive=30,
            will=aiomqtt.Will(state_topic, offline, qos=1, retain=True),
        )

    def _start_buses(self) -> None:
        self._bus_tasks = [
            asyncio.create_task(b.run(), name=f"bus-{b.cfg.name}") for b in self.buses
        ]

    async def run(self) -> None:
        self._start_buses()
        failures = 0
        try:
            while True:
                try:
                    await self._session()
                    failures = 0
                except aiomqtt.MqttError as exc:
                    self.connected.clear()
                    failures += 1
                    delay = reconnect_delay(
                        failures, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s
                    )
                    log.warning("broker link down (%s); retry in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
        finally:
            tasks = self._bus_tasks + list(self._command_tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.outbox.close()

    async def _session(self) -> None:
        async with self._client() as mqtt:
            await mqtt.subscribe(self.topics.down(self.cfg.gateway, DownKind.CMD), qos=1)
            await mqtt.subscribe(self.topics.down(self.cfg.gateway, DownKind.CONFIG), qos=1)
            await mqtt.subscribe(self.topics.down(self.cfg.gateway, DownKind.RECEIPT), qos=1)
            await mqtt.publish(
                self.topics.up(self.cfg.gateway, UpKind.STATE),
                dump(
                    GatewayState(
                        gateway=self.cfg.gateway, online=True, boot_id=self.boot_id, at=self.clock()
                    )
                ),
                qos=1,
                retain=True,
            )
            self.connected.set()
            self._pending.set()
            tasks = [
                asyncio.create_task(self._publisher(mqtt)),
                asyncio.create_task(self._downlink(mqtt)),
                asyncio.create_task(self._heartbeats(mqtt)),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    t.result()
            finally:
                for t in tasks:
                    t.cancel()
                # gather, not a suppressed await of each: a stop (cancel) that arrives
                # while the tasks wind down must not be swallowed with theirs, or run()
                # would reconnect and never end
                await asyncio.gather(*tasks, return_exceptions=True)


def reconnect_delay(failures: int, low: float, high: float) -> float:
    """Exponential backoff with full jitter, so a site's gateways do not reconnect in step
    after a broker restart."""
    ceiling = min(high, low * 2 ** min(failures - 1, 16))
    return low + random.uniform(0, max(0.0, ceiling - low))


def tls_context(tls: TlsConfig | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls and tls.ca_file else None)
    if tls and tls.cert_file and tls.key_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return ctx


def _pushed_path(cfg: AgentConfig) -> Path:
    return cfg.data_dir / "pushed-config.json"


def _save_pushed(cfg: AgentConfig, pushed: dict[str, Any]) -> None:
    path = _pushed_path(cfg)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": cfg.config_version, "config": pushed}))
    tmp.replace(path)  # atomic: a crash leaves the old or the new file, never half of one


def _load_pushed(cfg: AgentConfig) -> AgentConfig | None:
    path = _pushed_path(cfg)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        version = int(doc["version"])
        if version <= cfg.config_version:
            return None
        return merge_pushed(cfg, version, doc["config"])
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        log.error("ignoring the stored pushed config %s: %s", path, exc)
        return None


def _first_error(exc: ContractError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"])
    return f"invalid config push: {where + ': ' if where else ''}{e['msg']}"


class _WithId(msgspec.Struct):
    """What can still be read of a refused command or config: its id, if any."""

    id: Any = None


def _command_id(raw: bytes) -> uuid.UUID | None:
    """The id of a payload its model refused (to name it in the ``invalid`` ack); None when
    unreadable. Never raises, whatever ``raw`` holds."""
    if len(raw) > MAX_JSON_BYTES:
        return None
    try:
        found = msgspec.json.decode(raw, type=_WithId).id
        return None if found is None else uuid.UUID(str(found))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError, TypeError):
        return None
