"""Profile schema: validated when a profile file is loaded.

A profile describes one meter model: protocol, serial defaults, channels (with a register
stride per channel for multi-circuit boxes), each quantity's register (Modbus), data
identifier (DL/T 645) or field of the metering reply (CJ/T 188) with its type, word order,
Decimal scale and unit, how the supply (relay/valve) state is read, the control actions and,
for meters that keep their own balance, how a recharge is written. Registers and
identifiers no two public sources agree on are marked ``verified: false``.

One class per protocol; ``Profile`` is their union, tagged by ``protocol``.

msgspec Structs (:mod:`contract.structs`), not pydantic: the gateway agent loads profiles
and must not load pydantic. Cross-field checks are ``__post_init__``; one that blames a
single field raises ``field_error`` so the error names it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from msgspec import Meta, field

from contract.structs import Model, field_error

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
Unit = str  # one of UNITS, checked by the quantity that carries it (_check_unit)
Register = Annotated[int, Meta(ge=0, le=0xFFFF)]
U32 = Annotated[int, Meta(ge=0, le=0xFFFFFFFF)]


def _check_unit(unit: str | None) -> None:
    if unit is not None and unit not in UNITS:
        raise field_error("unit", f"unknown unit {unit!r}; known: {', '.join(sorted(UNITS))}")


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


class _Strict(Model, frozen=True, kw_only=True):
    pass


class SerialDefaults(_Strict, frozen=True, kw_only=True):
    baudrate: Annotated[int, Meta(ge=300, le=115200)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1

    @property
    def bits_per_char(self) -> int:
        """Start bit + data bits + parity bit (if any) + stop bits."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits


class SupplyMapping(_Strict, frozen=True, kw_only=True):
    """How the supply (relay/valve) state is read: ``quantity`` & ``mask`` == ``on_value``.

    ``keep_power_mask`` (optional) marks the bits that say keep-power is on."""

    quantity: str
    mask: Annotated[int, Meta(ge=1, le=0xFFFFFFFF)] = 0xFFFF
    on_value: int = 0
    off_value: int | None = None  # what the meter reports when off (default: on_value ^ mask)
    keep_power_mask: U32 = 0

    def __post_init__(self) -> None:
        if self.on_value & ~self.mask:
            raise field_error("on_value", "on_value has bits outside mask")
        if self.off_value is not None and (
            self.off_value & ~self.mask or self.off_value == self.on_value
        ):
            raise field_error("off_value", "off_value must be inside mask and differ from on_value")
        if self.keep_power_mask & self.mask:
            raise field_error("keep_power_mask", "keep_power_mask overlaps mask")

    def raw(self, on: bool, keep_power: bool = False, other: int = 0) -> int:
        """A raw state value meaning ``on`` (used by simulators)."""
        off = self.on_value ^ self.mask if self.off_value is None else self.off_value
        value = self.on_value if on else off
        return (
            (other & ~(self.mask | self.keep_power_mask))
            | value
            | (self.keep_power_mask if keep_power else 0)
        )


class _ProfileBase(_Strict, frozen=True, kw_only=True):
    protocol: ClassVar[str]  # the tag of the union (``protocol:`` in the file)
    schema_version: Literal[1]
    model: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.-]*\Z")]
    vendor: str
    description: str = ""
    utility: Literal["electricity", "water"]
    serial: SerialDefaults = field(default_factory=SerialDefaults)
    channels: Annotated[int, Meta(ge=1, le=64)] = 1
    supply: SupplyMapping | None = None
    meter_prepaid: bool = False  # the meter keeps its own balance and trips itself at zero
    verified: bool = True

    def _check_common(self, quantities: set[str], controls: set[str]) -> None:
        if self.supply is not None and self.supply.quantity not in quantities:
            raise ValueError(f"supply.quantity {self.supply.quantity!r} is not a quantity")
        supply_actions = {"trip", "close", "close_allowed", "valve_open", "valve_close"}
        if self.supply is None and supply_actions & controls:
            raise ValueError("a profile with supply controls needs a supply mapping")


# -- Modbus -----------------------------------------------------------------------------------


class ModbusQuantity(_Strict, frozen=True, kw_only=True):
    address: Register = field(name="register")
    type: DataType
    word_order: Literal["big", "little"] = "big"
    scale: Decimal = Decimal(1)
    unit: Unit | None = None
    function: Literal[3, 4] = 3
    verified: bool = True

    @property
    def count(self) -> int:
        return REGISTER_COUNT[self.type]

    def __post_init__(self) -> None:
        if not self.scale.is_finite() or self.scale <= 0:
            raise field_error("scale", "scale must be a positive decimal")
        _check_unit(self.unit)


class RegisterWrite(_Strict, frozen=True, kw_only=True):
    """A control action: write ``value`` to the register at ``address`` (function 06)."""

    address: Register = field(name="register")
    value: Annotated[int, Meta(ge=0, le=0xFFFF)]
    verified: bool = True


class ModbusRecharge(_Strict, frozen=True, kw_only=True):
    """Recharge by one function-16 write at ``address``: the amount (``amount_type``, scaled
    by ``amount_scale``) followed by the purchase count (uint16)."""

    address: Register = field(name="register")
    amount_type: Literal["uint32"] = "uint32"
    amount_scale: Decimal = Decimal("0.01")
    verified: bool = True


class Identity(_Strict, frozen=True, kw_only=True):
    """How ``prepay-gateway scan`` recognises the model: ``quantity`` reads ``value``."""

    quantity: str
    value: int
    verified: bool = True


class ModbusProfile(_ProfileBase, frozen=True, kw_only=True, tag_field="protocol", tag="modbus"):
    protocol: ClassVar[str] = "modbus"
    channel_stride: Annotated[int, Meta(ge=0)] = 0  # register offset between channels
    max_read_gap: Annotated[int, Meta(ge=0, le=32)] = 0  # unused registers a block may span
    max_block: Annotated[int, Meta(ge=1, le=125)] = 64
    quantities: dict[str, ModbusQuantity]
    #: quantities read once per device, not per channel (e.g. model id)
    shared: frozenset[str] = frozenset()
    controls: dict[ControlName, RegisterWrite] = field(default_factory=dict)
    recharge: ModbusRecharge | None = None
    identity: Identity | None = None

    def __post_init__(self) -> None:
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


class DltQuantity(_Strict, frozen=True, kw_only=True):
    """One value read by data identifier. ``format`` is the standard's notation
    (``XXXXXX.XX`` is 4 BCD bytes with 2 decimals); ``kind: bits`` reads a binary status
    word of ``width`` bytes. Several quantities may share a DI (a block DI such as
    ``0001FF00`` answers total + tariffs): ``element`` picks which field of the reply."""

    di: U32
    kind: Literal["bcd", "bits"] = "bcd"
    format: str | None = None
    width: Annotated[int, Meta(ge=1, le=16)] | None = None
    signed: bool = False
    element: Annotated[int, Meta(ge=0, le=63)] = 0
    unit: Unit | None = None
    verified: bool = True

    def __post_init__(self) -> None:
        _check_unit(self.unit)
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


class DltControl(_Strict, frozen=True, kw_only=True):
    """A control action: a remote-control frame (C = 1C) with command N1."""

    command: DltCommand
    verified: bool = True


class DltRecharge(_Strict, frozen=True, kw_only=True):
    """Recharge by a write-data frame (C = 14) to ``di``: amount (``amount_format``) then
    purchase count (``count_width`` BCD bytes), lowest byte first."""

    di: U32
    amount_format: str = "XXXXXX.XX"
    count_width: Annotated[int, Meta(ge=1, le=4)] = 2
    verified: bool = False

    def __post_init__(self) -> None:
        v = self.amount_format
        m = _BCD_FORMAT.match(v)
        if m is None or (len(m.group(1)) + len(m.group(2) or "")) % 2:
            raise field_error("amount_format", f"amount_format {v!r} is not like XXXXXX.XX")


class Dlt645Profile(_ProfileBase, frozen=True, kw_only=True, tag_field="protocol", tag="dlt645"):
    protocol: ClassVar[str] = "dlt645"
    edition: Literal["2007", "1997"] = "2007"
    wakeup: bool = True  # send FE FE FE FE before each request
    password_level: Annotated[int, Meta(ge=0, le=0xFF)] = 2
    password: Annotated[str, Meta(pattern=r"^[0-9A-Fa-f]{6}\Z")] = "000000"  # noqa: S105
    operator_code: Annotated[str, Meta(pattern=r"^[0-9A-Fa-f]{8}\Z")] = "00000000"
    quantities: dict[str, DltQuantity]
    controls: dict[ControlName, DltControl] = field(default_factory=dict)
    recharge: DltRecharge | None = None

    def __post_init__(self) -> None:
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

    def reads(self) -> dict[int, list[tuple[str, DltQuantity]]]:
        """One request per DI: the quantities each DI's reply carries, in element order."""
        out: dict[int, list[tuple[str, DltQuantity]]] = {}
        for name, q in self.quantities.items():
            out.setdefault(q.di, []).append((name, q))
        return {di: sorted(items, key=lambda i: i[1].element) for di, items in out.items()}


# -- CJ/T 188 ---------------------------------------------------------------------------------

CjtField = Literal["current_flow", "settlement_flow", "status_word", "valve_state", "battery_low"]


class CjtQuantity(_Strict, frozen=True, kw_only=True):
    """One field of the metering-data reply (DI 90 1F)."""

    field: CjtField
    unit: Unit | None = None
    verified: bool = True

    def __post_init__(self) -> None:
        _check_unit(self.unit)


Code = Annotated[int, Meta(ge=0, le=3)]


class StatusBits(_Strict, frozen=True, kw_only=True):
    """Where the valve state and battery-low bit sit in the status word (makers differ)."""

    valve_shift: Annotated[int, Meta(ge=0, le=14)] = 0
    open_code: Code = 0b00
    closed_code: Code = 0b01
    abnormal_code: Code = 0b11
    battery_low_bit: Annotated[int, Meta(ge=0, le=15)] = 2


class CjtControl(_Strict, frozen=True, kw_only=True):
    valve: Literal["open", "close"]
    verified: bool = True


class Cjt188Profile(_ProfileBase, frozen=True, kw_only=True, tag_field="protocol", tag="cjt188"):
    protocol: ClassVar[str] = "cjt188"
    meter_type: Annotated[int, Meta(ge=0, le=0xFF)] = 0x10
    decimals: Annotated[int, Meta(ge=0, le=4)] = 2  # implied decimals of flows
    di_low_first: bool = False
    wakeup: bool = True
    status: StatusBits = field(default_factory=StatusBits)
    quantities: dict[str, CjtQuantity]
    controls: dict[ControlName, CjtControl] = field(default_factory=dict)

    def __post_init__(self) -> None:
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


AnyProfile = ModbusProfile | Dlt645Profile | Cjt188Profile
Profile = AnyProfile  # tagged by ``protocol``
