"""CJ/T 188 frame codec (water, gas and heat meters; 2004 and 2018 editions).

Pure functions over bytes and small frozen values: no I/O, no clock.

Wire format::

    [FE ...]  68  T  A0..A6  C  L  DATA  CS  16

T is the meter type, the address is 7 bytes lowest first (A5, A6 are the manufacturer
code), data is *not* offset, CS is the sum mod 256 from 68 through the last data byte. Data
starts with a 2-byte DI sent as written (``90 1F``) and a sequence number SER.

What varies between meter makers is a parameter, not a constant: the number of decimals of
the flow values, the bits of the status word (:class:`StatusLayout`) and, for some makers,
the byte order of the DI (``di_low_first``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from enum import IntEnum, StrEnum

from gateway_agent.protocols import dlt645
from gateway_agent.protocols.dlt645 import CHINA_STANDARD_TIME as CHINA_STANDARD_TIME
from gateway_agent.protocols.dlt645 import (
    bcd_to_int,
    decode_bcd_decimal,
    encode_bcd_decimal,
    int_to_bcd,
    normalise_address,
)
from gateway_agent.protocols.errors import (
    ChecksumError,
    DecodeError,
    FrameError,
    LengthError,
    MissingEndError,
    NoFrameError,
)

START = 0x68
END = 0x16
WAKEUP_BYTE = 0xFE
WAKEUP = bytes([WAKEUP_BYTE] * 4)
ADDRESS_WIDTH = 7
HEADER_LENGTH = 11  # 68 T A0..A6 C L
FRAME_OVERHEAD = 13  # header + CS + 16
#: The standard caps L at 0x64 for reads (0x32 for writes); a 68 followed by a larger L is
#: taken for line noise, not a frame start.
MAX_DATA_LENGTH = 0x64

WILDCARD_ADDRESS = "AAAAAAAAAAAAAA"

REPLY_FLAG = 0x80
ERROR_FLAG = 0x40
FUNCTION_MASK = 0x3F

DI_METERING_DATA = 0x901F
DI_READ_ADDRESS = 0x810A
DI_VALVE_CONTROL = 0xA017
DI_WRITE_ADDRESS = 0xA018


class MeterType(IntEnum):
    """Meter type byte T."""

    COLD_WATER = 0x10
    HOT_WATER = 0x11
    DRINKING_WATER = 0x12
    RECLAIMED_WATER = 0x13
    HEAT = 0x20  # heat meter, metering heat
    COLD = 0x21  # heat meter, metering cold
    GAS = 0x30
    ELECTRICITY = 0x40
    WILDCARD = 0xAA


class ControlCode(IntEnum):
    """Request function codes (the low six bits of C); the reply is C | 0x80."""

    READ_DATA = 0x01
    READ_ADDRESS = 0x03
    WRITE_DATA = 0x04
    READ_KEY_VERSION = 0x09
    WRITE_ADDRESS = 0x15


class ValveCommand(IntEnum):
    """The byte after SER in a valve-control (DI A0 17) write."""

    OPEN = 0x55
    CLOSE = 0x99


class ValveState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    ABNORMAL = "abnormal"
    UNKNOWN = "unknown"


#: Unit codes. 2C, 29, 35 and 05 are in PROTOCOLS.md; the rest follow the standard's unit
#: table (the heat-meter units), kept for the decode tool.
UNITS: dict[int, str] = {
    0x01: "J",
    0x02: "Wh",
    0x03: "Wh×10",
    0x04: "Wh×100",
    0x05: "kWh",
    0x06: "kWh×10",
    0x07: "kWh×100",
    0x08: "MWh",
    0x0B: "kJ",
    0x0E: "MJ",
    0x11: "GJ",
    0x14: "W",
    0x17: "kW",
    0x1A: "MW",
    0x29: "L",
    0x2C: "m³",
    0x32: "L/h",
    0x35: "m³/h",
}

#: Data identifiers by DI as written (``0x901F`` is sent ``90 1F``).
DATA_IDENTIFIERS: dict[int, str] = {
    DI_METERING_DATA: "metering_data",
    **{0xD120 + n: f"history_{n + 1}" for n in range(12)},
    DI_READ_ADDRESS: "read_address",
    0xA010: "write_price",
    0xA011: "write_settlement_date",
    0xA012: "write_reading_date",
    0xA013: "write_purchase_amount",
    0xA014: "write_key",
    0xA015: "write_time",
    DI_VALVE_CONTROL: "valve_control",
    DI_WRITE_ADDRESS: "write_address",
}


def meter_type_name(meter_type: int) -> str:
    try:
        return MeterType(meter_type).name.lower()
    except ValueError:
        return "unknown"


def control_name(function: int) -> str:
    try:
        return ControlCode(function).name.lower()
    except ValueError:
        return "unknown"


def encode_address(address: str) -> bytes:
    """14 hex digits, A6 first -> wire bytes A0..A6 (lowest first)."""
    return dlt645.encode_address(address, ADDRESS_WIDTH)


def decode_address(raw: bytes) -> str:
    """Wire bytes A0..A6 -> 14 hex digits, A6 first."""
    if len(raw) != ADDRESS_WIDTH:
        raise LengthError(f"a CJ/T 188 address is 7 bytes, got {len(raw)}")
    return dlt645.decode_address(raw)


def manufacturer_code(address: str) -> str:
    """A6 A5 of a 14-digit address (its first four digits)."""
    return normalise_address(address, ADDRESS_WIDTH)[:4]


# --------------------------------------------------------------------------------------------
# Status word
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterStatus:
    raw: int  # ST0 | ST1 << 8
    valve: ValveState
    battery_low: bool


@dataclass(frozen=True)
class StatusLayout:
    """Where the valve state and the battery-low flag sit in the 2-byte status word.

    The default is the common reading of the standard: bits 0-1 of ST0 hold the valve state
    (00 open, 01 closed, 11 abnormal) and bit 2 is battery low. Makers differ (one library
    reads 10 as closed, another uses bits 6-7): that belongs to the meter's profile.
    """

    valve_shift: int = 0
    open_code: int = 0b00
    closed_code: int = 0b01
    abnormal_code: int = 0b11
    battery_low_bit: int = 2

    def decode(self, word: int) -> MeterStatus:
        code = word >> self.valve_shift & 0b11
        states = {
            self.open_code: ValveState.OPEN,
            self.closed_code: ValveState.CLOSED,
            self.abnormal_code: ValveState.ABNORMAL,
        }
        return MeterStatus(
            raw=word,
            valve=states.get(code, ValveState.UNKNOWN),
            battery_low=bool(word >> self.battery_low_bit & 1),
        )

    def encode(self, valve: ValveState, battery_low: bool, other_bits: int = 0) -> int:
        """A status word for ``valve`` and ``battery_low`` (for simulators); ``other_bits``
        must not overlap the valve or battery bits."""
        codes = {
            ValveState.OPEN: self.open_code,
            ValveState.CLOSED: self.closed_code,
            ValveState.ABNORMAL: self.abnormal_code,
        }
        if valve not in codes:
            raise ValueError(f"cannot encode valve state {valve}")
        mask = 0b11 << self.valve_shift | 1 << self.battery_low_bit
        if other_bits & mask:
            raise ValueError("other_bits overlap the valve or battery bits")
        return (
            other_bits | codes[valve] << self.valve_shift | int(battery_low) << self.battery_low_bit
        )


DEFAULT_STATUS_LAYOUT = StatusLayout()


def _status_word(raw: bytes) -> int:
    if len(raw) != 2:
        raise LengthError(f"status word is 2 bytes, got {len(raw)}")
    return int.from_bytes(raw, "little")


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One CJ/T 188 frame. ``address`` is 14 hex digits, most significant (A6) first."""

    meter_type: int
    address: str
    control: int
    data: bytes = b""
    wakeup: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", normalise_address(self.address, ADDRESS_WIDTH))
        object.__setattr__(self, "meter_type", int(self.meter_type))
        object.__setattr__(self, "control", int(self.control))
        object.__setattr__(self, "data", bytes(self.data))
        if not 0 <= self.meter_type <= 0xFF or not 0 <= self.control <= 0xFF:
            raise ValueError("meter type and control must be single bytes")
        if len(self.data) > 0xFF:
            raise ValueError(f"data too long: {len(self.data)} > 255 bytes")

    @property
    def is_reply(self) -> bool:
        return bool(self.control & REPLY_FLAG)

    @property
    def is_error(self) -> bool:
        return bool(self.control & ERROR_FLAG)

    @property
    def function(self) -> int:
        return self.control & FUNCTION_MASK


@dataclass(frozen=True)
class ParsedFrame:
    frame: Frame
    garbage: bytes  # bytes skipped before the frame, not counting the FE wake-up run
    consumed: int  # bytes up to and including the end byte 16


def checksum(body: bytes) -> int:
    return sum(body) & 0xFF


def encode_frame(frame: Frame) -> bytes:
    body = (
        bytes([START, frame.meter_type])
        + encode_address(frame.address)
        + bytes([frame.control, len(frame.data)])
        + frame.data
    )
    return (WAKEUP if frame.wakeup else b"") + body + bytes([checksum(body), END])


def _candidates(buffer: bytes) -> list[int]:
    """Offsets of every 68 that may start a frame (L within the standard's limit)."""
    found = []
    index = buffer.find(START)
    while index != -1:
        if len(buffer) < index + HEADER_LENGTH or buffer[index + 10] <= MAX_DATA_LENGTH:
            found.append(index)
        index = buffer.find(START, index + 1)
    return found


def _preamble_length(prefix: bytes) -> int:
    return len(prefix) - len(prefix.rstrip(bytes([WAKEUP_BYTE])))


def _check_complete(buffer: bytes, start: int) -> None:
    """Raise :class:`LengthError` when the frame at ``start`` is cut short."""
    if len(buffer) < start + HEADER_LENGTH:
        raise LengthError(
            f"truncated frame: header needs {HEADER_LENGTH} bytes, got {len(buffer) - start}"
        )
    needed = FRAME_OVERHEAD + buffer[start + 10]
    if len(buffer) - start < needed:
        raise LengthError(
            f"truncated frame: L={buffer[start + 10]} needs {needed} bytes from the 68, "
            f"got {len(buffer) - start}"
        )


def _check_and_build(buffer: bytes, start: int) -> tuple[Frame, int]:
    """Validate the complete frame at ``start``; errors ask a stream reader to skip the 68."""
    length = buffer[start + 10]
    end = start + FRAME_OVERHEAD + length
    if buffer[end - 1] != END:
        raise MissingEndError(buffer[end - 1], end - 1, consumed=start + 1)
    body = buffer[start : start + HEADER_LENGTH + length]
    if checksum(body) != buffer[end - 2]:
        raise ChecksumError(checksum(body), buffer[end - 2], consumed=start + 1)
    frame = Frame(
        meter_type=buffer[start + 1],
        address=decode_address(buffer[start + 2 : start + 9]),
        control=buffer[start + 9],
        data=buffer[start + HEADER_LENGTH : start + HEADER_LENGTH + length],
        wakeup=_preamble_length(buffer[:start]) > 0,
    )
    return frame, end


def decode_frame(raw: bytes) -> ParsedFrame:
    """Find and decode the first valid frame in ``raw`` (a complete capture).

    With no second 68 to confirm a start, every 68 is tried in turn; when none yields a
    frame, the error of the first one is raised.
    """
    candidates = _candidates(raw)
    if not candidates:
        if START in raw:
            raise NoFrameError("no CJ/T 188 frame: every 68 is followed by L > 0x64")
        raise NoFrameError("no CJ/T 188 frame: no 68 start byte found")
    first_error: FrameError | None = None
    for start in candidates:
        try:
            _check_complete(raw, start)
            frame, end = _check_and_build(raw, start)
        except FrameError as exc:
            first_error = first_error or exc
            continue
        garbage = raw[: start - _preamble_length(raw[:start])]
        return ParsedFrame(frame=frame, garbage=garbage, consumed=end)
    assert first_error is not None
    raise first_error


def extract_frame(buffer: bytes) -> tuple[Frame | None, int]:
    """Take the first complete frame out of a growing receive buffer.

    Returns ``(frame, consumed)``; ``(None, 0)`` means "incomplete, wait for more bytes" (the
    caller clears its buffer on inter-frame silence). A complete but broken frame raises a
    :class:`FrameError` whose ``consumed`` skips past its 68, so the reader can resync.
    """
    candidates = _candidates(buffer)
    if not candidates:
        return None, 0
    start = candidates[0]
    if len(buffer) < start + HEADER_LENGTH:
        return None, 0
    if len(buffer) < start + FRAME_OVERHEAD + buffer[start + 10]:
        return None, 0
    return _check_and_build(buffer, start)


# --------------------------------------------------------------------------------------------
# Payload: DI, SER, body
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    di: int
    ser: int
    body: bytes


def join_payload(di: int, ser: int, body: bytes = b"", *, di_low_first: bool = False) -> bytes:
    if not 0 <= di <= 0xFFFF or not 0 <= ser <= 0xFF:
        raise ValueError(f"DI {di:X} must be 2 bytes and SER {ser} one byte")
    return di.to_bytes(2, "little" if di_low_first else "big") + bytes([ser]) + body


def split_payload(data: bytes, *, di_low_first: bool = False) -> Payload:
    if len(data) < 3:
        raise LengthError(f"data field is {len(data)} byte(s); DI and SER need 3")
    di = int.from_bytes(data[:2], "little" if di_low_first else "big")
    return Payload(di=di, ser=data[2], body=data[3:])


# --------------------------------------------------------------------------------------------
# Metering data (DI 90 1F)
# --------------------------------------------------------------------------------------------

METERING_BODY_LENGTH = 19  # flow+unit (5), settlement flow+unit (5), time (7), status (2)


@dataclass(frozen=True)
class MeteringData:
    current_flow: Decimal
    current_unit: int
    settlement_flow: Decimal
    settlement_unit: int
    real_time: datetime | None  # None when the meter sends an unset clock (all 00 or FF)
    status: MeterStatus


def unit_name(code: int) -> str | None:
    return UNITS.get(code)


def decode_real_time(raw: bytes, tz: tzinfo = CHINA_STANDARD_TIME) -> datetime | None:
    """YYYYMMDDhhmmss sent lowest first (``ss mm hh DD MM YY CC``), read as local time in
    ``tz``. All 00 or all FF means "no clock" and gives ``None``."""
    if len(raw) != 7:
        raise LengthError(f"real time is 7 bytes, got {len(raw)}")
    if raw in (bytes(7), bytes([0xFF] * 7)):
        return None
    try:
        second, minute, hour, day, month, year_low, century = (bcd_to_int(bytes([b])) for b in raw)
        return datetime(century * 100 + year_low, month, day, hour, minute, second, tzinfo=tz)
    except (DecodeError, ValueError) as exc:
        raise DecodeError(f"real time {raw.hex(' ').upper()} is not a date-time: {exc}") from exc


def encode_real_time(when: datetime | None, tz: tzinfo = CHINA_STANDARD_TIME) -> bytes:
    if when is None:
        return bytes(7)
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    local = when.astimezone(tz)
    parts = (
        local.second,
        local.minute,
        local.hour,
        local.day,
        local.month,
        local.year % 100,
        local.year // 100,
    )
    return b"".join(int_to_bcd(part, 1) for part in parts)


def parse_metering_data(
    body: bytes,
    *,
    decimals: int = 2,
    layout: StatusLayout = DEFAULT_STATUS_LAYOUT,
    tz: tzinfo = CHINA_STANDARD_TIME,
) -> MeteringData:
    """Decode the part of a 90 1F reply after DI and SER.

    ``decimals`` is 2 in the common 2004 edition (flows XXXXXX.XX); make it a profile setting.
    """
    if len(body) != METERING_BODY_LENGTH:
        raise LengthError(
            f"metering data is {METERING_BODY_LENGTH} bytes after DI and SER, got {len(body)}"
        )
    return MeteringData(
        current_flow=decode_bcd_decimal(body[0:4], decimals),
        current_unit=body[4],
        settlement_flow=decode_bcd_decimal(body[5:9], decimals),
        settlement_unit=body[9],
        real_time=decode_real_time(body[10:17], tz),
        status=layout.decode(_status_word(body[17:19])),
    )


def encode_metering_data(
    data: MeteringData, *, decimals: int = 2, tz: tzinfo = CHINA_STANDARD_TIME
) -> bytes:
    """The inverse of :func:`parse_metering_data` (the status word is sent as ``status.raw``)."""
    return (
        encode_bcd_decimal(data.current_flow, 4, decimals)
        + bytes([data.current_unit])
        + encode_bcd_decimal(data.settlement_flow, 4, decimals)
        + bytes([data.settlement_unit])
        + encode_real_time(data.real_time, tz)
        + data.status.raw.to_bytes(2, "little")
    )


# --------------------------------------------------------------------------------------------
# Request builders
# --------------------------------------------------------------------------------------------


def read_data_request(
    meter_type: int,
    address: str,
    *,
    di: int = DI_METERING_DATA,
    ser: int = 0,
    wakeup: bool = False,
    di_low_first: bool = False,
) -> Frame:
    """C=01: read ``di`` (metering data by default)."""
    data = join_payload(di, ser, di_low_first=di_low_first)
    return Frame(meter_type, address, ControlCode.READ_DATA, data, wakeup)


def read_address_request(*, ser: int = 0, wakeup: bool = False) -> Frame:
    """C=03, DI 81 0A to the wildcard type and address: the one meter on the bus answers."""
    data = join_payload(DI_READ_ADDRESS, ser)
    return Frame(MeterType.WILDCARD, WILDCARD_ADDRESS, ControlCode.READ_ADDRESS, data, wakeup)


def valve_control_request(
    meter_type: int,
    address: str,
    command: ValveCommand,
    *,
    ser: int = 0,
    wakeup: bool = False,
) -> Frame:
    """C=04, DI A0 17, SER, then ``55`` (open) or ``99`` (close)."""
    data = join_payload(DI_VALVE_CONTROL, ser, bytes([command]))
    return Frame(meter_type, address, ControlCode.WRITE_DATA, data, wakeup)


# --------------------------------------------------------------------------------------------
# Reply builders (what a meter sends; for simulators and tests)
# --------------------------------------------------------------------------------------------


def metering_data_reply(
    meter_type: int,
    address: str,
    data: MeteringData,
    *,
    ser: int = 0,
    decimals: int = 2,
    tz: tzinfo = CHINA_STANDARD_TIME,
    wakeup: bool = False,
) -> Frame:
    """C=81, DI 90 1F, SER, metering data."""
    payload = join_payload(
        DI_METERING_DATA, ser, encode_metering_data(data, decimals=decimals, tz=tz)
    )
    return Frame(meter_type, address, ControlCode.READ_DATA | REPLY_FLAG, payload, wakeup)


def read_address_reply(meter_type: int, address: str, *, ser: int = 0) -> Frame:
    """C=83, DI 81 0A, SER; the address is the frame's own address field."""
    data = join_payload(DI_READ_ADDRESS, ser)
    return Frame(meter_type, address, ControlCode.READ_ADDRESS | REPLY_FLAG, data)


def valve_control_reply(meter_type: int, address: str, status: int, *, ser: int = 0) -> Frame:
    """C=84, DI A0 17, SER, status word (2 bytes)."""
    data = join_payload(DI_VALVE_CONTROL, ser, status.to_bytes(2, "little"))
    return Frame(meter_type, address, ControlCode.WRITE_DATA | REPLY_FLAG, data)


def error_reply(
    meter_type: int, address: str, function: int, status: int, *, ser: int = 0
) -> Frame:
    """C = function | C0; data SER · ST (2 bytes), the common layout of an abnormal reply."""
    control = (function & FUNCTION_MASK) | REPLY_FLAG | ERROR_FLAG
    return Frame(meter_type, address, control, bytes([ser]) + status.to_bytes(2, "little"))


# --------------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorReply:
    ser: int
    status: MeterStatus
    di: int | None = None  # some meters repeat the DI before SER


def _expect(frame: Frame, function: int, di: int, *, reply: bool, di_low_first: bool) -> Payload:
    if frame.function != function or frame.is_reply != reply or frame.is_error:
        raise DecodeError(f"unexpected control byte {frame.control:02X}")
    payload = split_payload(frame.data, di_low_first=di_low_first)
    if payload.di != di:
        raise DecodeError(f"expected DI {di:04X}, frame carries {payload.di:04X}")
    return payload


def parse_metering_data_reply(
    frame: Frame,
    *,
    decimals: int = 2,
    layout: StatusLayout = DEFAULT_STATUS_LAYOUT,
    tz: tzinfo = CHINA_STANDARD_TIME,
    di_low_first: bool = False,
) -> MeteringData:
    payload = _expect(
        frame, ControlCode.READ_DATA, DI_METERING_DATA, reply=True, di_low_first=di_low_first
    )
    return parse_metering_data(payload.body, decimals=decimals, layout=layout, tz=tz)


def parse_valve_command(body: bytes) -> ValveCommand:
    if len(body) != 1:
        raise LengthError(f"valve command is 1 byte after SER, got {len(body)}")
    try:
        return ValveCommand(body[0])
    except ValueError as exc:
        raise DecodeError(f"unknown valve command {body[0]:02X} (55 open, 99 close)") from exc


def parse_valve_control_request(frame: Frame) -> ValveCommand:
    payload = _expect(
        frame, ControlCode.WRITE_DATA, DI_VALVE_CONTROL, reply=False, di_low_first=False
    )
    return parse_valve_command(payload.body)


def parse_valve_control_reply(
    frame: Frame, layout: StatusLayout = DEFAULT_STATUS_LAYOUT
) -> MeterStatus:
    payload = _expect(
        frame, ControlCode.WRITE_DATA, DI_VALVE_CONTROL, reply=True, di_low_first=False
    )
    return layout.decode(_status_word(payload.body))


def parse_error_reply(frame: Frame, layout: StatusLayout = DEFAULT_STATUS_LAYOUT) -> ErrorReply:
    """SER · ST (3 bytes), or DI · SER · ST (5 bytes) as some meters send."""
    if not (frame.is_reply and frame.is_error):
        raise DecodeError(f"not an error reply: control byte is {frame.control:02X}")
    data = frame.data
    if len(data) == 3:
        return ErrorReply(ser=data[0], status=layout.decode(_status_word(data[1:3])))
    if len(data) == 5:
        return ErrorReply(
            ser=data[2],
            status=layout.decode(_status_word(data[3:5])),
            di=int.from_bytes(data[:2], "big"),
        )
    raise LengthError(f"error reply carries {len(data)} byte(s), expected SER+ST (3) or 5")
