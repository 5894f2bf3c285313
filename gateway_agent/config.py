"""The agent's configuration: a local YAML file, validated with clear errors.

msgspec Structs (:mod:`contract.structs`), not pydantic: the agent does not load pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from msgspec import Meta, field

from contract.mqtt import CONFIG_PUSHABLE, DeviceKey, GatewayId
from contract.structs import ContractError, Model


class ConfigError(ValueError):
    pass


#: A duration in seconds: positive, finite (``"Infinity"`` decodes as a float) and at most a
#: week, so no interval or timeout can silence a gateway for good.
Positive = Annotated[float, Meta(gt=0, le=7 * 24 * 3600)]
Baudrate = Annotated[int, Meta(ge=300, le=115200)]
_HEX = r"^[0-9A-Fa-f]{%d}\Z"


class _Strict(Model, frozen=True, kw_only=True):
    pass


class DeviceConfig(_Strict, frozen=True, kw_only=True):
    """One meter on a bus. Modbus meters are found by ``unit``; DL/T 645 meters by their
    12-digit ``address`` and CJ/T 188 meters by their 14-digit one. DL/T 645 credentials
    (password level, password, operator code) default to the profile's."""

    key: DeviceKey
    profile: str
    unit: Annotated[int, Meta(ge=0, le=247)] = 1
    address: Annotated[str, Meta(pattern=r"^[0-9A-Fa-f]{12}([0-9A-Fa-f]{2})?\Z")] | None = None
    poll_interval_s: Positive | None = None
    password_level: Annotated[int, Meta(ge=0, le=0xFF)] | None = None
    password: Annotated[str, Meta(pattern=_HEX % 6)] | None = None
    operator_code: Annotated[str, Meta(pattern=_HEX % 8)] | None = None

    @property
    def ident(self) -> str:
        """How the device is addressed on its bus, for messages."""
        return f"address {self.address}" if self.address else f"unit {self.unit}"


class SerialPortConfig(_Strict, frozen=True, kw_only=True):
    """A local serial port (RS-485 adapter). Unset line settings come from the profiles."""

    port: str
    baudrate: Baudrate | None = None
    parity: Literal["N", "E", "O"] | None = None
    bytesize: Literal[7, 8] | None = None
    stopbits: Literal[1, 2] | None = None


class BusConfig(_Strict, frozen=True, kw_only=True):
    """``transport``: ``modbus_tcp`` (Modbus TCP, MBAP header), ``tcp`` (a serial-to-Ethernet
    converter carrying the meters' own frames: Modbus RTU, DL/T 645 or CJ/T 188) or
    ``serial`` (a local RS-485 port). All devices on one bus speak one protocol."""

    name: DeviceKey
    transport: Literal["modbus_tcp", "tcp", "serial"] = "modbus_tcp"
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 502
    serial: SerialPortConfig | None = None
    timeout_s: Positive = 1.0
    silence_s: Annotated[float, Meta(ge=0)] | None = None  # inter-frame; default 3.5 chars
    #: a data identifier / register run a meter refuses is asked again after this long
    refused_retry_s: Positive = 3600.0
    devices: list[DeviceConfig]

    def __post_init__(self) -> None:
        if self.transport == "serial" and self.serial is None:
            raise ValueError(f"bus {self.name}: transport serial needs a serial: section")
        idents = [d.ident for d in self.devices]
        dup = sorted({i for i in idents if idents.count(i) > 1})
        if dup:
            raise ValueError(f"bus {self.name}: two devices share {', '.join(dup)}")


class TlsConfig(_Strict, frozen=True, kw_only=True):
    """TLS to the broker: the CA that signed it and, for mutual TLS, our certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")


class AgentConfig(_Strict, frozen=True, kw_only=True):
    gateway: GatewayId
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    tls: TlsConfig | None = None
    mqtt_prefix: str = "prepay"
    data_dir: Path = Path("gateway-data")
    profiles_dir: Path | None = None
    poll_interval_s: Positive = 15.0
    publish_batch: Annotated[int, Meta(ge=1, le=5000)] = 500
    publish_window: Annotated[int, Meta(ge=1, le=256)] = 8  # batches awaiting receipt
    receipt_timeout_s: Positive = 15.0  # re-send a batch after
    queue_cap: Annotated[int, Meta(ge=100)] = 1_000_000
    heartbeat_s: Positive = 60.0
    reconnect_min_s: Positive = 1.0
    reconnect_max_s: Positive = 60.0
    config_version: Annotated[int, Meta(ge=0)] = 0  # version of the applied config
    #: extra meter profiles pushed by the cloud
    profiles: list[dict[str, Any]] = field(default_factory=list)
    buses: list[BusConfig]

    def __post_init__(self) -> None:
        keys = [d.key for b in self.buses for d in b.devices]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"device keys used twice: {sorted(dup)}")


def _problems(exc: ContractError) -> str:
    return f"{'.'.join(str(p) for p in exc.loc) or '(config)'}: {exc.reason}"


def merge_pushed(local: AgentConfig, version: int, pushed: dict[str, object]) -> AgentConfig:
    """The running config with the cloud's pushed fields applied (ConfigError if invalid)."""
    foreign = sorted(set(pushed) - CONFIG_PUSHABLE)
    if foreign:
        raise ConfigError(f"fields that cannot be pushed: {', '.join(foreign)}")
    doc = local.model_dump() | pushed | {"config_version": version}
    try:
        return AgentConfig.model_validate(doc)
    except ContractError as exc:
        raise ConfigError(_problems(exc)) from exc


def load_config(path: Path) -> AgentConfig:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        return AgentConfig.model_validate(doc)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except ContractError as exc:
        raise ConfigError(f"{path}: {_problems(exc)}") from exc
