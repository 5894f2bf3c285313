"""DL/T 645-2007 / -1997 codec: worked frames, frames built from the reference facts, error
paths and property-based round trips."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_agent.protocols import dlt645
from gateway_agent.protocols.dlt645 import (
    CHINA_STANDARD_TIME,
    ControlCode,
    Credentials,
    Frame,
    RemoteCommand,
    RemoteControl,
)
from gateway_agent.protocols.errors import (
    ChecksumError,
    DecodeError,
    LengthError,
    MissingEndError,
    NoFrameError,
)

METER = "000000000161"


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# Worked examples from PROTOCOLS.md
READ_REQUEST = h("68 61 01 00 00 00 00 68 11 04 33 33 34 33 14 16")
READ_REPLY = h("68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16")
READ_ADDRESS = h("68 AA AA AA AA AA AA 68 13 00 DF 16")

# Built by hand from the facts in PROTOCOLS.md (checksums summed independently)
REMAINING_AMOUNT_REPLY = h("68 61 01 00 00 00 00 68 91 08 33 35 C3 33 89 67 45 33 91 16")
VOLTAGE_A_REPLY = h("68 61 01 00 00 00 00 68 91 06 33 34 34 35 34 55 22 16")
NEGATIVE_CURRENT_REPLY = h("68 61 01 00 00 00 00 68 91 07 33 34 35 35 67 45 B3 FA 16")
NEGATIVE_PF_REPLY = h("68 61 01 00 00 00 00 68 91 06 33 33 39 35 83 BC DC 16")
STATUS_WORD_3_REPLY = h("68 61 01 00 00 00 00 68 91 06 36 38 33 37 83 35 59 16")
ERROR_NO_SUCH_DATA = h("68 61 01 00 00 00 00 68 D1 01 35 39 16")
REMOTE_CONTROL_OK = h("68 61 01 00 00 00 00 68 9C 00 CE 16")
REMOTE_CONTROL_REFUSED = h("68 61 01 00 00 00 00 68 DC 01 37 46 16")
TRIP_REQUEST = h(
    "68 61 01 00 00 00 00 68 1C 10 35 89 67 45 34 33 33 33 4D 33 33 33 45 34 39 57 84 16"
)
TIME_SYNC = h("68 99 99 99 99 99 99 68 08 06 33 33 45 34 39 57 E3 16")
READ_1997 = h("68 61 01 00 00 00 00 68 01 02 43 C3 3B 16")
REPLY_1997 = h("68 61 01 00 00 00 00 68 81 06 43 C3 AB 89 67 45 9F 16")

CREDENTIALS = Credentials(password_level=0x02, password="123456", operator_code="00000001")
DEADLINE = datetime(2024, 6, 1, 12, 0, 0, tzinfo=CHINA_STANDARD_TIME)


# --------------------------------------------------------------------------------------------
# Worked examples, byte for byte
# --------------------------------------------------------------------------------------------


def test_read_request_worked_example() -> None:
    frame = dlt645.read_data_request(METER, 0x00010000)
    assert dlt645.encode_frame(frame) == READ_REQUEST
    parsed = dlt645.decode_frame(READ_REQUEST)
    assert parsed.frame == frame
    assert dlt645.parse_read_request(parsed.frame) == 0x00010000
    assert parsed.garbage == b""
    assert parsed.consumed == len(READ_REQUEST)


def test_read_reply_worked_example_is_026_kwh() -> None:
    frame = dlt645.decode_frame(READ_REPLY).frame
    assert frame.address == METER
    assert frame.control == 0x91
    assert frame.is_reply and not frame.is_error and not frame.has_followup
    assert frame.function == ControlCode.READ_DATA
    reply = dlt645.parse_read_reply(frame)
    assert reply.di == 0x00010000
    item = dlt645.DATA_ITEMS[reply.di]
    assert item.name == "forward_active_energy_total"
    value = dlt645.decode_item(item, reply.value)
    assert value == Decimal("0.26")
    assert isinstance(value, Decimal)
    rebuilt = dlt645.read_data_reply(METER, 0x00010000, dlt645.encode_item(item, Decimal("0.26")))
    assert dlt645.encode_frame(rebuilt) == READ_REPLY


def test_read_address_worked_example() -> None:
    frame = dlt645.read_address_request()
    assert dlt645.encode_frame(frame) == READ_ADDRESS
    decoded = dlt645.decode_frame(READ_ADDRESS).frame
    assert decoded.address == dlt645.WILDCARD_ADDRESS
    assert decoded.function == ControlCode.READ_ADDRESS
    assert decoded.data == b""


def test_address_goes_on_the_wire_lowest_byte_first() -> None:
    assert dlt645.encode_address(METER) == h("61 01 00 00 00 00")
    assert dlt645.decode_address(h("61 01 00 00 00 00")) == METER
    assert dlt645.encode_di(0x00010000) == h("00 00 01 00")


# --------------------------------------------------------------------------------------------
# Frames built from the facts
# --------------------------------------------------------------------------------------------


def test_remaining_amount_reply() -> None:
    reply = dlt645.parse_read_reply(dlt645.decode_frame(REMAINING_AMOUNT_REPLY).frame)
    item = dlt645.DATA_ITEMS[reply.di]
    assert (item.name, item.unit) == ("remaining_amount", "yuan")
    assert dlt645.decode_item(item, reply.value) == Decimal("1234.56")
    built = dlt645.read_data_reply(METER, 0x00900200, dlt645.encode_item(item, Decimal("1234.56")))
    assert dlt645.encode_frame(built) == REMAINING_AMOUNT_REPLY


def test_voltage_reply() -> None:
    reply = dlt645.parse_read_reply(dlt645.decode_frame(VOLTAGE_A_REPLY).frame)
    assert reply.di == 0x02010100
    item = dlt645.DATA_ITEMS[reply.di]
    assert dlt645.decode_item(item, reply.value) == Decimal("220.1")
    assert item.unit == "V"


def test_signed_current_and_power_factor() -> None:
    current = dlt645.parse_read_reply(dlt645.decode_frame(NEGATIVE_CURRENT_REPLY).frame)
    assert current.di == 0x02020100
    assert dlt645.decode_item(dlt645.DATA_ITEMS[current.di], current.value) == Decimal("-1.234")
    pf = dlt645.parse_read_reply(dlt645.decode_frame(NEGATIVE_PF_REPLY).frame)
    assert dlt645.decode_item(dlt645.DATA_ITEMS[pf.di], pf.value) == Decimal("-0.950")


def test_status_word_3_reply_decodes_relay_and_meter_type() -> None:
    reply = dlt645.parse_read_reply(dlt645.decode_frame(STATUS_WORD_3_REPLY).frame)
    assert reply.di == 0x04000503
    word = dlt645.decode_item(dlt645.DATA_ITEMS[reply.di], reply.value)
    assert word == 0x0250
    assert isinstance(word, int)
    status = dlt645.decode_status_word_3(word)
    assert status.relay_off is True
    assert status.relay_command_off is True
    assert status.pre_trip_alarm is False
    assert status.meter_type is dlt645.MeterType.MONEY_PREPAID


@pytest.mark.parametrize(
    ("word", "relay_off", "command_off", "alarm", "meter_type"),
    [
        (0x0000, False, False, False, dlt645.MeterType.NOT_PREPAID),
        (0x0010, True, False, False, dlt645.MeterType.NOT_PREPAID),
        (0x0040, False, True, False, dlt645.MeterType.NOT_PREPAID),
        (0x0080, False, False, True, dlt645.MeterType.NOT_PREPAID),
        (0x0100, False, False, False, dlt645.MeterType.ENERGY_PREPAID),
        (0x0200, False, False, False, dlt645.MeterType.MONEY_PREPAID),
        (0xFC2F, False, False, False, dlt645.MeterType.NOT_PREPAID),
    ],
)
def test_status_word_3_bits(
    word: int, relay_off: bool, command_off: bool, alarm: bool, meter_type: dlt645.MeterType
) -> None:
    status = dlt645.decode_status_word_3(word)
    assert (status.relay_off, status.relay_command_off, status.pre_trip_alarm) == (
        relay_off,
        command_off,
        alarm,
    )
    assert status.meter_type is meter_type
    assert status.raw == word


def test_error_reply_d1_no_such_data() -> None:
    frame = dlt645.decode_frame(ERROR_NO_SUCH_DATA).frame
    assert frame.is_reply and frame.is_error
    assert frame.function == ControlCode.READ_DATA
    error_byte = dlt645.parse_error_reply(frame)
    assert error_byte == 0x02
    assert dlt645.error_names(error_byte) == ("no_such_data",)
    built = dlt645.error_reply(METER, ControlCode.READ_DATA, dlt645.ErrorFlag.NO_SUCH_DATA)
    assert dlt645.encode_frame(built) == ERROR_NO_SUCH_DATA
    with pytest.raises(DecodeError):
        dlt645.parse_read_reply(frame)


def test_error_byte_names_every_bit() -> None:
    assert dlt645.error_names(0x7F) == (
        "other",
        "no_such_data",
        "wrong_password_or_unauthorised",
        "baud_cannot_change",
        "too_many_annual_zones",
        "too_many_daily_periods",
        "too_many_tariffs",
    )
    assert dlt645.error_names(0x00) == ()
    assert dlt645.error_names(0x84) == ("wrong_password_or_unauthorised", "reserved_b7")


def test_remote_control_success_reply_9c() -> None:
    frame = dlt645.decode_frame(REMOTE_CONTROL_OK).frame
    assert frame.control == 0x9C
    assert frame.function == ControlCode.REMOTE_CONTROL
    assert frame.is_reply and not frame.is_error
    assert frame.data == b""
    assert dlt645.encode_frame(dlt645.ok_reply(METER, ControlCode.REMOTE_CONTROL)) == (
        REMOTE_CONTROL_OK
    )


def test_remote_control_refused_unauthorised() -> None:
    frame = dlt645.decode_frame(REMOTE_CONTROL_REFUSED).frame
    assert frame.control == 0xDC
    assert dlt645.error_names(dlt645.parse_error_reply(frame)) == (
        "wrong_password_or_unauthorised",
    )


def test_trip_request_payload() -> None:
    control = RemoteControl(CREDENTIALS, RemoteCommand.TRIP, DEADLINE)
    frame = dlt645.remote_control_request(METER, control)
    assert dlt645.encode_frame(frame) == TRIP_REQUEST
    assert len(frame.data) == 16
    parsed = dlt645.parse_remote_control_request(dlt645.decode_frame(TRIP_REQUEST).frame)
    assert parsed == control
    assert parsed.credentials.password_level == 0x02
    assert parsed.credentials.password == "123456"
    assert parsed.credentials.operator_code == "00000001"
    assert parsed.command is RemoteCommand.TRIP
    assert parsed.deadline.utcoffset() == timedelta(hours=8)


def test_remote_control_deadline_in_another_timezone() -> None:
    data = dlt645.decode_frame(TRIP_REQUEST).frame.data
    utc = dlt645.parse_remote_control(data, tz=UTC)
    assert utc.deadline == datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
    local = dlt645.parse_remote_control(data)
    assert local.deadline == datetime(2024, 6, 1, 4, 0, 0, tzinfo=UTC)


def test_remote_command_codes() -> None:
    assert {c.name: c.value for c in RemoteCommand} == {
        "TRIP": 0x1A,
        "CLOSE_ALLOWED": 0x1B,
        "CLOSE_IMMEDIATELY": 0x1C,
        "ALARM": 0x2A,
        "ALARM_RELEASE": 0x2B,
        "KEEP_POWER": 0x3A,
        "KEEP_POWER_RELEASE": 0x3B,
    }


def test_remote_control_payload_errors() -> None:
    data = bytearray(dlt645.decode_frame(TRIP_REQUEST).frame.data)
    with pytest.raises(LengthError):
        dlt645.parse_remote_control(bytes(data[:15]))
    data[8] = 0x4F
    with pytest.raises(DecodeError, match="4F"):
        dlt645.parse_remote_control(bytes(data))
    data[8] = 0x1A
    data[14] = 0x13  # month 13 (N7)
    with pytest.raises(DecodeError):
        dlt645.parse_remote_control(bytes(data))


def test_broadcast_time_sync() -> None:
    when = datetime(2024, 6, 1, 4, 0, 0, 999, tzinfo=UTC)
    frame = dlt645.broadcast_time_sync_request(when)
    assert dlt645.encode_frame(frame) == TIME_SYNC
    assert dlt645.is_broadcast(frame.address)
    back = dlt645.parse_broadcast_time(dlt645.decode_frame(TIME_SYNC).frame)
    assert back == when.replace(microsecond=0)
    with pytest.raises(ValueError, match="aware"):
        dlt645.broadcast_time_sync_request(datetime(2024, 6, 1))


def test_dlt645_1997_read_of_9010() -> None:
    frame = dlt645.read_data_request_1997(METER, 0x9010)
    assert dlt645.encode_frame(frame) == READ_1997
    decoded = dlt645.decode_frame(READ_1997).frame
    assert dlt645.edition_of(decoded) is dlt645.Edition.V1997
    assert dlt645.parse_read_request_1997(decoded) == 0x9010
    assert dlt645.control_name(decoded.function, dlt645.Edition.V1997) == "read_data"


def test_dlt645_1997_reply() -> None:
    decoded = dlt645.decode_frame(REPLY_1997).frame
    reply = dlt645.parse_read_reply_1997(decoded)
    assert reply.di == 0x9010
    item = dlt645.DATA_ITEMS_1997[0x9010]
    assert dlt645.decode_item(item, reply.value) == Decimal("123456.78")
    built = dlt645.read_data_reply_1997(METER, 0x9010, h("78 56 34 12"))
    assert dlt645.encode_frame(built) == REPLY_1997


def test_edition_guess() -> None:
    assert dlt645.edition_of(dlt645.decode_frame(READ_REQUEST).frame) is dlt645.Edition.V2007
    assert dlt645.edition_of(dlt645.decode_frame(TIME_SYNC).frame) is dlt645.Edition.V2007
    assert dlt645.edition_of(Frame(METER, 0x0A, h("11"))) is dlt645.Edition.V1997
    assert dlt645.edition_of(Frame(METER, 0xC1, h("02"))) is dlt645.Edition.V1997


def test_write_data_request_round_trip() -> None:
    item = dlt645.data_item_by_name("alarm_amount_1")
    value = dlt645.encode_item(item, Decimal("20.00"))
    frame = dlt645.write_data_request(METER, item.di, value, CREDENTIALS)
    assert frame.data[:4] == h("01 10 00 04")
    assert frame.data[4:12] == h("02 56 34 12 01 00 00 00")
    parsed = dlt645.parse_write_request(dlt645.decode_frame(dlt645.encode_frame(frame)).frame)
    assert parsed.di == 0x04001001
    assert parsed.credentials == CREDENTIALS
    assert dlt645.decode_item(item, parsed.value) == Decimal("20.00")


def test_read_followup() -> None:
    request = dlt645.read_followup_request(METER, 0x00010000, 2)
    assert request.data == h("00 00 01 00 02")
    reply = dlt645.decode_frame(
        dlt645.encode_frame(Frame(METER, 0xB2, h("00 00 01 00 26 00 00 00 02")))
    ).frame
    assert reply.has_followup
    parsed = dlt645.parse_read_reply(reply)
    assert (parsed.di, parsed.value, parsed.seq) == (0x00010000, h("26 00 00 00"), 2)


def test_read_address_reply() -> None:
    frame = dlt645.read_address_reply(METER)
    assert frame.control == 0x93
    assert dlt645.parse_read_address_reply(frame) == METER


# --------------------------------------------------------------------------------------------
# Data identifier table
# --------------------------------------------------------------------------------------------

EXPECTED_ITEMS = [
    # (DI, width, decimals, unit, signed, verified) — straight from PROTOCOLS.md
    (0x00000000, 4, 2, "kWh", False, True),
    (0x00010000, 4, 2, "kWh", False, True),
    (0x00010100, 4, 2, "kWh", False, True),
    (0x00010200, 4, 2, "kWh", False, True),
    (0x00010300, 4, 2, "kWh", False, True),
    (0x00010400, 4, 2, "kWh", False, True),
    (0x02010100, 2, 1, "V", False, True),
    (0x02010200, 2, 1, "V", False, True),
    (0x02010300, 2, 1, "V", False, True),
    (0x02020100, 3, 3, "A", True, True),
    (0x02020200, 3, 3, "A", True, True),
    (0x02020300, 3, 3, "A", True, True),
    (0x02030000, 3, 4, "kW", True, True),
    (0x02060000, 2, 3, "", True, True),
    (0x02800002, 2, 2, "Hz", False, True),
    (0x00900200, 4, 2, "yuan", False, True),
    (0x00900201, 4, 2, "yuan", False, True),
    (0x00900100, 4, 2, "kWh", False, True),
    (0x00900101, 4, 2, "kWh", False, True),
    (0x04001001, 4, 2, "yuan", False, True),
    (0x04001002, 4, 2, "yuan", False, True),
    (0x04001003, 4, 2, "yuan", False, True),
    (0x04001004, 4, 2, "yuan", False, True),
    (0x04001005, 4, 2, "yuan", False, True),
    (0x03330601, 4, 2, "yuan", False, False),
    (0x03330201, 2, 0, "", False, False),
    (0x03320201, 2, 0, "", False, False),
]


@pytest.mark.parametrize(("di", "width", "decimals", "unit", "signed", "verified"), EXPECTED_ITEMS)
def test_numeric_data_items(
    di: int, width: int, decimals: int, unit: str, signed: bool, verified: bool
) -> None:
    item = dlt645.DATA_ITEMS[di]
    assert (item.width, item.decimals, item.unit, item.signed, item.verified) == (
        width,
        decimals,
        unit,
        signed,
        verified,
    )
    assert item.kind is dlt645.ValueKind.NUMBER


def test_non_numeric_data_items() -> None:
    items = dlt645.DATA_ITEMS
    assert items[0x04000101].kind is dlt645.ValueKind.DATE_WEEKDAY
    assert items[0x04000102].kind is dlt645.ValueKind.TIME
    assert items[0x04000401].kind is dlt645.ValueKind.ADDRESS
    for n in range(1, 8):
        assert items[0x04000500 + n].kind is dlt645.ValueKind.BITS
        assert items[0x04000500 + n].width == 2
    names = [item.name for item in items.values()]
    assert len(names) == len(set(names))


def test_date_time_and_address_items() -> None:
    items = dlt645.DATA_ITEMS
    assert dlt645.decode_item(items[0x04000101], h("06 01 06 24")) == dlt645.MeterDate(
        date(2024, 6, 1), 6
    )
    assert dlt645.decode_item(items[0x04000102], h("45 30 12")) == time(12, 30, 45)
    assert dlt645.decode_item(items[0x04000401], h("61 01 00 00 00 00")) == METER
    with pytest.raises(DecodeError):
        dlt645.decode_item(items[0x04000102], h("45 61 12"))  # minute 61
    with pytest.raises(DecodeError):
        dlt645.decode_item(items[0x04000101], h("06 32 02 24"))  # 32 February


def test_value_errors() -> None:
    item = dlt645.DATA_ITEMS[0x00900200]
    with pytest.raises(DecodeError, match="not BCD"):
        dlt645.decode_item(item, h("5A 00 00 00"))
    with pytest.raises(LengthError, match="4 byte"):
        dlt645.decode_item(item, h("00 00 00"))
    # unverified widths are decoded with whatever length the meter sends
    count = dlt645.DATA_ITEMS[0x03330201]
    assert dlt645.decode_item(count, h("12 34 00")) == Decimal(3412)
    with pytest.raises(ValueError, match="decimal place"):
        dlt645.encode_item(item, Decimal("1.005"))
    with pytest.raises(ValueError, match="negative"):
        dlt645.encode_item(item, Decimal("-1"))
    with pytest.raises(ValueError, match="does not fit"):
        dlt645.encode_item(item, Decimal("1000000.00"))
    with pytest.raises(ValueError, match="does not fit"):
        dlt645.encode_item(dlt645.DATA_ITEMS[0x02020100], Decimal("800.000"))
    with pytest.raises(TypeError):
        dlt645.encode_item(item, "12")


# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------


def test_address_helpers() -> None:
    assert dlt645.meter_address(161) == METER
    assert dlt645.abbreviated_address("0161") == "AAAAAAAA0161"
    assert dlt645.is_wildcard("AAAAAAAA0161")
    assert not dlt645.is_wildcard(METER)
    assert dlt645.is_broadcast("999999999999")
    assert not dlt645.is_broadcast("999999999998")
    assert dlt645.normalise_address("aaaaaaaaaaaa") == dlt645.WILDCARD_ADDRESS
    for bad in ("00000000016", "0000000001610", "00000000016Z"):
        with pytest.raises(ValueError, match="12 hex digits"):
            dlt645.encode_address(bad)
    with pytest.raises(ValueError):
        dlt645.abbreviated_address("161")
    with pytest.raises(ValueError):
        dlt645.meter_address(10**12)


# --------------------------------------------------------------------------------------------
# Error paths
# --------------------------------------------------------------------------------------------


def test_bad_checksum() -> None:
    broken = READ_REPLY[:-2] + bytes([READ_REPLY[-2] ^ 0x01]) + READ_REPLY[-1:]
    with pytest.raises(ChecksumError) as caught:
        dlt645.decode_frame(broken)
    assert caught.value.expected == 0x8A
    assert caught.value.received == 0x8B
    assert "8B" in str(caught.value) and "8A" in str(caught.value)


def test_missing_end_byte() -> None:
    broken = READ_REQUEST[:-1] + h("17")
    with pytest.raises(MissingEndError, match="expected 16"):
        dlt645.decode_frame(broken)


def test_truncated_frame() -> None:
    for cut in range(1, len(READ_REPLY)):
        with pytest.raises(LengthError, match="truncated"):
            dlt645.decode_frame(READ_REPLY[:cut])


def test_length_field_disagrees_with_frame() -> None:
    longer = bytearray(READ_REQUEST)
    longer[9] = 0x05  # L says 5, only 4 data bytes follow: the end byte lands on the 00
    with pytest.raises(MissingEndError):
        dlt645.decode_frame(bytes(longer) + h("00"))


def test_no_frame() -> None:
    with pytest.raises(NoFrameError, match="no 68"):
        dlt645.decode_frame(h("FE FE 01 02 03"))
    with pytest.raises(NoFrameError, match="second 68"):
        dlt645.decode_frame(h("68 61 01 00 00 00 00 00 11 04 33 33 34 33 14 16"))
    with pytest.raises(NoFrameError):
        dlt645.decode_frame(b"")


def test_garbage_before_the_frame_is_skipped_and_reported() -> None:
    noise = h("00 12 68 55")
    parsed = dlt645.decode_frame(noise + h("FE FE FE FE") + READ_REPLY + h("00"))
    assert parsed.garbage == noise
    assert parsed.frame.wakeup is True
    assert parsed.frame.data == h("00 00 01 00 26 00 00 00")
    assert parsed.consumed == len(noise) + 4 + len(READ_REPLY)


def test_wakeup_bytes() -> None:
    frame = dlt645.read_data_request(METER, 0x00010000, wakeup=True)
    wire = dlt645.encode_frame(frame)
    assert wire == h("FE FE FE FE") + READ_REQUEST
    parsed = dlt645.decode_frame(wire)
    assert parsed.frame == frame
    assert parsed.garbage == b""


def test_parse_helpers_refuse_the_wrong_frame() -> None:
    request = dlt645.decode_frame(READ_REQUEST).frame
    with pytest.raises(DecodeError, match="read reply"):
        dlt645.parse_read_reply(request)
    with pytest.raises(DecodeError, match="error reply"):
        dlt645.parse_error_reply(request)
    with pytest.raises(LengthError):
        dlt645.parse_read_reply(Frame(METER, 0x91, h("00 00")))


def test_frame_validation() -> None:
    with pytest.raises(ValueError, match="data too long"):
        Frame(METER, 0x11, bytes(256))
    with pytest.raises(ValueError, match="control"):
        Frame(METER, 0x100)
    with pytest.raises(ValueError, match="password"):
        Credentials(2, "12345", "00000000")


# --------------------------------------------------------------------------------------------
# Stream helper
# --------------------------------------------------------------------------------------------


def test_extract_frame_waits_for_every_missing_byte() -> None:
    wire = h("FE FE FE FE") + READ_REPLY
    for cut in range(len(wire)):
        assert dlt645.extract_frame(wire[:cut]) == (None, 0)
    frame, consumed = dlt645.extract_frame(wire + READ_REQUEST[:3])
    assert frame is not None and frame.control == 0x91
    assert consumed == len(wire)


def test_extract_frame_raises_on_a_broken_frame_and_says_how_far_to_skip() -> None:
    broken = READ_REQUEST[:-2] + h("00 16")
    buffer = h("01 02") + broken + READ_REPLY
    with pytest.raises(ChecksumError) as caught:
        dlt645.extract_frame(buffer)
    assert caught.value.consumed == 2 + len(broken)
    frame, consumed = dlt645.extract_frame(buffer[caught.value.consumed :])
    assert frame == dlt645.decode_frame(READ_REPLY).frame
    assert consumed == len(READ_REPLY)


def test_extract_frame_drops_a_frame_without_its_end_byte() -> None:
    broken = READ_REQUEST[:-1] + h("00")
    with pytest.raises(MissingEndError) as caught:
        dlt645.extract_frame(h("FE FE") + broken + READ_REQUEST)
    assert caught.value.consumed == 2 + len(broken)


def test_extract_frame_skips_a_stray_68() -> None:
    buffer = h("68 00 00 00 00 00 00 00 00") + READ_REQUEST
    frame, consumed = dlt645.extract_frame(buffer)
    assert frame is not None and frame.function == ControlCode.READ_DATA
    assert consumed == len(buffer)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

hex_addresses = st.text(alphabet="0123456789ABCDEF", min_size=12, max_size=12)
frames = st.builds(
    Frame,
    address=hex_addresses,
    control=st.integers(0, 0xFF),
    data=st.binary(max_size=200),
    wakeup=st.booleans(),
)
garbage = st.binary(max_size=20).map(lambda raw: bytes(b for b in raw if b not in (0x68, 0xFE)))


@given(hex_addresses)
def test_address_round_trip(address: str) -> None:
    wire = dlt645.encode_address(address)
    assert len(wire) == 6
    assert dlt645.decode_address(wire) == address


@given(st.integers(0, 10**12 - 1))
def test_meter_number_round_trip(number: int) -> None:
    address = dlt645.meter_address(number)
    assert int(dlt645.decode_address(dlt645.encode_address(address))) == number


@given(st.integers(0, 0xFFFFFFFF))
def test_di_round_trip(di: int) -> None:
    assert dlt645.decode_di(dlt645.encode_di(di)) == di
    assert int(dlt645.format_di(di), 16) == di


@given(
    st.integers(1, 6).flatmap(lambda w: st.tuples(st.just(w), st.integers(0, 10 ** (2 * w) - 1)))
)
def test_bcd_round_trip(width_and_value: tuple[int, int]) -> None:
    width, value = width_and_value
    raw = dlt645.int_to_bcd(value, width)
    assert len(raw) == width
    assert all(c in "0123456789" for c in raw.hex())
    assert dlt645.bcd_to_int(raw) == value


numeric_items = [
    item for item in dlt645.DATA_ITEMS.values() if item.kind is dlt645.ValueKind.NUMBER
]


@st.composite
def item_and_value(draw: st.DrawFn) -> tuple[dlt645.DataItem, Decimal]:
    item = draw(st.sampled_from(numeric_items))
    limit = 8 * 10 ** (2 * item.width - 1) if item.signed else 10 ** (2 * item.width)
    low = -(limit - 1) if item.signed else 0
    units = draw(st.integers(low, limit - 1))
    return item, Decimal(units).scaleb(-item.decimals)


@given(item_and_value())
def test_value_round_trip(pair: tuple[dlt645.DataItem, Decimal]) -> None:
    item, value = pair
    raw = dlt645.encode_item(item, value)
    assert len(raw) == item.width
    decoded = dlt645.decode_item(item, raw)
    assert isinstance(decoded, Decimal)
    assert decoded == value
    if item.signed:
        assert bool(raw[-1] & 0x80) == (value < 0)


@given(frames)
def test_frame_round_trip(frame: Frame) -> None:
    wire = dlt645.encode_frame(frame)
    assert len(wire) == 12 + len(frame.data) + (4 if frame.wakeup else 0)
    parsed = dlt645.decode_frame(wire)
    assert parsed.frame == frame
    assert parsed.consumed == len(wire)


@given(frames, garbage)
def test_garbage_prefix_round_trip(frame: Frame, noise: bytes) -> None:
    parsed = dlt645.decode_frame(noise + dlt645.encode_frame(frame))
    assert parsed.frame == frame
    assert parsed.garbage == noise


@given(frames, st.data())
def test_any_corrupted_data_byte_is_a_checksum_error(frame: Frame, data: st.DataObject) -> None:
    if not frame.data:
        frame = replace(frame, data=b"\x00")
    wire = bytearray(dlt645.encode_frame(replace(frame, wakeup=False)))
    index = data.draw(st.integers(10, 10 + len(frame.data) - 1))
    wire[index] = (wire[index] + data.draw(st.integers(1, 255))) & 0xFF
    with pytest.raises(ChecksumError):
        dlt645.decode_frame(bytes(wire))


@given(st.lists(st.tuples(frames, garbage), min_size=1, max_size=4), st.data())
def test_stream_reassembles_frames_from_chunks(
    items: list[tuple[Frame, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(noise + dlt645.encode_frame(frame) for frame, noise in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    buffer = b""
    received: list[Frame] = []
    for chunk in chunks:
        buffer += chunk
        while True:
            frame, consumed = dlt645.extract_frame(buffer)
            if frame is None:
                break
            received.append(frame)
            buffer = buffer[consumed:]
    assert received == [frame for frame, _ in items]


credentials = st.builds(
    Credentials,
    password_level=st.integers(0, 0xFF),
    password=st.text(alphabet="0123456789ABCDEF", min_size=6, max_size=6),
    operator_code=st.text(alphabet="0123456789ABCDEF", min_size=8, max_size=8),
)
offsets = st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
deadlines = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=offsets
).map(lambda dt: dt.replace(microsecond=0))


@given(credentials, st.sampled_from(RemoteCommand), deadlines)
def test_remote_control_round_trip(
    creds: Credentials, command: RemoteCommand, deadline: datetime
) -> None:
    control = RemoteControl(creds, command, deadline)
    frame = dlt645.remote_control_request(METER, control)
    assert frame.control == 0x1C
    assert len(frame.data) == 16
    assert frame.data[9] == 0x00  # N2 reserved
    parsed = dlt645.parse_remote_control_request(
        dlt645.decode_frame(dlt645.encode_frame(frame)).frame
    )
    assert parsed == control  # aware datetimes compare as instants
    assert parsed.deadline.utcoffset() == timedelta(hours=8)


@given(deadlines)
def test_time_sync_round_trip(when: datetime) -> None:
    frame = dlt645.broadcast_time_sync_request(when)
    assert dlt645.parse_broadcast_time(frame) == when


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)), st.times())
def test_date_and_time_items_round_trip(day: date, moment: time) -> None:
    moment = moment.replace(microsecond=0)
    date_item = dlt645.DATA_ITEMS[0x04000101]
    time_item = dlt645.DATA_ITEMS[0x04000102]
    meter_date = dlt645.MeterDate(day, day.isoweekday() % 7)
    assert dlt645.decode_item(date_item, dlt645.encode_item(date_item, meter_date)) == meter_date
    assert dlt645.decode_item(time_item, dlt645.encode_item(time_item, moment)) == moment
