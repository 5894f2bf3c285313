"""The gateway agent: one asyncio process, one poller per bus, a store-and-forward outbox,
and command execution exactly once per command id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import aiomqtt
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from contract.mqtt import (
    Ack,
    AckStatus,
    BrokerAddress,
    BusStats,
    Command,
    CommandAction,
    DownKind,
    EventKind,
    GatewayEvent,
    GatewayState,
    Reading,
    Supply,
    Topics,
    UpKind,
    dump,
)
from gateway_agent.config import AgentConfig, BusConfig, DeviceConfig
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
from meter_profiles.schema import AnyProfile

log = logging.getLogger(__name__)

QUEUE_DEPTH = Gauge("prepay_gateway_queue_depth", "Readings waiting in the on-disk outbox")
DROPPED = Counter("prepay_gateway_readings_dropped_total", "Readings dropped at the outbox cap")

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

    def _store(self, dev: DeviceConfig, values: Values) -> None:
        self.agent.enqueue(self._readings(dev, values))

    def _readings(self, dev: DeviceConfig, values: Values) -> list[Reading]:
        profile = self.profiles[dev.key]
        at = self.agent.clock()
        return [_reading(dev, profile, values, ch, at) for ch in range(1, profile.channels + 1)]

    async def poll(self, dev: DeviceConfig) -> list[Reading]:
        """Read ``dev`` now (on the bus, before the next scheduled poll)."""

        async def read() -> list[Reading]:
            values = await self.scheduler.read(dev)
            if values is None:
                return []
            readings = self._readings(dev, values)
            self.agent.enqueue(readings)
            return readings

        return await self.scheduler.submit(read)

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
        return await self.scheduler.submit(lambda: self._execute_on_bus(cmd, dev, profile))

    async def _execute_on_bus(self, cmd: Command, dev: DeviceConfig, profile: AnyProfile) -> Ack:
        if cmd.deadline <= self.agent.clock():  # it may have waited for the bus
            return self.agent.ack(
                cmd, AckStatus.EXPIRED, f"deadline {cmd.deadline.isoformat()} passed"
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
        values = await self.scheduler.read(dev)
        readings = self._readings(dev, values) if values is not None else []
        if readings:
            self.agent.enqueue(readings)
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
    tou = tuple(values.get((n, ch)) for n in ("tou_spike", "tou_peak", "tou_flat", "tou_valley"))
    count = q("purchase_count")
    return Reading(
        device=dev.key,
        channel=ch,
        measured_at=at,
        total=q("total_energy") if profile.utility == "electricity" else q("total_volume"),
        tou=tou if all(v is not None for v in tou) else None,
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
        self.cfg = cfg
        self.clock = clock
        self.topics = Topics(cfg.mqtt_prefix)
        self.boot_id = uuid.uuid4().hex
        self.seq = 0
        self.buses = [BusRunner(b, profiles, self) for b in cfg.buses]
        self.outbox = Outbox(cfg.data_dir / "outbox.sqlite3", cfg.queue_cap)
        self._bus_of = {d.key: bus for bus in self.buses for d in bus.cfg.devices}
        self._pending = asyncio.Event()
        self._inflight: dict[str, asyncio.Future[Ack]] = {}
        self.connected = asyncio.Event()

    # -- outbox ---------------------------------------------------------------------
    def enqueue(self, readings: list[Reading]) -> None:
        dropped = self.outbox.put(READING, [r.model_dump_json().encode() for r in readings])
        if dropped:
            DROPPED.inc(dropped)
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
        QUEUE_DEPTH.set(self.outbox.depth())
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
        topic = self.topics.up(self.cfg.gateway, UpKind.TELEMETRY)
        event_topic = self.topics.up(self.cfg.gateway, UpKind.EVENT)
        while True:
            events = self.outbox.peek(EVENT, 50)
            for i, body in events:
                await mqtt.publish(event_topic, body, qos=1)
                self.outbox.remove([i], EVENT)
            rows = self.outbox.peek(READING, self.cfg.publish_batch)
            if not rows and not events:
                self._pending.clear()
                await self._pending.wait()
                continue
            if rows:
                payload = self._batch([body for _, body in rows])
                await mqtt.publish(topic, payload, qos=1)  # returns after the broker's PUBACK
                self.outbox.remove([i for i, _ in rows])
                QUEUE_DEPTH.set(self.outbox.depth())

    def heartbeat(self) -> GatewayEvent:
        return GatewayEvent(
            gateway=self.cfg.gateway,
            boot_id=self.boot_id,
            kind=EventKind.HEARTBEAT,
            at=self.clock(),
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

    def _batch(self, bodies: list[bytes]) -> bytes:
        self.seq += 1
        head = (
            f'{{"v":1,"gateway":"{self.cfg.gateway}","boot_id":"{self.boot_id}",'
            f'"seq":{self.seq},"sent_at":"{self.clock().isoformat()}","readings":['
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
        except ValidationError as exc:
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

    async def _commands(self, mqtt: aiomqtt.Client) -> None:
        ack_topic = self.topics.up(self.cfg.gateway, UpKind.ACK)
        async for message in mqtt.messages:
            raw = (
                message.payload
                if isinstance(message.payload, bytes)
                else str(message.payload).encode()
            )
            ack = await self.handle_command(raw)
            await mqtt.publish(ack_topic, dump(ack), qos=1)

    # -- lifecycle ------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        addr = BrokerAddress.parse(self.cfg.mqtt_url)
        state_topic = self.topics.up(self.cfg.gateway, UpKind.STATE)
        offline = dump(GatewayState(gateway=self.cfg.gateway, online=False, boot_id=self.boot_id))
        return aiomqtt.Client(
            addr.host,
            addr.port,
            identifier=self.cfg.gateway,
            username=addr.username,
            password=addr.password,
            tls_context=ssl.create_default_context() if addr.tls else None,
            clean_session=False,
            keepalive=30,
            will=aiomqtt.Will(state_topic, offline, qos=1, retain=True),
        )

    async def run(self) -> None:
        pollers = [asyncio.create_task(b.run(), name=f"bus-{b.cfg.name}") for b in self.buses]
        backoff = 1.0
        try:
            while True:
                try:
                    await self._session()
                except aiomqtt.MqttError as exc:
                    self.connected.clear()
                    log.warning("broker link down (%s); retry in %.1fs", exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
        finally:
            for t in pollers:
                t.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            self.outbox.close()

    async def _session(self) -> None:
        async with self._client() as mqtt:
            await mqtt.subscribe(self.topics.down(self.cfg.gateway, DownKind.CMD), qos=1)
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
                asyncio.create_task(self._commands(mqtt)),
                asyncio.create_task(self._heartbeats(mqtt)),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    t.result()
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await t


def _command_id(raw: bytes) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(json.loads(raw)["id"]))
    except (ValueError, KeyError, TypeError):
        return None
