"""Minimal Modbus RTU frame decoding, for the installer's decode tool.

The gateway talks Modbus through pymodbus; this module only explains sniffed frames:
``address · function · payload · CRC16 (low byte first)`` for function codes 01-06, 0F, 10
and exception replies (function | 0x80, one exception code).

A sniffed frame does not say which way it went. The shape usually does; where it does not
(a reply of 01/02 carrying 3 bytes looks like a request; 05/06 replies echo the request)
the caller may pass the ``direction`` it knows, otherwise the request reading is chosen and
``Direction.REQUEST_OR_ECHO`` is reported for 05/06.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from gateway_agent.protocols.errors import ChecksumError, DecodeError, LengthError

EXCEPTION_FLAG = 0x80
MIN_FRAME_LENGTH = 4  # address, function, CRC
MAX_FRAME_LENGTH = 256


class FunctionCode(IntEnum):
    READ_COILS = 0x01
    READ_DISCRETE_INPUTS = 0x02
    READ_HOLDING_REGISTERS = 0x03
    READ_INPUT_REGISTERS = 0x04
    WRITE_SINGLE_COIL = 0x05
    WRITE_SINGLE_REGISTER = 0x06
    WRITE_MULTIPLE_COILS = 0x0F
    WRITE_MULTIPLE_REGISTERS = 0x10


class ExceptionCode(IntEnum):
    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04
    ACKNOWLEDGE = 0x05
    SERVER_DEVICE_BUSY = 0x06
    NEGATIVE_ACKNOWLEDGE = 0x07
    MEMORY_PARITY_ERROR = 0x08
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_TARGET_FAILED_TO_RESPOND = 0x0B


class Direction(StrEnum):
    REQUEST = "request"
    REPLY = "reply"
    REQUEST_OR_ECHO = "request_or_echo"  # 05/06: the reply repeats the request


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (reflected polynomial 0xA001, initial value 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def encode_frame(address: int, function: int, payload: bytes = b"") -> bytes:
    """``address · function · payload`` followed by the CRC, low byte first."""
    if not 0 <= address <= 0xFF or not 0 <= function <= 0xFF:
        raise ValueError("address and function must be single bytes")
    body = bytes([address, function]) + payload
    return body + crc16(body).to_bytes(2, "little")


@dataclass(frozen=True)
class RtuFrame:
    address: int
    function: int  # as on the wire, exception flag included
    payload: bytes

    @property
    def is_exception(self) -> bool:
        return bool(self.function & EXCEPTION_FLAG)


def decode_frame(raw: bytes) -> RtuFrame:
    """Check length and CRC of one whole RTU frame."""
    if len(raw) < MIN_FRAME_LENGTH:
        raise LengthError(f"Modbus RTU frame needs at least 4 bytes, got {len(raw)}")
    if len(raw) > MAX_FRAME_LENGTH:
        raise LengthError(f"Modbus RTU frame is at most 256 bytes, got {len(raw)}")
    expected = crc16(raw[:-2])
    received = int.from_bytes(raw[-2:], "little")
    if expected != received:
        raise ChecksumError(expected, received, what="CRC")
    return RtuFrame(address=raw[0], function=raw[1], payload=raw[2:-2])


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadRequest:
    """01-04 request: read ``quantity`` items from ``start``."""

    start: int
    quantity: int


@dataclass(frozen=True)
class ReadBitsReply:
    """01/02 reply: the bits of every byte, lowest first (the request says how many count)."""

    bits: tuple[bool, ...]


@dataclass(frozen=True)
class ReadRegistersReply:
    """03/04 reply: 16-bit registers, big-endian on the wire."""

    registers: tuple[int, ...]


@dataclass(frozen=True)
class WriteSingleCoil:
    """05 request (and its echo)."""

    address: int
    value: bool


@dataclass(frozen=True)
class WriteSingleRegister:
    """06 request (and its echo)."""

    address: int
    value: int


@dataclass(frozen=True)
class WriteMultipleCoilsRequest:
    start: int
    quantity: int
    bits: tuple[bool, ...]


@dataclass(frozen=True)
class WriteMultipleRegistersRequest:
    start: int
    quantity: int
    registers: tuple[int, ...]


@dataclass(frozen=True)
class WriteMultipleReply:
    """0F/10 reply: where and how many were written."""

    start: int
    quantity: int


@dataclass(frozen=True)
class ExceptionReply:
    function: int  # without the exception flag
    code: int

    @property
    def code_name(self) -> str:
        try:
            return ExceptionCode(self.code).name.lower()
        except ValueError:
            return "unknown"


@dataclass(frozen=True)
class OtherPdu:
    """A function code this decoder does not explain."""

    data: bytes


Message = (
    ReadRequest
    | ReadBitsReply
    | ReadRegistersReply
    | WriteSingleCoil
    | WriteSingleRegister
    | WriteMultipleCoilsRequest
    | WriteMultipleRegistersRequest
    | WriteMultipleReply
    | ExceptionReply
    | OtherPdu
)


@dataclass(frozen=True)
class Interpretation:
    direction: Direction
    message: Message


def function_name(function: int) -> str:
    try:
        return FunctionCode(function & ~EXCEPTION_FLAG).name.lower()
    except ValueError:
        return "unknown"


def _words(raw: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2))


def _bits(raw: bytes) -> tuple[bool, ...]:
    return tuple(bool(byte >> bit & 1) for byte in raw for bit in range(8))


def _is_reply_with_byte_count(payload: bytes) -> bool:
    return len(payload) >= 1 and payload[0] == len(payload) - 1


def _read(function: int, payload: bytes, direction: Direction | None) -> Interpretation:
    as_request = len(payload) == 4
    as_reply = _is_reply_with_byte_count(payload) and (
        function in (FunctionCode.READ_COILS, FunctionCode.READ_DISCRETE_INPUTS)
        or payload[0] % 2 == 0
    )
    if direction is Direction.REPLY and not as_reply:
        raise LengthError(f"not a function {function:02X} reply: byte count does not match")
    if direction is Direction.REQUEST and not as_request:
        raise LengthError(f"not a function {function:02X} request: payload is not 4 bytes")
    if as_request and direction is not Direction.REPLY:
        words = _words(payload)
        return Interpretation(Direction.REQUEST, ReadRequest(words[0], words[1]))
    if as_reply:
        data = payload[1:]
        if function in (FunctionCode.READ_COILS, FunctionCode.READ_DISCRETE_INPUTS):
            return Interpretation(Direction.REPLY, ReadBitsReply(_bits(data)))
        return Interpretation(Direction.REPLY, ReadRegistersReply(_words(data)))
    raise LengthError(
        f"function {function:02X}: {len(payload)}-byte payload is neither a request (4) "
        "nor a reply (byte count + data)"
    )


def _write_single(function: int, payload: bytes) -> Interpretation:
    if len(payload) != 4:
        raise LengthError(f"function {function:02X} carries 4 bytes, got {len(payload)}")
    address, value = _words(payload)
    if function == FunctionCode.WRITE_SINGLE_REGISTER:
        return Interpretation(Direction.REQUEST_OR_ECHO, WriteSingleRegister(address, value))
    if value not in (0xFF00, 0x0000):
        raise DecodeError(f"write single coil value must be FF00 or 0000, got {value:04X}")
    return Interpretation(Direction.REQUEST_OR_ECHO, WriteSingleCoil(address, value == 0xFF00))


def _write_multiple(function: int, payload: bytes) -> Interpretation:
    if len(payload) == 4:
        start, quantity = _words(payload)
        return Interpretation(Direction.REPLY, WriteMultipleReply(start, quantity))
    if len(payload) < 6 or payload[4] != len(payload) - 5:
        raise LengthError(
            f"function {function:02X}: {len(payload)}-byte payload is neither a reply (4) nor "
            "a request (start, quantity, byte count, values)"
        )
    start, quantity = _words(payload[:4])
    values = payload[5:]
    if function == FunctionCode.WRITE_MULTIPLE_COILS:
        if len(values) != (quantity + 7) // 8:
            raise LengthError(f"{quantity} coil(s) need {(quantity + 7) // 8} byte(s)")
        bits = _bits(values)[:quantity]
        return Interpretation(Direction.REQUEST, WriteMultipleCoilsRequest(start, quantity, bits))
    if len(values) != 2 * quantity:
        raise LengthError(f"{quantity} register(s) need {2 * quantity} bytes, got {len(values)}")
    registers = _words(values)
    return Interpretation(
        Direction.REQUEST, WriteMultipleRegistersRequest(start, quantity, registers)
    )


def interpret(frame: RtuFrame, direction: Direction | None = None) -> Interpretation:
    """Explain the payload of ``frame`` (see the module docstring on ``direction``)."""
    function, payload = frame.function, frame.payload
    if frame.is_exception:
        if len(payload) != 1:
            raise LengthError(f"exception reply carries 1 byte, got {len(payload)}")
        return Interpretation(Direction.REPLY, ExceptionReply(function & 0x7F, payload[0]))
    if function in (
        FunctionCode.READ_COILS,
        FunctionCode.READ_DISCRETE_INPUTS,
        FunctionCode.READ_HOLDING_REGISTERS,
        FunctionCode.READ_INPUT_REGISTERS,
    ):
        return _read(function, payload, direction)
    if function in (FunctionCode.WRITE_SINGLE_COIL, FunctionCode.WRITE_SINGLE_REGISTER):
        return _write_single(function, payload)
    if function in (FunctionCode.WRITE_MULTIPLE_COILS, FunctionCode.WRITE_MULTIPLE_REGISTERS):
        return _write_multiple(function, payload)
    return Interpretation(direction or Direction.REQUEST, OtherPdu(payload))
