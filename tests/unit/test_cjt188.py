"""CJ/T 188 codec: the worked frame, frames built from the reference facts, error paths and
property-based round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_agent.protocols import cjt188
from gateway_agent.protocols.cjt188 import (
    CHINA_STANDARD_TIME,
    ControlCode,
    Frame,
    MeteringData,
    MeterStatus,
    MeterType,
    StatusLayout,
    ValveCommand,
    ValveState,
)
from gateway_agent.protocols.errors import (
    ChecksumError,
    DecodeError,
    LengthError,
    MissingEndError,
    NoFrameError,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# Worked example from PROTOCOLS.md. Its A0..A6 are `12 00 00 00 00 00 00`; lowest byte first
# that is meter 00000000000012 (PROTOCOLS.md labels it 00000000001200).
READ_EXAMPLE = h("68 10 12 00 00 00 00 00 00 01 03 90 1F 00 3D 16")
EXAMPLE_ADDRESS = "00000000000012"

# Built by hand from the facts in PROTOCOLS.md, meter 00000012345678 (checksums summed apart)
METER = "00000012345678"
VALVE_OPEN = h("68 10 78 56 34 12 00 00 00 04 04 A0 17 01 55 A1 16")
VALVE_CLOSE = h("68 10 78 56 34 12 00 00 00 04 04 A0 17 01 99 E5 16")
VALVE_REPLY_CLOSED = h("68 10 78 56 34 12 00 00 00 84 05 A0 17 01 01 00 CE 16")
METERING_REPLY = h(
    "68 10 78 56 34 12 00 00 00 81 16 90 1F 02 45 23 01 00 2C 00 00 01 00 2C "
    "45 30 12 01 06 24 20 01 00 69 16"
)
ERROR_REPLY = h("68 10 78 56 34 12 00 00 00 C1 03 02 03 00 55 16")
READ_ADDRESS = h("68 AA AA AA AA AA AA AA AA 03 03 81 0A 00 49 16")
READ_ADDRESS_REPLY = h("68 10 78 56 34 12 00 00 00 83 03 81 0A 00 9D 16")


def test_read_metering_data_worked_example() -> None:
    frame = cjt188.read_data_request(MeterType.COLD_WATER, EXAMPLE_ADDRESS)
    assert cjt188.encode_frame(frame) == READ_EXAMPLE
    parsed = cjt188.decode_frame(READ_EXAMPLE)
    assert parsed.frame == frame
    assert parsed.frame.meter_type == MeterType.COLD_WATER
    assert parsed.frame.function == ControlCode.READ_DATA
    payload = cjt188.split_payload(parsed.frame.data)
    assert (payload.di, payload.ser, payload.body) == (0x901F, 0, b"")


def test_address_is_seven_bytes_lowest_first() -> None:
    assert cjt188.encode_address(METER) == h("78 56 34 12 00 00 00")
    assert cjt188.manufacturer_code("12340000005678") == "1234"


def test_metering_data_reply() -> None:
    frame = cjt188.decode_frame(METERING_REPLY).frame
    assert frame.control == 0x81 and frame.is_reply and not frame.is_error
    data = cjt188.parse_metering_data_reply(frame)
    assert data.current_flow == Decimal("123.45")
    assert data.settlement_flow == Decimal("100.00")
    assert cjt188.unit_name(data.current_unit) == "m³"
    assert cjt188.unit_name(data.settlement_unit) == "m³"
    assert data.real_time == datetime(2024, 6, 1, 12, 30, 45, tzinfo=CHINA_STANDARD_TIME)
    assert data.status.valve is ValveState.CLOSED
    assert data.status.battery_low is False
    built = cjt188.metering_data_reply(MeterType.COLD_WATER, METER, data, ser=2)
    assert cjt188.encode_frame(built) == METERING_REPLY


def test_flow_decimals_are_a_parameter() -> None:
    frame = cjt188.decode_frame(METERING_REPLY).frame
    data = cjt188.parse_metering_data_reply(frame, decimals=3)
    assert data.current_flow == Decimal("12.345")


def test_real_time_in_another_timezone() -> None:
    frame = cjt188.decode_frame(METERING_REPLY).frame
    data = cjt188.parse_metering_data_reply(frame, tz=UTC)
    assert data.real_time == datetime(2024, 6, 1, 12, 30, 45, tzinfo=UTC)


def test_units() -> None:
    assert cjt188.UNITS[0x2C] == "m³"
    assert cjt188.UNITS[0x29] == "L"
    assert cjt188.UNITS[0x35] == "m³/h"
    assert cjt188.UNITS[0x05] == "kWh"
    assert cjt188.unit_name(0xEE) is None


def test_valve_control_requests() -> None:
    open_frame = cjt188.valve_control_request(MeterType.COLD_WATER, METER, ValveCommand.OPEN, ser=1)
    assert cjt188.encode_frame(open_frame) == VALVE_OPEN
    close = cjt188.valve_control_request(MeterType.COLD_WATER, METER, ValveCommand.CLOSE, ser=1)
    assert cjt188.encode_frame(close) == VALVE_CLOSE
    assert cjt188.parse_valve_control_request(cjt188.decode_frame(VALVE_CLOSE).frame) is (
        ValveCommand.CLOSE
    )


def test_valve_control_reply() -> None:
    frame = cjt188.decode_frame(VALVE_REPLY_CLOSED).frame
    status = cjt188.parse_valve_control_reply(frame)
    assert status == MeterStatus(raw=0x0001, valve=ValveState.CLOSED, battery_low=False)
    built = cjt188.valve_control_reply(MeterType.COLD_WATER, METER, 0x0001, ser=1)
    assert cjt188.encode_frame(built) == VALVE_REPLY_CLOSED


def test_error_reply() -> None:
    frame = cjt188.decode_frame(ERROR_REPLY).frame
    assert frame.control == 0xC1
    assert frame.is_reply and frame.is_error
    assert frame.function == ControlCode.READ_DATA
    error = cjt188.parse_error_reply(frame)
    assert error.ser == 2
    assert error.status.valve is ValveState.ABNORMAL
    assert error.di is None
    built = cjt188.error_reply(MeterType.COLD_WATER, METER, ControlCode.READ_DATA, 0x0003, ser=2)
    assert cjt188.encode_frame(built) == ERROR_REPLY
    with pytest.raises(DecodeError):
        cjt188.parse_metering_data_reply(frame)


def test_error_reply_with_di() -> None:
    frame = Frame(MeterType.COLD_WATER, METER, 0xC4, h("A0 17 05 04 00"))
    error = cjt188.parse_error_reply(frame)
    assert (error.di, error.ser, error.status.battery_low) == (0xA017, 5, True)
    with pytest.raises(LengthError):
        cjt188.parse_error_reply(Frame(MeterType.COLD_WATER, METER, 0xC1, h("00 00")))


def test_read_address() -> None:
    request = cjt188.read_address_request()
    assert cjt188.encode_frame(request) == READ_ADDRESS
    assert cjt188.encode_frame(cjt188.read_address_request(wakeup=True)) == (
        h("FE FE FE FE") + READ_ADDRESS
    )
    reply = cjt188.decode_frame(READ_ADDRESS_REPLY).frame
    assert reply.control == 0x83
    assert reply.address == METER
    assert cjt188.encode_frame(cjt188.read_address_reply(MeterType.COLD_WATER, METER)) == (
        READ_ADDRESS_REPLY
    )


def test_control_codes_and_meter_types() -> None:
    assert {c.name: c.value for c in ControlCode} == {
        "READ_DATA": 0x01,
        "READ_ADDRESS": 0x03,
        "WRITE_DATA": 0x04,
        "READ_KEY_VERSION": 0x09,
        "WRITE_ADDRESS": 0x15,
    }
    assert cjt188.meter_type_name(0x10) == "cold_water"
    assert cjt188.meter_type_name(0x11) == "hot_water"
    assert cjt188.meter_type_name(0x12) == "drinking_water"
    assert cjt188.meter_type_name(0x13) == "reclaimed_water"
    assert cjt188.meter_type_name(0xAA) == "wildcard"
    assert cjt188.meter_type_name(0x77) == "unknown"
    write_address_reply = Frame(MeterType.COLD_WATER, METER, 0x95)
    assert write_address_reply.function == ControlCode.WRITE_ADDRESS
    assert write_address_reply.is_reply and not write_address_reply.is_error


@pytest.mark.parametrize(
    ("word", "layout", "valve", "battery_low"),
    [
        (0x0000, StatusLayout(), ValveState.OPEN, False),
        (0x0001, StatusLayout(), ValveState.CLOSED, False),
        (0x0003, StatusLayout(), ValveState.ABNORMAL, False),
        (0x0002, StatusLayout(), ValveState.UNKNOWN, False),
        (0x0004, StatusLayout(), ValveState.OPEN, True),
        (0xFF00, StatusLayout(), ValveState.OPEN, False),  # ST1 is the maker's
        (0x0002, StatusLayout(closed_code=0b10), ValveState.CLOSED, False),
        (0x0040, StatusLayout(valve_shift=6, battery_low_bit=5), ValveState.CLOSED, False),
        (0x00E0, StatusLayout(valve_shift=6, battery_low_bit=5), ValveState.ABNORMAL, True),
    ],
)
def test_status_layouts(
    word: int, layout: StatusLayout, valve: ValveState, battery_low: bool
) -> None:
    status = layout.decode(word)
    assert (status.valve, status.battery_low, status.raw) == (valve, battery_low, word)


def test_di_low_first_option() -> None:
    frame = cjt188.read_data_request(MeterType.COLD_WATER, METER, di_low_first=True)
    assert frame.data == h("1F 90 00")
    assert cjt188.split_payload(frame.data, di_low_first=True).di == 0x901F
    assert cjt188.split_payload(frame.data).di == 0x1F90


def test_real_time_century_byte() -> None:
    moment = cjt188.decode_real_time(h("59 59 23 31 12 99 19"), tz=UTC)
    assert moment == datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert cjt188.encode_real_time(moment, tz=UTC) == h("59 59 23 31 12 99 19")


def test_unset_clock_reads_as_none() -> None:
    assert cjt188.decode_real_time(bytes(7)) is None
    assert cjt188.decode_real_time(b"\xff" * 7) is None
    with pytest.raises(DecodeError):
        cjt188.decode_real_time(h("45 30 12 32 06 24 20"))  # 32 June
    with pytest.raises(DecodeError):
        cjt188.decode_real_time(h("4A 30 12 01 06 24 20"))  # not BCD


# --------------------------------------------------------------------------------------------
# Error paths
# --------------------------------------------------------------------------------------------


def test_bad_checksum() -> None:
    broken = READ_EXAMPLE[:-2] + h("3E 16")
    with pytest.raises(ChecksumError) as caught:
        cjt188.decode_frame(broken)
    assert (caught.value.expected, caught.value.received) == (0x3D, 0x3E)


def test_missing_end_byte() -> None:
    with pytest.raises(MissingEndError, match="expected 16"):
        cjt188.decode_frame(READ_EXAMPLE[:-1] + h("00"))


def test_truncated_frame() -> None:
    for cut in range(1, len(METERING_REPLY)):
        with pytest.raises(LengthError, match="truncated"):
            cjt188.decode_frame(METERING_REPLY[:cut])


def test_no_frame() -> None:
    with pytest.raises(NoFrameError, match="no 68"):
        cjt188.decode_frame(h("FE FE 01 02"))
    with pytest.raises(NoFrameError, match="L > 0x64"):
        cjt188.decode_frame(h("68 10 00 00 00 00 00 00 00 01 FF"))


def test_longest_data_field_the_standard_allows() -> None:
    frame = Frame(MeterType.COLD_WATER, METER, 0x81, bytes(range(0x64)))
    wire = cjt188.encode_frame(frame)
    assert wire[10] == 0x64
    assert cjt188.decode_frame(wire).frame == frame
    assert cjt188.extract_frame(wire) == (frame, len(wire))
    too_long = cjt188.encode_frame(Frame(MeterType.COLD_WATER, METER, 0x81, bytes(0x65)))
    with pytest.raises(NoFrameError, match="L > 0x64"):
        cjt188.decode_frame(too_long)


def test_garbage_before_the_frame() -> None:
    noise = h("00 68 03 68")  # stray 68s are tried and dropped
    parsed = cjt188.decode_frame(noise + h("FE FE") + METERING_REPLY + h("AB"))
    assert parsed.garbage == noise
    assert parsed.frame.wakeup is True
    assert parsed.consumed == len(noise) + 2 + len(METERING_REPLY)


def test_metering_data_length_is_checked() -> None:
    frame = cjt188.decode_frame(METERING_REPLY).frame
    short = Frame(frame.meter_type, frame.address, frame.control, frame.data[:-1])
    with pytest.raises(LengthError, match="19 bytes"):
        cjt188.parse_metering_data_reply(short)


def test_unknown_valve_command() -> None:
    frame = Frame(MeterType.COLD_WATER, METER, 0x04, h("A0 17 00 42"))
    with pytest.raises(DecodeError, match="42"):
        cjt188.parse_valve_control_request(frame)


def test_wrong_di_is_refused() -> None:
    frame = Frame(MeterType.COLD_WATER, METER, 0x81, h("D1 20 00") + bytes(19))
    with pytest.raises(DecodeError, match="901F"):
        cjt188.parse_metering_data_reply(frame)


# --------------------------------------------------------------------------------------------
# Stream helper
# --------------------------------------------------------------------------------------------


def test_extract_frame_waits_for_every_missing_byte() -> None:
    wire = h("FE FE FE FE") + METERING_REPLY
    for cut in range(len(wire)):
        assert cjt188.extract_frame(wire[:cut]) == (None, 0)
    frame, consumed = cjt188.extract_frame(wire + h("68 10"))
    assert frame is not None and frame.control == 0x81
    assert consumed == len(wire)


def test_extract_frame_resyncs_after_a_broken_frame() -> None:
    broken = READ_EXAMPLE[:-2] + h("00 16")
    buffer = broken + VALVE_OPEN
    with pytest.raises(ChecksumError) as caught:
        cjt188.extract_frame(buffer)
    assert caught.value.consumed == 1
    buffer = buffer[caught.value.consumed :]
    frame, consumed = cjt188.extract_frame(buffer)
    assert frame == cjt188.decode_frame(VALVE_OPEN).frame
    assert consumed == len(buffer)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

addresses = st.text(alphabet="0123456789ABCDEF", min_size=14, max_size=14)
frames = st.builds(
    Frame,
    meter_type=st.integers(0, 0xFF),
    address=addresses,
    control=st.integers(0, 0xFF),
    data=st.binary(max_size=cjt188.MAX_DATA_LENGTH),
    wakeup=st.booleans(),
)
garbage = st.binary(max_size=20).map(lambda raw: bytes(b for b in raw if b not in (0x68, 0xFE)))
offsets = st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=offsets
).map(lambda dt: dt.replace(microsecond=0))
flows = st.integers(0, 10**8 - 1).map(lambda units: Decimal(units).scaleb(-2))


@given(addresses)
def test_address_round_trip(address: str) -> None:
    assert cjt188.decode_address(cjt188.encode_address(address)) == address


@given(frames)
def test_frame_round_trip(frame: Frame) -> None:
    wire = cjt188.encode_frame(frame)
    assert len(wire) == 13 + len(frame.data) + (4 if frame.wakeup else 0)
    parsed = cjt188.decode_frame(wire)
    assert parsed.frame == frame
    assert parsed.consumed == len(wire)


@given(frames, garbage)
def test_garbage_prefix_round_trip(frame: Frame, noise: bytes) -> None:
    parsed = cjt188.decode_frame(noise + cjt188.encode_frame(frame))
    assert parsed.frame == frame
    assert parsed.garbage == noise


@given(frames, st.data())
def test_any_corrupted_data_byte_is_detected(frame: Frame, data: st.DataObject) -> None:
    frame = Frame(frame.meter_type, frame.address, frame.control, frame.data or b"\x00")
    wire = bytearray(cjt188.encode_frame(frame))
    index = data.draw(st.integers(11, 11 + len(frame.data) - 1))
    wire[index] = (wire[index] + data.draw(st.integers(1, 255))) & 0xFF
    with pytest.raises(ChecksumError):
        cjt188.decode_frame(bytes(wire))


@given(
    flows,
    st.sampled_from(sorted(cjt188.UNITS)),
    flows,
    st.one_of(st.none(), moments),
    st.sampled_from([ValveState.OPEN, ValveState.CLOSED, ValveState.ABNORMAL]),
    st.booleans(),
    st.integers(0, 0xFF),
)
def test_metering_data_round_trip(
    current: Decimal,
    unit: int,
    settlement: Decimal,
    real_time: datetime | None,
    valve: ValveState,
    battery_low: bool,
    maker_byte: int,
) -> None:
    layout = StatusLayout()
    word = layout.encode(valve, battery_low, other_bits=maker_byte << 8)
    assert word >> 8 == maker_byte
    data = MeteringData(
        current_flow=current,
        current_unit=unit,
        settlement_flow=settlement,
        settlement_unit=0x2C,
        real_time=real_time,
        status=layout.decode(word),
    )
    frame = cjt188.metering_data_reply(MeterType.HOT_WATER, METER, data, ser=9)
    parsed = cjt188.parse_metering_data_reply(cjt188.decode_frame(cjt188.encode_frame(frame)).frame)
    assert parsed == data
    assert parsed.status.valve is valve
    assert parsed.status.battery_low is battery_low


@given(st.lists(st.tuples(frames, garbage), min_size=1, max_size=4), st.data())
def test_stream_reassembles_frames_from_chunks(
    items: list[tuple[Frame, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(noise + cjt188.encode_frame(frame) for frame, noise in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    buffer = b""
    received: list[Frame] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buffer += stream[a:b]
        while True:
            frame, consumed = cjt188.extract_frame(buffer)
            if frame is None:
                break
            received.append(frame)
            buffer = buffer[consumed:]
    assert received == [frame for frame, _ in items]


@given(st.sampled_from(ValveCommand), st.integers(0, 0xFF), addresses)
def test_valve_request_round_trip(command: ValveCommand, ser: int, address: str) -> None:
    frame = cjt188.valve_control_request(MeterType.COLD_WATER, address, command, ser=ser)
    decoded = cjt188.decode_frame(cjt188.encode_frame(frame)).frame
    assert cjt188.parse_valve_control_request(decoded) is command
    assert cjt188.split_payload(decoded.data).ser == ser
