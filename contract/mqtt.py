"""MQTT contract between gateway agents and the cloud.

Both sides import this module and nothing else of each other. Every payload carries a
schema version ``v``; a receiver first reads ``v`` (see :func:`schema_version`) and refuses
versions it does not know. Decimal quantities travel as JSON strings, never floats.

Topics (``prefix`` is configurable, default ``prepay``)::

    {prefix}/gw/{gateway}/up/telemetry   readings batches            gateway -> cloud (QoS 1)
    {prefix}/gw/{gateway}/up/ack         command acknowledgements    gateway -> cloud (QoS 1)
    {prefix}/gw/{gateway}/up/event       gateway events/alarms       gateway -> cloud (QoS 1)
    {prefix}/gw/{gateway}/up/state       online/offline, retained    gateway -> cloud (QoS 1)
    {prefix}/gw/{gateway}/down/cmd       commands                    cloud -> gateway (QoS 1)
    {prefix}/gw/{gateway}/down/config    pushed config, retained     cloud -> gateway (QoS 1)
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
GatewayId = Annotated[str, Field(pattern=_ID)]
DeviceKey = Annotated[str, Field(pattern=_ID)]


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"


class UpKind(StrEnum):
    TELEMETRY = "telemetry"
    ACK = "ack"
    EVENT = "event"
    STATE = "state"


class DownKind(StrEnum):
    CMD = "cmd"
    CONFIG = "config"
    RECEIPT = "receipt"  # the cloud has stored a telemetry batch: the gateway may forget it


class Topics:
    """Builds and parses topic names under one prefix."""

    def __init__(self, prefix: str = "prepay") -> None:
        if not prefix or "#" in prefix or "+" in prefix or prefix.endswith("/"):
            raise ValueError(f"invalid MQTT topic prefix {prefix!r}")
        self.prefix = prefix
        self._re = re.compile(
            rf"^{re.escape(prefix)}/gw/(?P<gw>[^/]+)/(?P<dir>up|down)/(?P<kind>[a-z]+)$"
        )

    def up(self, gateway: str, kind: UpKind) -> str:
        return f"{self.prefix}/gw/{gateway}/up/{kind.value}"

    def down(self, gateway: str, kind: DownKind) -> str:
        return f"{self.prefix}/gw/{gateway}/down/{kind.value}"

    def all_up(self, shared_group: str | None = None, kind: UpKind | None = None) -> str:
        """Subscription filter for every gateway's uplink, or one ``kind`` of it (optionally
        a shared subscription)."""
        topic = f"{self.prefix}/gw/+/up/{kind.value if kind else '+'}"
        return f"$share/{shared_group}/{topic}" if shared_group else topic

    def parse(self, topic: str) -> tuple[str, Direction, str] | None:
        """Return (gateway, direction, kind) or None when the topic is not ours."""
        m = self._re.match(topic)
        if m is None:
            return None
        return m["gw"], Direction(m["dir"]), m["kind"]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    v: Literal[1] = 1


class Supply(StrEnum):
    """Supply state of a metered circuit: relay closed (on) or open (off); valve open/closed."""

    ON = "on"
    OFF = "off"


class Reading(BaseModel):
    """One measurement of one channel of one device, at the meter's measurement time."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    device: DeviceKey
    channel: int = Field(default=1, ge=1, le=64)
    measured_at: AwareDatetime
    total: Decimal | None = Field(default=None, description="cumulative register, kWh or m3")
    tou: tuple[Decimal, Decimal, Decimal, Decimal] | None = Field(
        default=None, description="cumulative 尖/峰/平/谷 registers"
    )
    voltage: Decimal | None = None
    current: Decimal | None = None
    power: Decimal | None = Field(default=None, description="active power, kW")
    supply: Supply | None = None
    meter_balance: Decimal | None = Field(default=None, description="meter-held balance, yuan")
    purchase_count: int | None = None


class TelemetryBatch(_Payload):
    gateway: GatewayId
    boot_id: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=0)
    sent_at: AwareDatetime
    readings: tuple[Reading, ...] = Field(max_length=5000)


class CommandAction(StrEnum):
    TRIP = "trip"
    CLOSE = "close"
    CLOSE_ALLOWED = "close_allowed"
    KEEP_POWER_ON = "keep_power_on"
    KEEP_POWER_OFF = "keep_power_off"
    VALVE_OPEN = "valve_open"
    VALVE_CLOSE = "valve_close"
    RECHARGE = "recharge"
    TIME_SYNC = "time_sync"
    READ_NOW = "read_now"


class Command(_Payload):
    id: UUID
    device: DeviceKey
    channel: int = Field(default=1, ge=1, le=64)
    action: CommandAction
    params: dict[str, str] = Field(default_factory=dict)
    issued_at: AwareDatetime
    deadline: AwareDatetime


class ReceiptStatus(StrEnum):
    STORED = "stored"  # committed (new, duplicate or quarantined readings alike)
    REJECTED = "rejected"  # the batch can never be stored (invalid); resending will not help


class Receipt(_Payload):
    """The cloud's end-to-end acknowledgement of a telemetry batch. A broker's PUBACK only
    says the broker has it; a broker that restarts before an ingest worker subscribes again
    loses it. The gateway keeps a batch until this receipt arrives and re-sends it
    otherwise; duplicates are no-ops in the cloud."""

    gateway: GatewayId
    boot_id: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=0)
    status: ReceiptStatus = ReceiptStatus.STORED
    stored: int = Field(default=0, ge=0)
    duplicates: int = Field(default=0, ge=0)
    quarantined: int = Field(default=0, ge=0)
    detail: str = ""


#: What a gateway takes from the cloud in a pushed config; identity, broker and paths stay local.
CONFIG_PUSHABLE = frozenset(
    {"poll_interval_s", "publish_batch", "heartbeat_s", "buses", "profiles"}
)


class ConfigPush(_Payload):
    """A versioned configuration for one gateway, retained on its ``down/config`` topic. The
    gateway applies a higher version than it runs and answers with an ack carrying ``id``."""

    id: UUID
    version: int = Field(ge=1)
    config: dict[str, Any]
    issued_at: AwareDatetime


class AckStatus(StrEnum):
    OK = "ok"  # executed; the meter confirmed
    FAILED = "failed"  # executed but the meter refused or did not answer
    EXPIRED = "expired"  # deadline passed before execution; the meter was not touched
    INVALID = "invalid"  # payload could not be understood; the meter was not touched


class Ack(_Payload):
    id: UUID | None = Field(description="command id; None when the payload had no readable id")
    gateway: GatewayId
    status: AckStatus
    detail: str = ""
    meter_answer: dict[str, str] = Field(default_factory=dict)
    reported_supply: Supply | None = None
    device: DeviceKey | None = None
    channel: int | None = None
    at: AwareDatetime
    duplicate: bool = Field(default=False, description="already executed; stored result re-sent")


class GatewayState(_Payload):
    gateway: GatewayId
    online: bool
    boot_id: str | None = None
    at: AwareDatetime | None = None


class BusStats(BaseModel):
    """One bus since the previous heartbeat (counters) and now (backlog)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    transactions: int = Field(ge=0)
    timeouts: int = Field(ge=0)
    errors: int = Field(ge=0)
    utilisation: float = Field(ge=0, le=1, description="share of the interval the line was busy")
    devices_backing_off: int = Field(default=0, ge=0)


class EventKind(StrEnum):
    HEARTBEAT = "heartbeat"
    QUEUE_OVERFLOW = "queue_overflow"  # the outbox hit its cap and dropped readings
    CONFIG_APPLIED = "config_applied"
    CONFIG_REJECTED = "config_rejected"
    BATCH_REJECTED = "batch_rejected"  # the cloud can never store a batch: it was dropped
    DEVICE_OFFLINE = "device_offline"
    DEVICE_ONLINE = "device_online"


class GatewayEvent(_Payload):
    """Something the gateway reports besides readings: heartbeats (with bus statistics and
    the outbox backlog), queue overflow alarms, config applied / rejected, device health."""

    gateway: GatewayId
    boot_id: str = Field(min_length=1, max_length=64)
    kind: EventKind
    at: AwareDatetime
    detail: str = ""
    config_version: int | None = None
    queue_depth: int | None = Field(default=None, ge=0)
    dropped_total: int | None = Field(default=None, ge=0)
    buses: dict[str, BusStats] = Field(default_factory=dict)
    device: DeviceKey | None = None


def schema_version(raw: bytes) -> int | None:
    """Read the ``v`` field of a payload without validating the rest (None if unreadable)."""
    try:
        doc: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    v = doc.get("v")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def dump(payload: _Payload) -> bytes:
    return payload.model_dump_json().encode()


def utc_iso(ts: datetime) -> str:
    return ts.isoformat()


class BrokerAddress(BaseModel):
    """Where a broker is: parsed from ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://``."""

    model_config = ConfigDict(frozen=True)
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"unsupported broker URL scheme in {parts.scheme!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )
