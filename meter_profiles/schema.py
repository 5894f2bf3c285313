"""Profile schema: validated when a profile file is loaded.

A profile describes one meter model: protocol, serial defaults, channels (with a register
stride per channel for multi-circuit boxes), each quantity's register, data type, word
order, Decimal scale and unit, how the supply state is read, and the control actions.
Registers no two public sources agree on are marked ``verified: false``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

DataType = Literal["uint16", "int16", "uint32", "int32", "float32"]
REGISTER_COUNT: dict[str, int] = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SerialDefaults(_Strict):
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1


class Quantity(_Strict):
    address: int = Field(alias="register", ge=0, le=0xFFFF)
    type: DataType
    word_order: Literal["big", "little"] = "big"
    scale: Decimal = Decimal(1)
    unit: str | None = None
    function: Literal[3, 4] = 3
    verified: bool = True

    @property
    def count(self) -> int:
        return REGISTER_COUNT[self.type]

    @field_validator("scale")
    @classmethod
    def _positive_scale(cls, v: Decimal) -> Decimal:
        if not v.is_finite() or v <= 0:
            raise ValueError("scale must be a positive decimal")
        return v


class SupplyMapping(_Strict):
    """How the supply (relay/valve) state is read: ``quantity`` & ``mask`` == ``on_value``."""

    quantity: str
    mask: int = Field(default=0xFFFF, ge=1, le=0xFFFFFFFF)
    on_value: int = 0


class ControlAction(_Strict):
    """A control action: write ``value`` to the register at ``address`` (function 06)."""

    address: int = Field(alias="register", ge=0, le=0xFFFF)
    value: int = Field(ge=0, le=0xFFFF)
    verified: bool = True


ControlName = Literal[
    "trip", "close", "close_allowed", "keep_power_on", "keep_power_off", "valve_open", "valve_close"
]


class Profile(_Strict):
    schema_version: Literal[1]
    model: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    vendor: str
    description: str = ""
    protocol: Literal["modbus"]
    utility: Literal["electricity", "water"]
    serial: SerialDefaults = SerialDefaults()
    channels: int = Field(default=1, ge=1, le=64)
    channel_stride: int = Field(default=0, ge=0, description="register offset between channels")
    max_read_gap: int = Field(
        default=0, ge=0, le=32, description="unused registers a block may span"
    )
    max_block: int = Field(default=64, ge=1, le=125)
    quantities: dict[str, Quantity]
    supply: SupplyMapping | None = None
    controls: dict[ControlName, ControlAction] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        taken: dict[tuple[int, int], str] = {}
        for name, q in self.quantities.items():
            for reg in range(q.address, q.address + q.count):
                key = (q.function, reg)
                if key in taken:
                    raise ValueError(
                        f"quantity {name!r} overlaps {taken[key]!r} at register {reg:#06x}"
                    )
                taken[key] = name
        if self.supply is not None and self.supply.quantity not in self.quantities:
            raise ValueError(f"supply.quantity {self.supply.quantity!r} is not a quantity")
        if self.channels > 1 and self.channel_stride == 0:
            raise ValueError("a multi-channel profile needs channel_stride")
        return self

    def register_of(self, name: str, channel: int) -> int:
        return self.quantities[name].address + (channel - 1) * self.channel_stride
