"""The agent's configuration: a local YAML file, validated with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contract.mqtt import DeviceKey, GatewayId


class ConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(_Strict):
    key: DeviceKey
    profile: str
    unit: Annotated[int, Field(ge=0, le=247)] = 1
    poll_interval_s: float | None = Field(default=None, gt=0)


class BusConfig(_Strict):
    name: DeviceKey
    transport: Literal["modbus_tcp"] = "modbus_tcp"
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)
    timeout_s: float = Field(default=1.0, gt=0)
    devices: list[DeviceConfig]

    @model_validator(mode="after")
    def _unique_units(self) -> BusConfig:
        units = [d.unit for d in self.devices]
        if len(units) != len(set(units)):
            raise ValueError(f"bus {self.name}: two devices share a unit address")
        return self


class AgentConfig(_Strict):
    gateway: GatewayId
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_prefix: str = "prepay"
    data_dir: Path = Path("gateway-data")
    profiles_dir: Path | None = None
    poll_interval_s: float = Field(default=15.0, gt=0)
    publish_batch: int = Field(default=500, ge=1, le=5000)
    queue_cap: int = Field(default=1_000_000, ge=100)
    heartbeat_s: float = Field(default=60.0, gt=0)
    buses: list[BusConfig]

    @model_validator(mode="after")
    def _unique_keys(self) -> AgentConfig:
        keys = [d.key for b in self.buses for d in b.devices]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise ValueError(f"device keys used twice: {sorted(dup)}")
        return self


def load_config(path: Path) -> AgentConfig:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        return AgentConfig.model_validate(doc)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
