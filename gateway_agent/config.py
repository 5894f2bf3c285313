"""The agent's configuration: a local YAML file, validated with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contract.mqtt import CONFIG_PUSHABLE, DeviceKey, GatewayId


class ConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(_Strict):
    """One meter on a bus. Modbus meters are found by ``unit``; DL/T 645 meters by their
    12-digit ``address`` and CJ/T 188 meters by their 14-digit one. DL/T 645 credentials
    (password level, password, operator code) default to the profile's."""

    key: DeviceKey
    profile: str
    unit: Annotated[int, Field(ge=0, le=247)] = 1
    address: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{12}([0-9A-Fa-f]{2})?$")
    poll_interval_s: float | None = Field(default=None, gt=0)
    password_level: int | None = Field(default=None, ge=0, le=0xFF)
    password: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{6}$")
    operator_code: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{8}$")

    @property
    def ident(self) -> str:
        """How the device is addressed on its bus, for messages."""
        return f"address {self.address}" if self.address else f"unit {self.unit}"


class SerialPortConfig(_Strict):
    """A local serial port (RS-485 adapter). Unset line settings come from the profiles."""

    port: str
    baudrate: int | None = Field(default=None, ge=300, le=115200)
    parity: Literal["N", "E", "O"] | None = None
    bytesize: Literal[7, 8] | None = None
    stopbits: Literal[1, 2] | None = None


class BusConfig(_Strict):
    """``transport``: ``modbus_tcp`` (Modbus TCP, MBAP header), ``tcp`` (a serial-to-Ethernet
    converter carrying the meters' own frames: Modbus RTU, DL/T 645 or CJ/T 188) or
    ``serial`` (a local RS-485 port). All devices on one bus speak one protocol."""

    name: DeviceKey
    transport: Literal["modbus_tcp", "tcp", "serial"] = "modbus_tcp"
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    serial: SerialPortConfig | None = None
    timeout_s: float = Field(default=1.0, gt=0)
    silence_s: float | None = Field(
        default=None, ge=0, description="inter-frame silence; default 3.5 characters"
    )
    devices: list[DeviceConfig]

    @model_validator(mode="after")
    def _unique_addresses(self) -> BusConfig:
        if self.transport == "serial" and self.serial is None:
            raise ValueError(f"bus {self.name}: transport serial needs a serial: section")
        idents = [d.ident for d in self.devices]
        dup = sorted({i for i in idents if idents.count(i) > 1})
        if dup:
            raise ValueError(f"bus {self.name}: two devices share {', '.join(dup)}")
        return self


class TlsConfig(_Strict):
    """TLS to the broker: the CA that signed it and, for mutual TLS, our certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: cert_file and key_file go together")
        return self


class AgentConfig(_Strict):
    gateway: GatewayId
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    tls: TlsConfig | None = None
    mqtt_prefix: str = "prepay"
    data_dir: Path = Path("gateway-data")
    profiles_dir: Path | None = None
    poll_interval_s: float = Field(default=15.0, gt=0)
    publish_batch: int = Field(default=500, ge=1, le=5000)
    publish_window: int = Field(default=8, ge=1, le=256, description="batches awaiting receipt")
    receipt_timeout_s: float = Field(default=15.0, gt=0, description="re-send a batch after")
    queue_cap: int = Field(default=1_000_000, ge=100)
    heartbeat_s: float = Field(default=60.0, gt=0)
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    config_version: int = Field(default=0, ge=0, description="version of the applied config")
    profiles: list[dict[str, object]] = Field(
        default_factory=list, description="extra meter profiles pushed by the cloud"
    )
    buses: list[BusConfig]

    @model_validator(mode="after")
    def _unique_keys(self) -> AgentConfig:
        keys = [d.key for b in self.buses for d in b.devices]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"device keys used twice: {sorted(dup)}")
        return self


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}" for e in exc.errors()
    )


def merge_pushed(local: AgentConfig, version: int, pushed: dict[str, object]) -> AgentConfig:
    """The running config with the cloud's pushed fields applied (ConfigError if invalid)."""
    foreign = sorted(set(pushed) - CONFIG_PUSHABLE)
    if foreign:
        raise ConfigError(f"fields that cannot be pushed: {', '.join(foreign)}")
    doc = local.model_dump() | pushed | {"config_version": version}
    try:
        return AgentConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from exc


def load_config(path: Path) -> AgentConfig:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        return AgentConfig.model_validate(doc)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_problems(exc)}") from exc
