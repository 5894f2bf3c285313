"""Modbus RTU decoding for the decode tool: CRC, request/reply recognition, exceptions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU

from gateway_agent.protocols import modbus_rtu
from gateway_agent.protocols.errors import ChecksumError, DecodeError, LengthError
from gateway_agent.protocols.modbus_rtu import Direction, FunctionCode


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_crc_known_vectors() -> None:
    assert modbus_rtu.crc16(b"123456789") == 0x4B37
    # read 10 holding registers from device 1: the classic example frame ends C5 CD
    assert modbus_rtu.encode_frame(1, 3, h("00 00 00 0A")) == h("01 03 00 00 00 0A C5 CD")


@given(st.binary(max_size=64))
def test_crc_matches_pymodbus(data: bytes) -> None:
    assert modbus_rtu.crc16(data).to_bytes(2, "little") == FramerRTU.compute_CRC(data).to_bytes(
        2, "big"
    )


def test_read_holding_registers_request() -> None:
    frame = modbus_rtu.decode_frame(h("01 03 00 00 00 0A C5 CD"))
    assert (frame.address, frame.function, frame.is_exception) == (1, 3, False)
    result = modbus_rtu.interpret(frame)
    assert result.direction is Direction.REQUEST
    assert result.message == modbus_rtu.ReadRequest(start=0, quantity=10)


def test_read_holding_registers_reply() -> None:
    wire = modbus_rtu.encode_frame(1, 3, h("04 00 0A FF FE"))
    result = modbus_rtu.interpret(modbus_rtu.decode_frame(wire))
    assert result.direction is Direction.REPLY
    assert result.message == modbus_rtu.ReadRegistersReply(registers=(0x000A, 0xFFFE))


def test_read_coils_reply_and_the_ambiguous_shape() -> None:
    reply = modbus_rtu.decode_frame(modbus_rtu.encode_frame(5, 1, h("01 05")))
    result = modbus_rtu.interpret(reply)
    assert result.direction is Direction.REPLY
    assert isinstance(result.message, modbus_rtu.ReadBitsReply)
    assert result.message.bits[:3] == (True, False, True)
    assert len(result.message.bits) == 8
    # byte count 3 + 3 data bytes is also a valid 4-byte request: request unless told
    ambiguous = modbus_rtu.decode_frame(modbus_rtu.encode_frame(5, 1, h("03 01 02 04")))
    assert modbus_rtu.interpret(ambiguous).message == modbus_rtu.ReadRequest(0x0301, 0x0204)
    as_reply = modbus_rtu.interpret(ambiguous, Direction.REPLY)
    assert as_reply.direction is Direction.REPLY
    assert isinstance(as_reply.message, modbus_rtu.ReadBitsReply)


def test_write_single_coil_and_register() -> None:
    coil = modbus_rtu.interpret(
        modbus_rtu.decode_frame(modbus_rtu.encode_frame(1, 5, h("00 AC FF 00")))
    )
    assert coil.direction is Direction.REQUEST_OR_ECHO
    assert coil.message == modbus_rtu.WriteSingleCoil(address=0xAC, value=True)
    register = modbus_rtu.interpret(
        modbus_rtu.decode_frame(modbus_rtu.encode_frame(1, 6, h("00 1C 00 02")))
    )
    assert register.message == modbus_rtu.WriteSingleRegister(address=0x1C, value=2)
    with pytest.raises(DecodeError, match="FF00"):
        modbus_rtu.interpret(
            modbus_rtu.decode_frame(modbus_rtu.encode_frame(1, 5, h("00 AC 12 34")))
        )


def test_write_multiple_registers_request_and_reply() -> None:
    request = modbus_rtu.decode_frame(
        modbus_rtu.encode_frame(1, 0x10, h("00 01 00 02 04 00 0A 01 02"))
    )
    result = modbus_rtu.interpret(request)
    assert result.direction is Direction.REQUEST
    assert result.message == modbus_rtu.WriteMultipleRegistersRequest(1, 2, (0x000A, 0x0102))
    reply = modbus_rtu.interpret(
        modbus_rtu.decode_frame(modbus_rtu.encode_frame(1, 0x10, h("00 01 00 02")))
    )
    assert reply.direction is Direction.REPLY
    assert reply.message == modbus_rtu.WriteMultipleReply(1, 2)


def test_write_multiple_coils_request() -> None:
    frame = modbus_rtu.decode_frame(modbus_rtu.encode_frame(1, 0x0F, h("00 13 00 0A 02 CD 01")))
    result = modbus_rtu.interpret(frame)
    assert isinstance(result.message, modbus_rtu.WriteMultipleCoilsRequest)
    assert result.message.quantity == 10
    assert result.message.bits == (True, False, True, True, False, False, True, True, True, False)


def test_exception_reply() -> None:
    frame = modbus_rtu.decode_frame(modbus_rtu.encode_frame(1, 0x83, h("02")))
    assert frame.is_exception
    assert modbus_rtu.function_name(frame.function) == "read_holding_registers"
    result = modbus_rtu.interpret(frame)
    assert result.direction is Direction.REPLY
    assert result.message == modbus_rtu.ExceptionReply(function=3, code=2)
    assert isinstance(result.message, modbus_rtu.ExceptionReply)
    assert result.message.code_name == "illegal_data_address"
    assert modbus_rtu.ExceptionReply(3, 0x42).code_name == "unknown"


def test_other_function_is_passed_through() -> None:
    frame = modbus_rtu.decode_frame(modbus_rtu.encode_frame(1, 0x2B, h("0E 01 00")))
    result = modbus_rtu.interpret(frame)
    assert result.message == modbus_rtu.OtherPdu(h("0E 01 00"))
    assert modbus_rtu.function_name(0x2B) == "unknown"


def test_bad_crc() -> None:
    with pytest.raises(ChecksumError, match="CRC") as caught:
        modbus_rtu.decode_frame(h("01 03 00 00 00 0A C5 CE"))
    assert caught.value.expected == 0xCDC5
    assert caught.value.received == 0xCEC5


@pytest.mark.parametrize(
    ("function", "payload", "match"),
    [
        (3, "05 00 01 00 02", "neither"),  # byte count says 5, odd for registers
        (3, "00 00 00", "neither"),
        (3, "01 00", "neither"),  # a register reply cannot carry an odd byte count
        (0x10, "00 01 00 02 04 00 0A", "neither"),  # byte count 4 but 2 bytes follow
        (0x10, "00 01 00 02 02 00 0A", "register"),  # 2 registers need 4 bytes
        (0x0F, "00 13 00 0A 01 CD", "coil"),  # 10 coils need 2 bytes
        (0x83, "02 03", "exception"),
        (5, "00 AC FF", "4 bytes"),
    ],
)
def test_malformed_payloads(function: int, payload: str, match: str) -> None:
    frame = modbus_rtu.decode_frame(modbus_rtu.encode_frame(1, function, h(payload)))
    with pytest.raises(LengthError, match=match):
        modbus_rtu.interpret(frame)


def test_direction_hint_that_does_not_fit() -> None:
    request = modbus_rtu.decode_frame(h("01 03 00 00 00 0A C5 CD"))
    with pytest.raises(LengthError, match="reply"):
        modbus_rtu.interpret(request, Direction.REPLY)
    reply = modbus_rtu.decode_frame(modbus_rtu.encode_frame(1, 3, h("02 00 0A")))
    with pytest.raises(LengthError, match="request"):
        modbus_rtu.interpret(reply, Direction.REQUEST)


def test_length_limits() -> None:
    with pytest.raises(LengthError, match="at least 4"):
        modbus_rtu.decode_frame(h("01 03 C5"))
    with pytest.raises(LengthError, match="at most 256"):
        modbus_rtu.decode_frame(modbus_rtu.encode_frame(1, 3, bytes(253)))


@given(st.integers(0, 0xFF), st.integers(0, 0xFF), st.binary(max_size=252))
def test_frame_round_trip(address: int, function: int, payload: bytes) -> None:
    frame = modbus_rtu.decode_frame(modbus_rtu.encode_frame(address, function, payload))
    assert (frame.address, frame.function, frame.payload) == (address, function, payload)


@given(st.binary(min_size=1, max_size=60), st.data())
def test_any_single_byte_corruption_fails_the_crc(payload: bytes, data: st.DataObject) -> None:
    wire = bytearray(modbus_rtu.encode_frame(1, 3, payload))
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ChecksumError):
        modbus_rtu.decode_frame(bytes(wire))


@given(st.integers(0, 0xFFFF), st.integers(1, 125))
def test_read_request_round_trip(start: int, quantity: int) -> None:
    payload = start.to_bytes(2, "big") + quantity.to_bytes(2, "big")
    frame = modbus_rtu.decode_frame(
        modbus_rtu.encode_frame(1, FunctionCode.READ_INPUT_REGISTERS, payload)
    )
    assert modbus_rtu.interpret(frame).message == modbus_rtu.ReadRequest(start, quantity)


@given(st.lists(st.integers(0, 0xFFFF), max_size=125))
def test_register_reply_round_trip(registers: list[int]) -> None:
    payload = bytes([2 * len(registers)]) + b"".join(r.to_bytes(2, "big") for r in registers)
    frame = modbus_rtu.decode_frame(
        modbus_rtu.encode_frame(7, FunctionCode.READ_HOLDING_REGISTERS, payload)
    )
    result = modbus_rtu.interpret(frame)
    assert result.direction is Direction.REPLY
    assert result.message == modbus_rtu.ReadRegistersReply(tuple(registers))
