"""MQTT contract between gateway agents and the cloud.

Both sides import this module and nothing else of each other. Every payload carries a
schema version ``v``. A receiver decodes a payload as its model; only a payload the model
refuses is read again, as an :func:`envelope`, for its version (one it does not know is
left for a newer receiver) and for which batch it was. Decimal quantities travel as JSON
strings, never floats.

The payloads are msgspec Structs (see :mod:`contract.structs`): the gateway agent must not
load pydantic (memory), and the wire format is the one the pydantic models wrote, byte for
byte (``tests/unit/test_contract_golden.py``). Invalid payloads raise :class:`ContractError`.

Topics (``prefix`` is configurable, default ``prepay``)::

    {prefix}/gw/{gateway}/up/telemetry   readings batches            gateway -> cloud (QoS 1)
    {prefix}/gw/{gateway}/up/ack         command acknowledgements    gateway -> cloud (QoS 1)
    {prefix}/gw/{gateway}/up/event       gateway events/alarms       gateway -> cloud (QoS 1)
    {prefix}/gw/{gateway}/up/state       online/offline, retained    gateway -> cloud (QoS 1)
    {prefix}/gw/{gateway}/down/cmd       commands                    cloud -> gateway (QoS 1)
    {prefix}/gw/{gateway}/down/config    pushed config, retained     cloud -> gateway (QoS 1)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta, field

from contract.structs import MAX_JSON_BYTES, Model, encoder, field_error

# ContractError: what every model's model_validate / model_validate_json raises.
from contract.structs import ContractError as ContractError

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"
GatewayId = Annotated[str, Meta(pattern=_ID)]
DeviceKey = Annotated[str, Meta(pattern=_ID)]
AwareDatetime = Annotated[datetime, Meta(tz=True)]
NonNegative = Annotated[int, Meta(ge=0)]
Channel = Annotated[int, Meta(ge=1, le=64)]
BootId = Annotated[str, Meta(min_length=1, max_length=64)]


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


class _Payload(Model, frozen=True, kw_only=True):
    v: Literal[1] = 1


class Supply(StrEnum):
    """Supply state of a metered circuit: relay closed (on) or open (off); valve open/closed."""

    ON = "on"
    OFF = "off"


class Reading(Model, frozen=True, kw_only=True):
    """One measurement of one channel of one device, at the meter's measurement time."""

    device: DeviceKey
    channel: Channel = 1
    measured_at: AwareDatetime
    total: Decimal | None = None  # cumulative register, kWh or m3
    tou: tuple[Decimal, Decimal, Decimal, Decimal] | None = None  # cumulative 尖/峰/平/谷
    voltage: Decimal | None = None
    current: Decimal | None = None
    power: Decimal | None = None  # active power, kW
    supply: Supply | None = None
    meter_balance: Decimal | None = None  # meter-held balance, yuan
    purchase_count: int | None = None


def _limit(precision: int, scale: int) -> Decimal:
    """The bound a value must stay strictly inside to be stored as NUMERIC(precision,
    scale): PostgreSQL rounds half away from zero to the scale, and the rounded value must
    be below 10^(precision - scale)."""
    return Decimal(10) ** (precision - scale) - Decimal(5) * Decimal(10) ** (-scale - 1)


#: Every Decimal of a reading with the bound of the column that stores it (cloud/schema.py
#: ``Reading``). A value the cloud could not store is refused here, naming the field, so a
#: batch is either valid and storable or rejected with a reason — never re-sent forever.
READING_LIMITS: tuple[tuple[str, Decimal], ...] = (
    ("total", _limit(16, 3)),
    ("voltage", _limit(8, 1)),
    ("current", _limit(10, 3)),
    ("power", _limit(10, 4)),
    ("meter_balance", _limit(14, 2)),
)
TOU_LIMIT = _limit(16, 3)
MAX_PURCHASE_COUNT = 2**31 - 1  # an integer column
#: Dates as old as year 1 or as late as 9999 decode; a gateway's clock is never that far off.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _in_range(value: Decimal, limit: Decimal) -> bool:
    """Strictly inside ±limit; False for ±Infinity and NaN (a comparison with NaN signals).
    Two comparisons: this runs for every quantity of every reading the cloud receives."""
    try:
        return -limit < value < limit
    except InvalidOperation:
        return False


def _why(value: Decimal, limit: Decimal) -> str:
    if not value.is_finite():
        return f"must be a finite number, not {value}"
    return f"out of range: {value} (the magnitude must stay below {limit.normalize():f})"


_TOTAL, _VOLTAGE, _CURRENT, _POWER, _BALANCE = (limit for _, limit in READING_LIMITS)


def _check_reading(i: int, r: Reading) -> None:
    # Written out field by field, the loop over names only to name a refused field: this
    # runs for every reading the cloud receives (about 0.9 µs a reading).
    if not (
        (r.total is None or _in_range(r.total, _TOTAL))
        and (r.voltage is None or _in_range(r.voltage, _VOLTAGE))
        and (r.current is None or _in_range(r.current, _CURRENT))
        and (r.power is None or _in_range(r.power, _POWER))
        and (r.meter_balance is None or _in_range(r.meter_balance, _BALANCE))
    ):
        for name, limit in READING_LIMITS:
            value = getattr(r, name)
            if value is not None and not _in_range(value, limit):
                raise field_error(f"readings.{i}.{name}", _why(value, limit))
    if r.tou is not None:
        for j, value in enumerate(r.tou):
            if not _in_range(value, TOU_LIMIT):
                raise field_error(f"readings.{i}.tou.{j}", _why(value, TOU_LIMIT))
    if r.purchase_count is not None and not 0 <= r.purchase_count <= MAX_PURCHASE_COUNT:
        raise field_error(f"readings.{i}.purchase_count", f"out of range: {r.purchase_count}")
    if not EARLIEST <= r.measured_at < LATEST:
        raise field_error(f"readings.{i}.measured_at", f"not a plausible time: {r.measured_at}")


class TelemetryBatch(_Payload, frozen=True, kw_only=True):
    gateway: GatewayId
    boot_id: BootId
    seq: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    sent_at: AwareDatetime
    readings: Annotated[tuple[Reading, ...], Meta(max_length=5000)]

    def __post_init__(self) -> None:
        # One pass over the batch (not a hook per reading: this is the ingest's hot path).
        for i, r in enumerate(self.readings):
            _check_reading(i, r)


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


class Command(_Payload, frozen=True, kw_only=True):
    id: UUID
    device: DeviceKey
    channel: Channel = 1
    action: CommandAction
    params: dict[str, str] = field(default_factory=dict)
    issued_at: AwareDatetime
    deadline: AwareDatetime


class ReceiptStatus(StrEnum):
    STORED = "stored"  # committed (new, duplicate or quarantined readings alike)
    REJECTED = "rejected"  # the batch can never be stored (invalid); resending will not help


class Receipt(_Payload, frozen=True, kw_only=True):
    """The cloud's end-to-end acknowledgement of a telemetry batch. A broker's PUBACK only
    says the broker has it; a broker that restarts before an ingest worker subscribes again
    loses it. The gateway keeps a batch until this receipt arrives and re-sends it
    otherwise; duplicates are no-ops in the cloud."""

    gateway: GatewayId
    boot_id: BootId
    seq: NonNegative
    status: ReceiptStatus = ReceiptStatus.STORED
    stored: NonNegative = 0
    duplicates: NonNegative = 0
    quarantined: NonNegative = 0
    detail: str = ""


#: What a gateway takes from the cloud in a pushed config; identity, broker and paths stay local.
CONFIG_PUSHABLE = frozenset(
    {"poll_interval_s", "publish_batch", "heartbeat_s", "buses", "profiles"}
)


class ConfigPush(_Payload, frozen=True, kw_only=True):
    """A versioned configuration for one gateway, retained on its ``down/config`` topic. The
    gateway applies a higher version than it runs and answers with an ack carrying ``id``."""

    id: UUID
    version: Annotated[int, Meta(ge=1)]
    config: dict[str, Any]
    issued_at: AwareDatetime


class AckStatus(StrEnum):
    OK = "ok"  # executed; the meter confirmed
    FAILED = "failed"  # executed but the meter refused or did not answer
    EXPIRED = "expired"  # deadline passed before execution; the meter was not touched
    INVALID = "invalid"  # payload could not be understood; the meter was not touched
    SUPERSEDED = "superseded"  # a newer supply command for the channel came first; not touched


class Ack(_Payload, frozen=True, kw_only=True):
    id: UUID | None  # command id; None when the payload had no readable id
    gateway: GatewayId
    status: AckStatus
    detail: str = ""
    meter_answer: dict[str, str] = field(default_factory=dict)
    reported_supply: Supply | None = None
    device: DeviceKey | None = None
    channel: int | None = None
    at: AwareDatetime
    duplicate: bool = False  # already executed; stored result re-sent


class GatewayState(_Payload, frozen=True, kw_only=True):
    gateway: GatewayId
    online: bool
    boot_id: str | None = None
    at: AwareDatetime | None = None


class BusStats(Model, frozen=True, kw_only=True):
    """One bus since the previous heartbeat (counters) and now (backlog)."""

    transactions: NonNegative
    timeouts: NonNegative
    errors: NonNegative
    utilisation: Annotated[float, Meta(ge=0, le=1)]  # share of the interval the line was busy
    devices_backing_off: NonNegative = 0
    #: requests a meter answered "no such data" / exception 2 (the quantities are skipped)
    refused: NonNegative = 0
    #: data identifiers / register runs not asked now because a meter refused them
    refused_items: NonNegative = 0


class EventKind(StrEnum):
    HEARTBEAT = "heartbeat"
    QUEUE_OVERFLOW = "queue_overflow"  # the outbox hit its cap and dropped readings
    CONFIG_APPLIED = "config_applied"
    CONFIG_REJECTED = "config_rejected"
    BATCH_REJECTED = "batch_rejected"  # the cloud can never store a batch: it was dropped
    DEVICE_OFFLINE = "device_offline"
    DEVICE_ONLINE = "device_online"


class GatewayEvent(_Payload, frozen=True, kw_only=True):
    """Something the gateway reports besides readings: heartbeats (with bus statistics and
    the outbox backlog), queue overflow alarms, config applied / rejected, device health."""

    gateway: GatewayId
    boot_id: BootId
    kind: EventKind
    at: AwareDatetime
    detail: str = ""
    config_version: int | None = None
    queue_depth: NonNegative | None = None
    dropped_total: NonNegative | None = None
    buses: dict[str, BusStats] = field(default_factory=dict)
    device: DeviceKey | None = None


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """What a receiver can still read of a payload its model refused: the schema version
    and, for a telemetry batch, which batch it was (to answer it with a ``rejected``
    receipt). Every field is optional and of any type; the rest of the payload is skipped."""

    v: Any = None
    gateway: Any = None
    boot_id: Any = None
    seq: Any = None

    @property
    def version(self) -> int | None:
        v = self.v
        return v if isinstance(v, int) and not isinstance(v, bool) else None


def envelope(raw: bytes) -> Envelope | None:
    """The :class:`Envelope` of a payload, or None if it is no JSON object at all (or too
    big, or nested too deeply to read). Never raises."""
    if len(raw) > MAX_JSON_BYTES:
        return None
    try:
        return msgspec.json.decode(raw, type=Envelope)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def dump(payload: _Payload) -> bytes:
    return encoder.encode(payload)


def utc_iso(ts: datetime) -> str:
    return ts.isoformat()


class BrokerAddress(msgspec.Struct, frozen=True, kw_only=True):
    """Where a broker is: parsed from ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://``."""

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
