"""Profile schema: validated when a profile file is loaded.

A profile describes one meter model: protocol, serial defaults, channels (with a register
stride per channel for multi-circuit boxes), each quantity's register (Modbus), data
identifier (DL/T 645) or field of the metering reply (CJ/T 188) with its type, word order,
Decimal scale and unit, how the supply (relay/valve) state is read, the control actions and,
for meters that keep their own balance, how a recharge is written. Registers and
identifiers no two public sources agree on are marked ``verified: false``.

One class per protocol; ``Profile`` is their union, discriminated on ``protocol``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1

DataType = Literal["uint16", "int16", "uint32", "int32", "float32"]
REGISTER_COUNT: dict[str, int] = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}

#: Units a quantity may carry (what the cloud knows how to store and show).
UNITS = frozenset(
    {
        "kWh",
        "kvarh",
        "kW",
        "kvar",
        "kVA",
        "V",
        "A",
        "Hz",
        "yuan",
        "m³",
        "L",
        "m³/h",
        "L/h",
        "°C",
        "%",
    }
)
Unit = Annotated[str, AfterValidator(lambda u: _known_unit(u))]


def _known_unit(unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; known: {', '.join(sorted(UNITS))}")
    return unit


ControlName = Literal[
    "trip",
    "close",
    "close_allowed",
    "keep_power_on",
    "keep_power_off",
    "alarm",
    "alarm_release",
    "valve_open",
    "valve_close",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SerialDefaults(_Strict):
    baudrate: int = Field(default=9600, ge=300, le=115200)
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1

    @property
    def bits_per_char(self) -> int:
        """Start bit + data bits + parity bit (if any) + stop bits."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits


class SupplyMapping(_Strict):
    """How the supply (relay/valve) state is read: ``quantity`` & ``mask`` == ``on_value``.

    ``keep_power_mask`` (optional) marks the bits that say keep-power is on."""

    quantity: str
    mask: int = Field(default=0xFFFF, ge=1, le=0xFFFFFFFF)
    on_value: int = 0
    off_value: int | None = Field(
        default=None, description="what the meter reports when off (default: on_value ^ mask)"
    )
    keep_power_mask: int = Field(default=0, ge=0, le=0xFFFFFFFF)

    @model_validator(mode="after")
    def _on_inside_mask(self) -> SupplyMapping:
        if self.on_value & ~self.mask:
            raise ValueError("on_value has bits outside mask")
        if self.off_value is not None and (
            self.off_value & ~self.mask or self.off_value == self.on_value
        ):
            raise ValueError("off_value must be inside mask and differ from on_value")
        if self.keep_power_mask & self.mask:
            raise ValueError("keep_power_mask overlaps mask")
        return self

    def raw(self, on: bool, keep_power: bool = False, other: int = 0) -> int:
        """A raw state value meaning ``on`` (used by simulators)."""
        off = self.on_value ^ self.mask if self.off_value is None else self.off_value
        value = self.on_value if on else off
        return (
            (other & ~(self.mask | self.keep_power_mask))
            | value
            | (self.keep_power_mask if keep_power else 0)
        )


class _ProfileBase(_Strict):
    schema_version: Literal[1]
    model: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    vendor: str
    description: str = ""
    utility: Literal["electricity", "water"]
    serial: SerialDefaults = SerialDefaults()
    channels: int = Field(default=1, ge=1, le=64)
    supply: SupplyMapping | None = None
    meter_prepaid: bool = Field(
        default=False, description="the meter keeps its own balance and trips itself at zero"
    )
    verified: bool = True

    def _check_common(self, quantities: set[str], controls: set[str]) -> None:
        if self.supply is not None and self.supply.quantity not in quantities:
            raise ValueError(f"supply.quantity {self.supply.quantity!r} is not a quantity")
        supply_actions = {"trip", "close", "close_allowed", "valve_open", "valve_close"}
        if self.supply is None and supply_actions & controls:
            raise ValueError("a profile with supply controls needs a supply mapping")


# -- Modbus -----------------------------------------------------------------------------------


class ModbusQuantity(_Strict):
    address: int = Field(alias="register", ge=0, le=0xFFFF)
    type: DataType
    word_order: Literal["big", "little"] = "big"
    scale: Decimal = Decimal(1)
    unit: Unit | None = None
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


class RegisterWrite(_Strict):
    """A control action: write ``value`` to the register at ``address`` (function 06)."""

    address: int = Field(alias="register", ge=0, le=0xFFFF)
    value: int = Field(ge=0, le=0xFFFF)
    verified: bool = True


class ModbusRecharge(_Strict):
    """Recharge by one function-16 write at ``address``: the amount (``amount_type``, scaled
    by ``amount_scale``) followed by the purchase count (uint16)."""

    address: int = Field(alias="register", ge=0, le=0xFFFF)
    amount_type: Literal["uint32"] = "uint32"
    amount_scale: Decimal = Decimal("0.01")
    verified: bool = True


class Identity(_Strict):
    """How ``prepay-gateway scan`` recognises the model: ``quantity`` reads ``value``."""

    quantity: str
    value: int
    verified: bool = True


class ModbusProfile(_ProfileBase):
    protocol: Literal["modbus"]
    channel_stride: int = Field(default=0, ge=0, description="register offset between channels")
    max_read_gap: int = Field(
        default=0, ge=0, le=32, description="unused registers a block may span"
    )
    max_block: int = Field(default=64, ge=1, le=125)
    quantities: dict[str, ModbusQuantity]
    shared: frozenset[str] = Field(
        default=frozenset(),
        description="quantities read once per device, not per channel (e.g. model id)",
    )
    controls: dict[ControlName, RegisterWrite] = Field(default_factory=dict)
    recharge: ModbusRecharge | None = None
    identity: Identity | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModbusProfile:
        self._check_common(set(self.quantities), set(self.controls))
        if self.identity is not None and self.identity.quantity not in self.quantities:
            raise ValueError(f"identity.quantity {self.identity.quantity!r} is not a quantity")
        unknown = self.shared - self.quantities.keys()
        if unknown:
            raise ValueError(f"shared names unknown quantities: {sorted(unknown)}")
        if self.channels > 1 and self.channel_stride == 0:
            raise ValueError("a multi-channel profile needs channel_stride")
        taken: dict[tuple[int, int], str] = {}
        for ch in range(1, self.channels + 1):
            for name, q in self.quantities.items():
                if name in self.shared and ch > 1:
                    continue
                base = self.register_of(name, ch)
                if base + q.count - 1 > 0xFFFF:
                    raise ValueError(f"quantity {name!r} channel {ch} runs past register 0xFFFF")
                for reg in range(base, base + q.count):
                    key = (q.function, reg)
                    where = f"{name!r}" + (f" (channel {ch})" if self.channels > 1 else "")
                    if key in taken:
                        raise ValueError(
                            f"quantity {where} overlaps {taken[key]} at register {reg:#06x}"
                        )
                    taken[key] = where
        if self.meter_prepaid and self.recharge is None:
            raise ValueError("meter_prepaid needs a recharge mapping")
        return self

    def register_of(self, name: str, channel: int) -> int:
        if name in self.shared:
            return self.quantities[name].address
        return self.quantities[name].address + (channel - 1) * self.channel_stride

    def control_register(self, action: str, channel: int) -> RegisterWrite | None:
        ctl = self.controls.get(action)  # type: ignore[call-overload]
        if ctl is None:
            return None
        assert isinstance(ctl, RegisterWrite)
        return ctl.model_copy(update={"address": ctl.address + (channel - 1) * self.channel_stride})


# -- DL/T 645 ---------------------------------------------------------------------------------

_BCD_FORMAT = re.compile(r"^(X+)(?:\.(X+))?$")


class DltQuantity(_Strict):
    """One value read by data identifier. ``format`` is the standard's notation
    (``XXXXXX.XX`` is 4 BCD bytes with 2 decimals); ``kind: bits`` reads a binary status
    word of ``width`` bytes. Several quantities may share a DI (a block DI such as
    ``0001FF00`` answers total + tariffs): ``element`` picks which field of the reply."""

    di: int = Field(ge=0, le=0xFFFFFFFF)
    kind: Literal["bcd", "bits"] = "bcd"
    format: str | None = None
    width: int | None = Field(default=None, ge=1, le=16)
    signed: bool = False
    element: int = Field(default=0, ge=0, le=63)
    unit: Unit | None = None
    verified: bool = True

    @model_validator(mode="after")
    def _layout(self) -> DltQuantity:
        if self.kind == "bcd":
            if self.format is None:
                raise ValueError("a bcd quantity needs format, e.g. XXXXXX.XX")
            m = _BCD_FORMAT.match(self.format)
            if m is None:
                raise ValueError(f"format {self.format!r} is not like XXXXXX.XX")
            digits = len(m.group(1)) + len(m.group(2) or "")
            if digits % 2:
                raise ValueError(f"format {self.format!r} has an odd number of digits")
            if self.width is not None and self.width != digits // 2:
                raise ValueError(f"width {self.width} disagrees with format {self.format!r}")
        elif self.width is None:
            raise ValueError("a bits quantity needs width (bytes)")
        elif self.format is not None or self.signed:
            raise ValueError("a bits quantity takes neither format nor signed")
        return self

    @property
    def size(self) -> int:
        """Bytes of one value on the wire."""
        if self.kind == "bits":
            assert self.width is not None
            return self.width
        assert self.format is not None
        return len(self.format.replace(".", "")) // 2

    @property
    def decimals(self) -> int:
        if self.format is None or "." not in self.format:
            return 0
        return len(self.format.split(".", 1)[1])


DltCommand = Literal[
    "trip",
    "close_allowed",
    "close_immediately",
    "alarm",
    "alarm_release",
    "keep_power",
    "keep_power_release",
]


class DltControl(_Strict):
    """A control action: a remote-control frame (C = 1C) with command N1."""

    command: DltCommand
    verified: bool = True


class DltRecharge(_Strict):
    """Recharge by a write-data frame (C = 14) to ``di``: amount (``amount_format``) then
    purchase count (``count_width`` BCD bytes), lowest byte first."""

    di: int = Field(ge=0, le=0xFFFFFFFF)
    amount_format: str = "XXXXXX.XX"
    count_width: int = Field(default=2, ge=1, le=4)
    verified: bool = False

    @field_validator("amount_format")
    @classmethod
    def _format(cls, v: str) -> str:
        m = _BCD_FORMAT.match(v)
        if m is None or (len(m.group(1)) + len(m.group(2) or "")) % 2:
            raise ValueError(f"amount_format {v!r} is not like XXXXXX.XX")
        return v


class Dlt645Profile(_ProfileBase):
    protocol: Literal["dlt645"]
    edition: Literal["2007", "1997"] = "2007"
    wakeup: bool = Field(default=True, description="send FE FE FE FE before each request")
    password_level: int = Field(default=2, ge=0, le=0xFF)
    password: str = Field(default="000000", pattern=r"^[0-9A-Fa-f]{6}$")
    operator_code: str = Field(default="00000000", pattern=r"^[0-9A-Fa-f]{8}$")
    quantities: dict[str, DltQuantity]
    controls: dict[ControlName, DltControl] = Field(default_factory=dict)
    recharge: DltRecharge | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Dlt645Profile:
        self._check_common(set(self.quantities), set(self.controls))
        if self.channels != 1:
            raise ValueError("DL/T 645 profiles have one channel per meter address")
        limit = 0xFFFF if self.edition == "1997" else 0xFFFFFFFF
        taken: dict[tuple[int, int], str] = {}
        sizes: dict[int, int] = {}
        for name, q in self.quantities.items():
            if q.di > limit:
                raise ValueError(f"quantity {name!r}: DI {q.di:#x} too wide for {self.edition}")
            key = (q.di, q.element)
            if key in taken:
                raise ValueError(
                    f"quantity {name!r} reads the same DI {q.di:08X} element {q.element} "
                    f"as {taken[key]!r}"
                )
            taken[key] = name
            if sizes.setdefault(q.di, q.size) != q.size:
                raise ValueError(f"quantities sharing DI {q.di:08X} need the same size")
        if self.edition == "1997" and (self.controls or self.recharge):
            raise ValueError("DL/T 645-1997 has no remote control or recharge")
        if self.meter_prepaid and self.recharge is None:
            raise ValueError("meter_prepaid needs a recharge mapping")
        return self

    def reads(self) -> dict[int, list[tuple[str, DltQuantity]]]:
        """One request per DI: the quantities each DI's reply carries, in element order."""
        out: dict[int, list[tuple[str, DltQuantity]]] = {}
        for name, q in self.quantities.items():
            out.setdefault(q.di, []).append((name, q))
        return {di: sorted(items, key=lambda i: i[1].element) for di, items in out.items()}


# -- CJ/T 188 ---------------------------------------------------------------------------------

CjtField = Literal["current_flow", "settlement_flow", "status_word", "valve_state", "battery_low"]


class CjtQuantity(_Strict):
    """One field of the metering-data reply (DI 90 1F)."""

    field: CjtField
    unit: Unit | None = None
    verified: bool = True


class StatusBits(_Strict):
    """Where the valve state and battery-low bit sit in the status word (makers differ)."""

    valve_shift: int = Field(default=0, ge=0, le=14)
    open_code: int = Field(default=0b00, ge=0, le=3)
    closed_code: int = Field(default=0b01, ge=0, le=3)
    abnormal_code: int = Field(default=0b11, ge=0, le=3)
    battery_low_bit: int = Field(default=2, ge=0, le=15)


class CjtControl(_Strict):
    valve: Literal["open", "close"]
    verified: bool = True


class Cjt188Profile(_ProfileBase):
    protocol: Literal["cjt188"]
    meter_type: int = Field(default=0x10, ge=0, le=0xFF)
    decimals: int = Field(default=2, ge=0, le=4, description="implied decimals of flows")
    di_low_first: bool = False
    wakeup: bool = True
    status: StatusBits = StatusBits()
    quantities: dict[str, CjtQuantity]
    controls: dict[ControlName, CjtControl] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Cjt188Profile:
        self._check_common(set(self.quantities), set(self.controls))
        if self.channels != 1:
            raise ValueError("CJ/T 188 profiles have one channel per meter address")
        seen: dict[str, str] = {}
        for name, q in self.quantities.items():
            if q.field in seen:
                raise ValueError(f"quantity {name!r} reads field {q.field} as {seen[q.field]!r}")
            seen[q.field] = name
        codes = {self.status.open_code, self.status.closed_code, self.status.abnormal_code}
        if len(codes) != 3:
            raise ValueError("status codes for open, closed and abnormal must differ")
        if self.meter_prepaid:
            raise ValueError("CJ/T 188 profiles here are valve-controlled, not meter-prepaid")
        return self


Profile = Annotated[ModbusProfile | Dlt645Profile | Cjt188Profile, Field(discriminator="protocol")]
AnyProfile = ModbusProfile | Dlt645Profile | Cjt188Profile
