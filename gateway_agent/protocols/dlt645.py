"""DL/T 645-2007 and DL/T 645-1997 frame codec (Chinese watt-hour meter protocol).

Pure functions over bytes and small frozen values: no I/O, no clock. Facts come from
``PROTOCOLS.md``; anything marked unverified there is ``verified=False`` here.

Wire format (both editions)::

    [FE FE FE FE]  68  A0..A5  68  C  L  DATA(+0x33 each)  CS  16

``Frame.data`` always holds the data *without* the +0x33 offset; the offset is applied by
:func:`encode_frame` and removed by :func:`decode_frame` / :func:`extract_frame`.

Addresses are 12-character strings written as on the nameplate (most significant digit
first, e.g. ``"000000000161"``); on the wire they are sent lowest byte first. ``A`` digits
are wildcard nibbles (``AA`` bytes), ``999999999999`` is the broadcast address.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from enum import IntEnum, StrEnum

from gateway_agent.protocols.errors import (
    ChecksumError,
    DecodeError,
    LengthError,
    MissingEndError,
    NoFrameError,
)

START = 0x68
END = 0x16
WAKEUP_BYTE = 0xFE
WAKEUP = bytes([WAKEUP_BYTE] * 4)
DATA_OFFSET = 0x33
ADDRESS_WIDTH = 6
HEADER_LENGTH = 10  # 68 A0..A5 68 C L
FRAME_OVERHEAD = 12  # header + CS + 16
MAX_DATA_LENGTH = 255  # L is one byte; reads keep L <= 200 by convention

BROADCAST_ADDRESS = "999999999999"
WILDCARD_ADDRESS = "AAAAAAAAAAAA"

#: Meter local time: China Standard Time, UTC+8 all year (no DST since 1991).
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "Asia/Shanghai")

REPLY_FLAG = 0x80
ERROR_FLAG = 0x40
FOLLOWUP_FLAG = 0x20
FUNCTION_MASK = 0x1F


class Edition(StrEnum):
    """Which DL/T 645 edition a frame belongs to."""

    V2007 = "dlt645-2007"
    V1997 = "dlt645-1997"


class ControlCode(IntEnum):
    """DL/T 645-2007 request function codes (the low five bits of the control byte)."""

    BROADCAST_TIME = 0x08
    READ_DATA = 0x11
    READ_FOLLOWUP = 0x12
    READ_ADDRESS = 0x13
    WRITE_DATA = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    CLEAR_MAX_DEMAND = 0x19
    METER_CLEAR = 0x1A
    EVENT_CLEAR = 0x1B
    REMOTE_CONTROL = 0x1C


class ControlCode1997(IntEnum):
    """DL/T 645-1997 request function codes (those listed in PROTOCOLS.md)."""

    READ_DATA = 0x01
    WRITE_DATA = 0x04
    BROADCAST_TIME = 0x08
    WRITE_ADDRESS = 0x0A


class ErrorFlag(IntEnum):
    """Bits of the error byte carried by an error reply (control | 0xC0)."""

    OTHER = 0x01
    NO_SUCH_DATA = 0x02
    WRONG_PASSWORD_OR_UNAUTHORISED = 0x04
    BAUD_CANNOT_CHANGE = 0x08
    TOO_MANY_ANNUAL_ZONES = 0x10
    TOO_MANY_DAILY_PERIODS = 0x20
    TOO_MANY_TARIFFS = 0x40


class RemoteCommand(IntEnum):
    """N1 of a remote-control (C = 1C) payload."""

    TRIP = 0x1A
    CLOSE_ALLOWED = 0x1B
    CLOSE_IMMEDIATELY = 0x1C
    ALARM = 0x2A
    ALARM_RELEASE = 0x2B
    KEEP_POWER = 0x3A
    KEEP_POWER_RELEASE = 0x3B


class MeterType(IntEnum):
    """Bits b8-b9 of running status word 3."""

    NOT_PREPAID = 0
    ENERGY_PREPAID = 1
    MONEY_PREPAID = 2
    RESERVED = 3


class ValueKind(StrEnum):
    """How the bytes of a data item are laid out."""

    NUMBER = "number"  # BCD, lowest byte first, optional sign in the top bit
    DATE_WEEKDAY = "date_weekday"  # YYMMDDWW, sent WW DD MM YY
    TIME = "time"  # hhmmss, sent ss mm hh
    ADDRESS = "address"  # 6-byte address, lowest byte first
    BITS = "bits"  # binary status word, lowest byte first


# --------------------------------------------------------------------------------------------
# BCD primitives (shared with the CJ/T 188 codec)
# --------------------------------------------------------------------------------------------


def bcd_to_int(raw: bytes) -> int:
    """Decode packed BCD sent lowest byte first (``26 01`` -> 126)."""
    value = 0
    for byte in reversed(raw):
        high, low = byte >> 4, byte & 0x0F
        if high > 9 or low > 9:
            raise DecodeError(f"not BCD: byte {byte:02X} in {_hex(raw)}")
        value = value * 100 + high * 10 + low
    return value


def int_to_bcd(value: int, width: int) -> bytes:
    """Encode a non-negative integer as ``width`` bytes of packed BCD, lowest byte first."""
    if value < 0 or value >= 10 ** (2 * width):
        raise ValueError(f"{value} does not fit in {width} BCD byte(s)")
    out = bytearray()
    for _ in range(width):
        value, pair = divmod(value, 100)
        out.append((pair // 10) << 4 | pair % 10)
    return bytes(out)


def decode_bcd_decimal(raw: bytes, decimals: int, *, signed: bool = False) -> Decimal:
    """Decode a BCD value with ``decimals`` implied decimal places.

    With ``signed`` the top bit of the most significant byte (the last one on the wire) is
    the sign and the remaining bits hold the magnitude.
    """
    negative = False
    if signed and raw and raw[-1] & 0x80:
        negative = True
        raw = raw[:-1] + bytes([raw[-1] & 0x7F])
    magnitude = bcd_to_int(raw)
    value = Decimal(magnitude).scaleb(-decimals)
    return -value if negative and magnitude else value


def encode_bcd_decimal(value: Decimal, width: int, decimals: int, *, signed: bool = False) -> bytes:
    """Encode ``value`` exactly (no rounding) as a BCD field; see :func:`decode_bcd_decimal`."""
    if not value.is_finite():
        raise ValueError(f"cannot encode {value} as BCD")
    scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than {decimals} decimal place(s)")
    units = int(scaled)
    if units < 0 and not signed:
        raise ValueError(f"{value} is negative but the field is unsigned")
    limit = 8 * 10 ** (2 * width - 1) if signed else 10 ** (2 * width)
    if abs(units) >= limit:
        raise ValueError(f"{value} does not fit in {width} BCD byte(s) with {decimals} decimals")
    raw = bytearray(int_to_bcd(abs(units), width))
    if units < 0:
        raw[-1] |= 0x80
    return bytes(raw)


def _hex(raw: bytes) -> str:
    return raw.hex(" ").upper()


# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------


def normalise_address(address: str, width: int = ADDRESS_WIDTH) -> str:
    """Check that ``address`` is ``2 * width`` hex digits and return it upper-cased."""
    text = address.strip().upper()
    if len(text) != 2 * width or any(c not in "0123456789ABCDEF" for c in text):
        raise ValueError(f"address must be {2 * width} hex digits, got {address!r}")
    return text


def encode_address(address: str, width: int = ADDRESS_WIDTH) -> bytes:
    """Nameplate order string -> wire bytes (lowest byte first)."""
    return bytes.fromhex(normalise_address(address, width))[::-1]


def decode_address(raw: bytes) -> str:
    """Wire bytes (lowest byte first) -> nameplate order string."""
    return raw[::-1].hex().upper()


def meter_address(number: int) -> str:
    """A meter number as a 12-digit address (``161`` -> ``"000000000161"``)."""
    if number < 0 or number >= 10**12:
        raise ValueError(f"meter number {number} does not fit in 12 digits")
    return f"{number:012d}"


def abbreviated_address(suffix: str) -> str:
    """Address the meter whose number ends in ``suffix``: the high bytes become ``AA``.

    ``abbreviated_address("0161")`` -> ``"AAAAAAAA0161"``. ``suffix`` must be whole bytes.
    """
    text = suffix.strip().upper()
    if len(text) % 2 or len(text) > 2 * ADDRESS_WIDTH:
        raise ValueError(f"suffix must be 0..12 digits in whole bytes, got {suffix!r}")
    return normalise_address("A" * (2 * ADDRESS_WIDTH - len(text)) + text)


def is_broadcast(address: str) -> bool:
    """True for ``999999999999``: every meter obeys and none replies."""
    return normalise_address(address) == BROADCAST_ADDRESS


def is_wildcard(address: str) -> bool:
    """True when any byte of the address is the ``AA`` wildcard."""
    raw = encode_address(address)
    return any(byte == 0xAA for byte in raw)


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One DL/T 645 frame; ``data`` is already de-offset (no +0x33)."""

    address: str
    control: int
    data: bytes = b""
    wakeup: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", normalise_address(self.address))
        object.__setattr__(self, "control", int(self.control))
        object.__setattr__(self, "data", bytes(self.data))
        if not 0 <= self.control <= 0xFF:
            raise ValueError(f"control byte out of range: {self.control}")
        if len(self.data) > MAX_DATA_LENGTH:
            raise ValueError(f"data too long: {len(self.data)} > {MAX_DATA_LENGTH} bytes")

    @property
    def is_reply(self) -> bool:
        return bool(self.control & REPLY_FLAG)

    @property
    def is_error(self) -> bool:
        return bool(self.control & ERROR_FLAG)

    @property
    def has_followup(self) -> bool:
        return bool(self.control & FOLLOWUP_FLAG)

    @property
    def function(self) -> int:
        """The function code: the control byte without the reply/error/follow-up flags."""
        return self.control & FUNCTION_MASK


@dataclass(frozen=True)
class ParsedFrame:
    """A frame found in a byte string, with what surrounded it."""

    frame: Frame
    garbage: bytes  # bytes skipped before the frame, not counting the FE wake-up run
    consumed: int  # bytes up to and including the end byte 16


def _offset(data: bytes, delta: int) -> bytes:
    return bytes((byte + delta) & 0xFF for byte in data)


def checksum(body: bytes) -> int:
    """Sum mod 256 of every byte from the first 68 through the last data byte."""
    return sum(body) & 0xFF


def encode_frame(frame: Frame) -> bytes:
    """Frame -> wire bytes, with ``FE FE FE FE`` first when ``frame.wakeup``."""
    body = (
        bytes([START])
        + encode_address(frame.address)
        + bytes([START, frame.control, len(frame.data)])
        + _offset(frame.data, DATA_OFFSET)
    )
    return (WAKEUP if frame.wakeup else b"") + body + bytes([checksum(body), END])


def _find_start(buffer: bytes) -> tuple[int, bool] | None:
    """The first 68 that may start a frame, and whether its ``68 ·6 bytes· 68`` is complete.

    A 68 not followed by a second 68 seven bytes on is garbage and skipped. ``None``: no 68
    left that could start a frame.
    """
    index = buffer.find(START)
    while index != -1:
        if index + 7 >= len(buffer):
            return index, False
        if buffer[index + 7] == START:
            return index, True
        index = buffer.find(START, index + 1)
    return None


def _preamble_length(prefix: bytes) -> int:
    """Length of the FE wake-up run at the end of the bytes before the frame."""
    return len(prefix) - len(prefix.rstrip(bytes([WAKEUP_BYTE])))


def _check_and_build(buffer: bytes, start: int) -> tuple[Frame, int]:
    """Validate the complete frame at ``start``; return it and the index after its end byte."""
    length = buffer[start + 9]
    end = start + FRAME_OVERHEAD + length
    if buffer[end - 1] != END:
        raise MissingEndError(buffer[end - 1], end - 1, consumed=end)
    body = buffer[start : start + HEADER_LENGTH + length]
    received = buffer[end - 2]
    if checksum(body) != received:
        raise ChecksumError(checksum(body), received, consumed=end)
    frame = Frame(
        address=decode_address(buffer[start + 1 : start + 7]),
        control=buffer[start + 8],
        data=_offset(buffer[start + HEADER_LENGTH : start + HEADER_LENGTH + length], -DATA_OFFSET),
        wakeup=_preamble_length(buffer[:start]) > 0,
    )
    return frame, end


def decode_frame(raw: bytes) -> ParsedFrame:
    """Find and decode the first frame in ``raw`` (a complete capture).

    Leading garbage and FE wake-up bytes are skipped and reported. Bytes after the end byte
    are left alone (``consumed`` says where the frame ended).
    """
    found = _find_start(raw)
    if found is None:
        if START not in raw:
            raise NoFrameError("no DL/T 645 frame: no 68 start byte found")
        raise NoFrameError("no DL/T 645 frame: no 68 is followed by a second 68 seven bytes on")
    start, header_complete = found
    if not header_complete or len(raw) < start + HEADER_LENGTH:
        raise LengthError(
            f"truncated frame: header needs {HEADER_LENGTH} bytes, got {len(raw) - start}"
        )
    needed = FRAME_OVERHEAD + raw[start + 9]
    if len(raw) - start < needed:
        raise LengthError(
            f"truncated frame: L={raw[start + 9]} needs {needed} bytes from the first 68, "
            f"got {len(raw) - start}"
        )
    frame, end = _check_and_build(raw, start)
    garbage = raw[: start - _preamble_length(raw[:start])]
    return ParsedFrame(frame=frame, garbage=garbage, consumed=end)


def extract_frame(buffer: bytes) -> tuple[Frame | None, int]:
    """Take the first complete frame out of a growing receive buffer.

    Returns ``(frame, consumed)``: drop ``consumed`` bytes (garbage, wake-up bytes and the
    frame) from the buffer. ``(None, 0)`` means "incomplete, wait for more bytes"; the caller
    clears its buffer on inter-frame silence. A frame whose header is complete but whose end
    byte or checksum is wrong raises a :class:`FrameError` whose ``consumed`` covers the
    broken frame, so the reader can drop it and carry on.
    """
    found = _find_start(buffer)
    if found is None:
        return None, 0
    start = found[0]
    if len(buffer) < start + HEADER_LENGTH:
        return None, 0
    if len(buffer) < start + FRAME_OVERHEAD + buffer[start + 9]:
        return None, 0
    return _check_and_build(buffer, start)


def edition_of(frame: Frame) -> Edition:
    """Guess the edition from the function code.

    2007 uses 08 and 11..1C; 1997 uses 01..10 (PROTOCOLS.md lists 01, 04, 08, 0A). 08 is
    shared; its payload is the same in both, so it is reported as 2007.
    """
    function = frame.function
    if function < 0x11 and function != ControlCode.BROADCAST_TIME:
        return Edition.V1997
    return Edition.V2007


def control_name(function: int, edition: Edition = Edition.V2007) -> str:
    """Lower-case name of a function code, ``"unknown"`` when not in the table."""
    table: type[IntEnum] = ControlCode if edition is Edition.V2007 else ControlCode1997
    try:
        return table(function).name.lower()
    except ValueError:
        return "unknown"


# --------------------------------------------------------------------------------------------
# Data identifiers and values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataItem:
    """A data identifier and how its value is encoded."""

    di: int
    name: str
    width: int
    decimals: int = 0
    unit: str = ""
    signed: bool = False
    kind: ValueKind = ValueKind.NUMBER
    verified: bool = True
    description: str = ""
    di_width: int = 4  # 2 for DL/T 645-1997


@dataclass(frozen=True)
class MeterDate:
    """Value of DI 04 00 01 01: the meter's date and the weekday it reports (0 = Sunday)."""

    day: date
    weekday: int


MeterValue = Decimal | str | int | date | time | MeterDate


def _energy(di: int, name: str, description: str, *, di_width: int = 4) -> DataItem:
    return DataItem(di, name, 4, 2, "kWh", description=description, di_width=di_width)


def _money(di: int, name: str, description: str, *, verified: bool = True) -> DataItem:
    return DataItem(di, name, 4, 2, "yuan", verified=verified, description=description)


_DISPUTED = "purchase count; sources disagree between 03 33 02 01 and 03 32 02 01"

_ITEMS_2007: tuple[DataItem, ...] = (
    _energy(0x00000000, "combined_active_energy_total", "combined active energy, total"),
    _energy(0x00010000, "forward_active_energy_total", "forward active energy, total"),
    _energy(0x00010100, "forward_active_energy_tariff_1", "forward active energy, tariff 1 尖"),
    _energy(0x00010200, "forward_active_energy_tariff_2", "forward active energy, tariff 2 峰"),
    _energy(0x00010300, "forward_active_energy_tariff_3", "forward active energy, tariff 3 平"),
    _energy(0x00010400, "forward_active_energy_tariff_4", "forward active energy, tariff 4 谷"),
    DataItem(0x02010100, "voltage_a", 2, 1, "V", description="voltage, phase A"),
    DataItem(0x02010200, "voltage_b", 2, 1, "V", description="voltage, phase B"),
    DataItem(0x02010300, "voltage_c", 2, 1, "V", description="voltage, phase C"),
    DataItem(0x02020100, "current_a", 3, 3, "A", signed=True, description="current, phase A"),
    DataItem(0x02020200, "current_b", 3, 3, "A", signed=True, description="current, phase B"),
    DataItem(0x02020300, "current_c", 3, 3, "A", signed=True, description="current, phase C"),
    DataItem(
        0x02030000, "active_power_total", 3, 4, "kW", signed=True, description="total active power"
    ),
    DataItem(
        0x02060000, "power_factor_total", 2, 3, "", signed=True, description="total power factor"
    ),
    DataItem(0x02800002, "frequency", 2, 2, "Hz", description="grid frequency"),
    DataItem(0x04000101, "date", 4, kind=ValueKind.DATE_WEEKDAY, description="date + weekday"),
    DataItem(0x04000102, "time", 3, kind=ValueKind.TIME, description="time of day"),
    DataItem(0x04000401, "communication_address", 6, kind=ValueKind.ADDRESS),
    *(
        DataItem(0x04000500 + n, f"running_status_word_{n}", 2, kind=ValueKind.BITS)
        for n in range(1, 8)
    ),
    _money(0x00900200, "remaining_amount", "remaining amount (prepaid)"),
    _money(0x00900201, "overdraft_amount", "overdraft amount (prepaid)"),
    _energy(0x00900100, "remaining_energy", "remaining energy (prepaid)"),
    _energy(0x00900101, "overdraft_energy", "overdraft energy (prepaid)"),
    _money(0x03330601, "cumulative_purchased_amount", "width unverified", verified=False),
    _money(0x04001001, "alarm_amount_1", "alarm amount 1"),
    _money(0x04001002, "alarm_amount_2", "alarm amount 2"),
    _money(0x04001003, "overdraft_limit", "overdraft limit"),
    _money(0x04001004, "hoarding_limit", "hoarding (囤积) limit"),
    _money(0x04001005, "close_allowed_amount", "amount above which closing is allowed"),
    DataItem(0x03330201, "purchase_count", 2, verified=False, description=_DISPUTED),
    DataItem(0x03320201, "purchase_count_alt", 2, verified=False, description=_DISPUTED),
)

#: DL/T 645-2007 data items by DI (``0x00010000`` is DI ``00 01 00 00``).
DATA_ITEMS: dict[int, DataItem] = {item.di: item for item in _ITEMS_2007}

#: DL/T 645-1997 data items by 2-byte DI.
DATA_ITEMS_1997: dict[int, DataItem] = {
    0x9010: _energy(
        0x9010, "forward_active_energy_total", "forward active energy, total", di_width=2
    ),
}


def data_item_by_name(name: str) -> DataItem:
    """The 2007 data item called ``name`` (``KeyError`` if none)."""
    for item in _ITEMS_2007:
        if item.name == name:
            return item
    raise KeyError(name)


#: Phase-only variables (no "total" value): a block over their phase byte (DI1) starts at
#: phase A = 01. Voltage, current, phase angle, voltage and current distortion.
_PHASE_ONLY_VARIABLES = frozenset({0x01, 0x02, 0x07, 0x08, 0x09})


def _block_position(di: int) -> int | None:
    """Which byte of a 2007 DI is ``FF`` (0 = DI0 … 3 = DI3), if exactly one is."""
    positions = [i for i in range(4) if (di >> (8 * i)) & 0xFF == 0xFF]
    return positions[0] if len(positions) == 1 else None


def is_block_di(di: int) -> bool:
    """Is ``di`` a DL/T 645-2007 block identifier (one byte ``FF`` = every value of that byte,
    e.g. ``0001FF00`` = forward active energy total and tariffs 1..63)?"""
    return _block_position(di) is not None


def block_member(di: int, element: int) -> int | None:
    """The single identifier that element ``element`` of block identifier ``di`` stands for
    (``0001FF00`` element 2 → ``00010200``, ``0201FF00`` element 0 → ``02010100``, phase A);
    None if ``di`` is not a block identifier with one ``FF`` byte."""
    pos = _block_position(di)
    if pos is None or element < 0:
        return None
    first = 0
    if pos == 1 and di >> 24 == 0x02 and (di >> 16) & 0xFF in _PHASE_ONLY_VARIABLES:
        first = 1
    value = first + element
    if value >= 0xFF:
        return None
    return (di & ~(0xFF << (8 * pos))) | (value << (8 * pos))


def block_name(di: int) -> str | None:
    """A name for a block identifier from its first member's (``0001FF00`` →
    ``forward_active_energy_block``), None if ``di`` is not a block or its first member is
    not a known data item."""
    first = block_member(di, 0)
    item = DATA_ITEMS.get(first) if first is not None else None
    if item is None:
        return None
    stem = item.name
    for suffix in ("_total", "_a"):
        stem = stem.removesuffix(suffix)
    return f"{stem}_block"


def encode_di(di: int, width: int = 4) -> bytes:
    """DI as written (``0x00010000``) -> wire order before the offset (``00 00 01 00``)."""
    if not 0 <= di < 1 << (8 * width):
        raise ValueError(f"DI {di:X} does not fit in {width} bytes")
    return di.to_bytes(width, "little")


def decode_di(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def format_di(di: int, width: int = 4) -> str:
    """``0x00010000`` -> ``"00010000"`` (as written in the standard's tables)."""
    return f"{di:0{2 * width}X}"


def _bcd_field(raw: bytes, what: str) -> list[int]:
    """Each byte of ``raw`` as a two-digit BCD number."""
    try:
        return [bcd_to_int(bytes([byte])) for byte in raw]
    except DecodeError as exc:
        raise DecodeError(f"{what}: {exc.message}") from exc


def decode_item(item: DataItem, raw: bytes) -> MeterValue:
    """Decode the value bytes (de-offset, wire order) of ``item``."""
    if item.verified and len(raw) != item.width:
        raise LengthError(
            f"{item.name} ({format_di(item.di, item.di_width)}) is "
            f"{item.width} byte(s), reply carries {len(raw)}"
        )
    if not raw:
        raise LengthError(f"{item.name}: reply carries no value")
    if item.kind is ValueKind.NUMBER:
        return decode_bcd_decimal(raw, item.decimals, signed=item.signed)
    if item.kind is ValueKind.BITS:
        return int.from_bytes(raw, "little")
    if item.kind is ValueKind.ADDRESS:
        return decode_address(raw)
    if item.kind is ValueKind.TIME:
        second, minute, hour = _bcd_field(raw, item.name)
        try:
            return time(hour, minute, second)
        except ValueError as exc:
            raise DecodeError(f"{item.name}: {_hex(raw)} is not a time: {exc}") from exc
    weekday, day, month, year = _bcd_field(raw, item.name)
    try:
        return MeterDate(day=date(2000 + year, month, day), weekday=weekday)
    except ValueError as exc:
        raise DecodeError(f"{item.name}: {_hex(raw)} is not a date: {exc}") from exc


def encode_item(item: DataItem, value: MeterValue) -> bytes:
    """Encode ``value`` for ``item`` (used for write requests and simulated replies)."""
    if item.kind is ValueKind.NUMBER and isinstance(value, Decimal | int):
        return encode_bcd_decimal(Decimal(value), item.width, item.decimals, signed=item.signed)
    if item.kind is ValueKind.BITS and isinstance(value, int):
        return value.to_bytes(item.width, "little")
    if item.kind is ValueKind.ADDRESS and isinstance(value, str):
        return encode_address(value)
    if item.kind is ValueKind.TIME and isinstance(value, time):
        return bytes(int_to_bcd(part, 1)[0] for part in (value.second, value.minute, value.hour))
    if item.kind is ValueKind.DATE_WEEKDAY and isinstance(value, MeterDate):
        day = value.day
        if not 2000 <= day.year <= 2099:
            raise ValueError(f"year {day.year} cannot be sent as two digits")
        parts = (value.weekday, day.day, day.month, day.year - 2000)
        return bytes(int_to_bcd(part, 1)[0] for part in parts)
    raise TypeError(f"{item.name} ({item.kind}) cannot encode {value!r}")


# --------------------------------------------------------------------------------------------
# Status word 3 and error replies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningStatus3:
    """Decoded running status word 3 (DI 04 00 05 03). Higher bits stay in ``raw``."""

    raw: int
    relay_off: bool  # b4: 0 on, 1 off
    relay_command_off: bool  # b6: the last relay command was "off"
    pre_trip_alarm: bool  # b7
    meter_type: MeterType  # b8-b9


def decode_status_word_3(word: int) -> RunningStatus3:
    return RunningStatus3(
        raw=word,
        relay_off=bool(word >> 4 & 1),
        relay_command_off=bool(word >> 6 & 1),
        pre_trip_alarm=bool(word >> 7 & 1),
        meter_type=MeterType(word >> 8 & 0b11),
    )


def error_names(error_byte: int) -> tuple[str, ...]:
    """Names of the bits set in an error byte, lowest bit first (b7 is ``reserved_b7``)."""
    names = [flag.name.lower() for flag in ErrorFlag if error_byte & flag]
    if error_byte & 0x80:
        names.append("reserved_b7")
    return tuple(names)


# --------------------------------------------------------------------------------------------
# Date-time fields (ssmmhhDDMMYY)
# --------------------------------------------------------------------------------------------


def encode_datetime6(when: datetime, tz: tzinfo = CHINA_STANDARD_TIME) -> bytes:
    """Aware datetime -> ``ss mm hh DD MM YY`` BCD in meter local time ``tz``."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    local = when.astimezone(tz)
    if not 2000 <= local.year <= 2099:
        raise ValueError(f"year {local.year} cannot be sent as two digits")
    parts = (local.second, local.minute, local.hour, local.day, local.month, local.year - 2000)
    return bytes(int_to_bcd(part, 1)[0] for part in parts)


def decode_datetime6(raw: bytes, tz: tzinfo = CHINA_STANDARD_TIME) -> datetime:
    """``ss mm hh DD MM YY`` BCD in meter local time -> aware datetime in ``tz``."""
    if len(raw) != 6:
        raise LengthError(f"date-time field is 6 bytes, got {len(raw)}")
    second, minute, hour, day, month, year = _bcd_field(raw, "date-time")
    try:
        return datetime(2000 + year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError as exc:
        raise DecodeError(f"{_hex(raw)} is not a date-time (ssmmhhDDMMYY): {exc}") from exc


# --------------------------------------------------------------------------------------------
# Remote control (C = 1C)
# --------------------------------------------------------------------------------------------

REMOTE_CONTROL_LENGTH = 16


def _hex_field(text: str, width: int, what: str) -> bytes:
    """A hex string written most significant first -> wire bytes, lowest first."""
    clean = text.strip().upper()
    if len(clean) != 2 * width or any(c not in "0123456789ABCDEF" for c in clean):
        raise ValueError(f"{what} must be {2 * width} hex digits, got {text!r}")
    return bytes.fromhex(clean)[::-1]


@dataclass(frozen=True)
class Credentials:
    """Password level PA, password P0..P2 and operator code C0..C3 (a per-device setting).

    ``password`` (6 hex digits) and ``operator_code`` (8 hex digits) are written most
    significant digit first, as on a meter's documentation; they go on the wire lowest first.
    """

    password_level: int
    password: str
    operator_code: str

    def __post_init__(self) -> None:
        if not 0 <= self.password_level <= 0xFF:
            raise ValueError(f"password level out of range: {self.password_level}")
        object.__setattr__(self, "password", self.password.strip().upper())
        object.__setattr__(self, "operator_code", self.operator_code.strip().upper())
        self.encode()

    def encode(self) -> bytes:
        return (
            bytes([self.password_level])
            + _hex_field(self.password, 3, "password")
            + _hex_field(self.operator_code, 4, "operator code")
        )

    @classmethod
    def decode(cls, raw: bytes) -> Credentials:
        if len(raw) != 8:
            raise LengthError(f"credentials are 8 bytes, got {len(raw)}")
        return cls(
            password_level=raw[0],
            password=raw[1:4][::-1].hex().upper(),
            operator_code=raw[4:8][::-1].hex().upper(),
        )


@dataclass(frozen=True)
class RemoteControl:
    """The 16-byte payload of a remote trip/close control request."""

    credentials: Credentials
    command: RemoteCommand
    deadline: datetime  # aware; sent in meter local time


def encode_remote_control(control: RemoteControl, tz: tzinfo = CHINA_STANDARD_TIME) -> bytes:
    """PA · P0..P2 · C0..C3 · N1 · N2=00 · N3..N8 (ssmmhhDDMMYY), before the +0x33 offset."""
    return (
        control.credentials.encode()
        + bytes([control.command, 0x00])
        + encode_datetime6(control.deadline, tz)
    )


def parse_remote_control(data: bytes, tz: tzinfo = CHINA_STANDARD_TIME) -> RemoteControl:
    """Decode a de-offset remote-control payload; the deadline is read as local time in ``tz``."""
    if len(data) != REMOTE_CONTROL_LENGTH:
        raise LengthError(f"remote-control payload is 16 bytes, got {len(data)}")
    try:
        command = RemoteCommand(data[8])
    except ValueError as exc:
        raise DecodeError(f"unknown remote-control command N1={data[8]:02X}") from exc
    return RemoteControl(
        credentials=Credentials.decode(data[:8]),
        command=command,
        deadline=decode_datetime6(data[10:16], tz),
    )


# --------------------------------------------------------------------------------------------
# Request builders (2007)
# --------------------------------------------------------------------------------------------


def read_data_request(address: str, di: int, *, wakeup: bool = False) -> Frame:
    """C=11: read one data identifier."""
    return Frame(address, ControlCode.READ_DATA, encode_di(di), wakeup)


def read_followup_request(address: str, di: int, seq: int, *, wakeup: bool = False) -> Frame:
    """C=12: ask for follow-up frame number ``seq`` of a read whose reply had the 0x20 flag."""
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"sequence number out of range: {seq}")
    return Frame(address, ControlCode.READ_FOLLOWUP, encode_di(di) + bytes([seq]), wakeup)


def read_address_request(*, wakeup: bool = False) -> Frame:
    """C=13 to ``AAAAAAAAAAAA``: whoever is alone on the bus replies with its address."""
    return Frame(WILDCARD_ADDRESS, ControlCode.READ_ADDRESS, b"", wakeup)


def write_data_request(
    address: str, di: int, value: bytes, credentials: Credentials, *, wakeup: bool = False
) -> Frame:
    """C=14: DI · PA · P0..P2 · C0..C3 · value (``value`` already encoded, wire order)."""
    data = encode_di(di) + credentials.encode() + value
    return Frame(address, ControlCode.WRITE_DATA, data, wakeup)


def broadcast_time_sync_request(
    when: datetime, *, tz: tzinfo = CHINA_STANDARD_TIME, wakeup: bool = False
) -> Frame:
    """C=08 to ``999999999999``: set every meter's clock to ``when`` (meters do not reply)."""
    return Frame(BROADCAST_ADDRESS, ControlCode.BROADCAST_TIME, encode_datetime6(when, tz), wakeup)


def remote_control_request(
    address: str,
    control: RemoteControl,
    *,
    tz: tzinfo = CHINA_STANDARD_TIME,
    wakeup: bool = False,
) -> Frame:
    """C=1C: trip, allow close, alarm, keep-power... (see :class:`RemoteCommand`)."""
    return Frame(address, ControlCode.REMOTE_CONTROL, encode_remote_control(control, tz), wakeup)


# --------------------------------------------------------------------------------------------
# Reply builders (what a meter sends; for simulators and tests)
# --------------------------------------------------------------------------------------------


def read_data_reply(
    address: str, di: int, value: bytes, *, followup: bool = False, wakeup: bool = False
) -> Frame:
    """C=91 (B1 with follow-up frames): DI · value."""
    control = ControlCode.READ_DATA | REPLY_FLAG | (FOLLOWUP_FLAG if followup else 0)
    return Frame(address, control, encode_di(di) + value, wakeup)


def read_address_reply(address: str, *, wakeup: bool = False) -> Frame:
    """C=93: the meter's own address in the data field."""
    control = ControlCode.READ_ADDRESS | REPLY_FLAG
    return Frame(address, control, encode_address(address), wakeup)


def ok_reply(address: str, function: int, *, wakeup: bool = False) -> Frame:
    """Success without data, e.g. ``94`` for a write or ``9C`` for remote control (L = 0)."""
    return Frame(address, (function & FUNCTION_MASK) | REPLY_FLAG, b"", wakeup)


def error_reply(address: str, function: int, error_byte: int, *, wakeup: bool = False) -> Frame:
    """C = function | C0 with one error byte (e.g. ``D1 01 02`` = read: no such data)."""
    if not 0 <= error_byte <= 0xFF:
        raise ValueError(f"error byte out of range: {error_byte}")
    control = (function & FUNCTION_MASK) | REPLY_FLAG | ERROR_FLAG
    return Frame(address, control, bytes([error_byte]), wakeup)


# --------------------------------------------------------------------------------------------
# Payload parsers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadReply:
    """A normal read reply: the DI, the raw value bytes and, for follow-up replies, SEQ."""

    di: int
    value: bytes
    seq: int | None = None


@dataclass(frozen=True)
class WriteRequest:
    di: int
    credentials: Credentials
    value: bytes


def _expect(frame: Frame, function: int, *, reply: bool, what: str) -> None:
    if frame.function != function or frame.is_reply != reply or (reply and frame.is_error):
        raise DecodeError(f"not a {what}: control byte is {frame.control:02X}")


def parse_read_request(frame: Frame) -> int:
    """The DI of a C=11 request."""
    _expect(frame, ControlCode.READ_DATA, reply=False, what="read request")
    if len(frame.data) < 4:
        raise LengthError(f"read request carries {len(frame.data)} byte(s), a DI needs 4")
    return decode_di(frame.data[:4])


def parse_read_reply(frame: Frame) -> ReadReply:
    """DI and value bytes of a 91/B1 reply, or DI, value and SEQ of a 92/B2 reply."""
    followup = frame.function == ControlCode.READ_FOLLOWUP
    function = ControlCode.READ_FOLLOWUP if followup else ControlCode.READ_DATA
    _expect(frame, function, reply=True, what="read reply")
    minimum = 5 if followup else 4
    if len(frame.data) < minimum:
        raise LengthError(f"read reply carries {len(frame.data)} byte(s), needs {minimum}")
    di = decode_di(frame.data[:4])
    if followup:
        return ReadReply(di, frame.data[4:-1], frame.data[-1])
    return ReadReply(di, frame.data[4:])


def parse_error_reply(frame: Frame) -> int:
    """The error byte of an error reply (see :func:`error_names`)."""
    if not (frame.is_reply and frame.is_error):
        raise DecodeError(f"not an error reply: control byte is {frame.control:02X}")
    if len(frame.data) != 1:
        raise LengthError(f"error reply carries {len(frame.data)} byte(s), expected 1")
    return frame.data[0]


def parse_read_address_reply(frame: Frame) -> str:
    _expect(frame, ControlCode.READ_ADDRESS, reply=True, what="read-address reply")
    if len(frame.data) != ADDRESS_WIDTH:
        raise LengthError(f"read-address reply carries {len(frame.data)} byte(s), expected 6")
    return decode_address(frame.data)


def parse_write_request(frame: Frame) -> WriteRequest:
    _expect(frame, ControlCode.WRITE_DATA, reply=False, what="write request")
    if len(frame.data) < 12:
        raise LengthError(f"write request carries {len(frame.data)} byte(s), needs at least 12")
    return WriteRequest(
        di=decode_di(frame.data[:4]),
        credentials=Credentials.decode(frame.data[4:12]),
        value=frame.data[12:],
    )


def parse_broadcast_time(frame: Frame, tz: tzinfo = CHINA_STANDARD_TIME) -> datetime:
    _expect(frame, ControlCode.BROADCAST_TIME, reply=False, what="broadcast time sync")
    return decode_datetime6(frame.data, tz)


def parse_remote_control_request(frame: Frame, tz: tzinfo = CHINA_STANDARD_TIME) -> RemoteControl:
    _expect(frame, ControlCode.REMOTE_CONTROL, reply=False, what="remote-control request")
    return parse_remote_control(frame.data, tz)


# --------------------------------------------------------------------------------------------
# DL/T 645-1997: same framing, 2-byte DIs, other function codes
# --------------------------------------------------------------------------------------------


def read_data_request_1997(address: str, di: int, *, wakeup: bool = False) -> Frame:
    """C=01: read a 2-byte DI (e.g. ``0x9010`` forward active energy total)."""
    return Frame(address, ControlCode1997.READ_DATA, encode_di(di, 2), wakeup)


def read_data_reply_1997(address: str, di: int, value: bytes, *, wakeup: bool = False) -> Frame:
    """C=81: DI (2 bytes) · value."""
    control = ControlCode1997.READ_DATA | REPLY_FLAG
    return Frame(address, control, encode_di(di, 2) + value, wakeup)


def parse_read_request_1997(frame: Frame) -> int:
    _expect(frame, ControlCode1997.READ_DATA, reply=False, what="1997 read request")
    if len(frame.data) != 2:
        raise LengthError(f"1997 read request carries {len(frame.data)} byte(s), a DI needs 2")
    return decode_di(frame.data)


def parse_read_reply_1997(frame: Frame) -> ReadReply:
    _expect(frame, ControlCode1997.READ_DATA, reply=True, what="1997 read reply")
    if len(frame.data) < 2:
        raise LengthError(f"1997 read reply carries {len(frame.data)} byte(s), needs 2")
    return ReadReply(decode_di(frame.data[:2]), frame.data[2:])
