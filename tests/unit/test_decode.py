"""The installer's decode tool: ``main(argv)`` prints JSON and returns the exit status."""

from __future__ import annotations

import json
import math
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_agent import decode
from gateway_agent.protocols import cjt188, dlt645, modbus_rtu
from meter_profiles.decode import decode_value
from meter_profiles.schema import ModbusQuantity

READ_REQUEST = "68 61 01 00 00 00 00 68 11 04 33 33 34 33 14 16"
READ_REPLY = "68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16"
READ_ADDRESS = "68 AA AA AA AA AA AA 68 13 00 DF 16"
CJT_READ = "68 10 12 00 00 00 00 00 00 01 03 90 1F 00 3D 16"

REMAINING_AMOUNT_REPLY = "68 61 01 00 00 00 00 68 91 08 33 35 C3 33 89 67 45 33 91 16"
VOLTAGE_A_REPLY = "68 61 01 00 00 00 00 68 91 06 33 34 34 35 34 55 22 16"
STATUS_WORD_3_REPLY = "68 61 01 00 00 00 00 68 91 06 36 38 33 37 83 35 59 16"
ERROR_NO_SUCH_DATA = "68 61 01 00 00 00 00 68 D1 01 35 39 16"
REMOTE_CONTROL_OK = "68 61 01 00 00 00 00 68 9C 00 CE 16"
TRIP_REQUEST = "68 61 01 00 00 00 00 68 1C 10 35 89 67 45 34 33 33 33 4D 33 33 33 45 34 39 57 84 16"
TIME_SYNC = "68 99 99 99 99 99 99 68 08 06 33 33 45 34 39 57 E3 16"
READ_1997 = "68 61 01 00 00 00 00 68 01 02 43 C3 3B 16"
REPLY_1997 = "68 61 01 00 00 00 00 68 81 06 43 C3 AB 89 67 45 9F 16"
CJT_METERING_REPLY = (
    "68 10 78 56 34 12 00 00 00 81 16 90 1F 02 45 23 01 00 2C 00 00 01 00 2C "
    "45 30 12 01 06 24 20 01 00 69 16"
)
CJT_VALVE_CLOSE = "68 10 78 56 34 12 00 00 00 04 04 A0 17 01 99 E5 16"
CJT_VALVE_REPLY = "68 10 78 56 34 12 00 00 00 84 05 A0 17 01 01 00 CE 16"
CJT_ERROR_REPLY = "68 10 78 56 34 12 00 00 00 C1 03 02 03 00 55 16"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object], str]:
    code = decode.main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out), err


# --------------------------------------------------------------------------------------------
# DL/T 645
# --------------------------------------------------------------------------------------------


def test_worked_read_request(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, READ_REQUEST)
    assert code == 0
    assert err == ""
    assert out["protocol"] == "dlt645-2007"
    assert out["address"] == "000000000161"
    assert out["direction"] == "request"
    assert out["control"] == "11"
    assert out["control_name"] == "read_data"
    assert out["data_identifier"] == "00010000"
    assert out["data_identifier_name"] == "forward_active_energy_total"
    assert "values" not in out


def test_worked_read_reply(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, READ_REPLY)
    assert code == 0
    assert out["direction"] == "reply"
    assert out["control"] == "91"
    assert out["values"] == {"forward_active_energy_total": {"value": "0.26", "unit": "kWh"}}
    assert out["data"] == "00 00 01 00 26 00 00 00"
    assert out["is_error"] is False


def test_worked_read_address(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, READ_ADDRESS)
    assert code == 0
    assert out["address"] == "AAAAAAAAAAAA"
    assert out["control_name"] == "read_address"
    assert out["length"] == 0


def test_remaining_amount_and_voltage(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, REMAINING_AMOUNT_REPLY)
    assert out["data_identifier"] == "00900200"
    assert out["values"] == {"remaining_amount": {"value": "1234.56", "unit": "yuan"}}
    _, out, _ = run(capsys, VOLTAGE_A_REPLY)
    assert out["values"] == {"voltage_a": {"value": "220.1", "unit": "V"}}


def test_status_word_3(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, STATUS_WORD_3_REPLY)
    entry = out["values"]["running_status_word_3"]  # type: ignore[index]
    assert entry == {
        "value": "0250",
        "unit": "",
        "relay": "off",
        "relay_command": "off",
        "pre_trip_alarm": False,
        "meter_type": "money_prepaid",
    }


def test_error_reply_bits(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, ERROR_NO_SUCH_DATA)
    assert code == 0
    assert out["is_error"] is True
    assert out["control"] == "D1"
    assert out["control_name"] == "read_data"
    assert out["error_byte"] == "02"
    assert out["errors"] == ["no_such_data"]


def test_remote_control_request(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, TRIP_REQUEST)
    assert out["control_name"] == "remote_control"
    assert out["command"] == "trip"
    assert out["command_code"] == "1A"
    assert out["operator_code"] == "00000001"
    assert out["password_level"] == "02"
    assert out["password"] == "123456"
    assert out["deadline"] == "2024-06-01T12:00:00+08:00"


def test_remote_control_success_reply(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, REMOTE_CONTROL_OK)
    assert out["control"] == "9C"
    assert out["control_name"] == "remote_control"
    assert out["direction"] == "reply"
    assert out["result"] == "ok"


def test_broadcast_time_sync(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, TIME_SYNC)
    assert out["broadcast"] is True
    assert out["control_name"] == "broadcast_time"
    assert out["datetime"] == "2024-06-01T12:00:00+08:00"


def test_dlt645_1997_is_detected(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, READ_1997)
    assert out["protocol"] == "dlt645-1997"
    assert out["data_identifier"] == "9010"
    assert out["data_identifier_name"] == "forward_active_energy_total"
    _, out, _ = run(capsys, REPLY_1997)
    assert out["protocol"] == "dlt645-1997"
    assert out["values"] == {"forward_active_energy_total": {"value": "123456.78", "unit": "kWh"}}


def test_unknown_di_shows_raw_value(capsys: pytest.CaptureFixture[str]) -> None:
    # 91 reply for DI 04 00 0B 01 (not in the table) carrying 01 02
    raw = bytes.fromhex("68 61 01 00 00 00 00 68 91 06 34 3E 33 37 34 35".replace(" ", ""))
    wire = raw + bytes([sum(raw) & 0xFF, 0x16])
    _, out, _ = run(capsys, wire.hex())
    assert out["data_identifier"] == "04000B01"
    assert out["data_identifier_name"] == "unknown"
    assert out["value_hex"] == "01 02"


def test_unverified_item_is_flagged(capsys: pytest.CaptureFixture[str]) -> None:
    frame = dlt645.read_data_reply("000000000161", 0x03330201, bytes.fromhex("12 00"))
    _, out, _ = run(capsys, dlt645.encode_frame(frame).hex())
    assert out["values"] == {"purchase_count": {"value": "12", "unit": "", "verified": False}}


def test_read_request_with_extra_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    frame = dlt645.Frame("000000000161", 0x11, bytes.fromhex("00 00 01 00 05"))
    _, out, _ = run(capsys, dlt645.encode_frame(frame).hex())
    assert out["data_identifier"] == "00010000"
    assert out["extra"] == "05"


def test_garbage_wakeup_and_trailing_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "00 11 FE FE FE FE " + READ_REPLY + " 68 61")
    assert code == 0
    assert out["garbage_skipped"] == "00 11"
    assert out["wakeup"] is True
    assert out["trailing"] == "68 61"


def test_hex_spellings_and_joined_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    _, spaced, _ = run(capsys, READ_REQUEST)
    _, compact, _ = run(capsys, READ_REQUEST.replace(" ", "").lower())
    _, split, _ = run(capsys, "6861010000", "0000681104", "33333433", "1416")
    _, prefixed, _ = run(capsys, ",".join("0x" + b for b in READ_REQUEST.split()))
    assert spaced == compact == split == prefixed


# --------------------------------------------------------------------------------------------
# CJ/T 188
# --------------------------------------------------------------------------------------------


def test_cjt188_worked_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, CJT_READ)
    assert code == 0
    assert out["protocol"] == "cjt188"
    assert out["meter_type"] == "10"
    assert out["meter_type_name"] == "cold_water"
    assert out["address"] == "00000000000012"
    assert out["direction"] == "request"
    assert out["control_name"] == "read_data"
    assert out["data_identifier"] == "901F"
    assert out["data_identifier_name"] == "metering_data"
    assert out["ser"] == 0


def test_cjt188_metering_reply(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, CJT_METERING_REPLY)
    assert out["direction"] == "reply"
    assert out["values"] == {
        "current_cumulative_flow": {"value": "123.45", "unit": "m³", "unit_code": "2C"},
        "settlement_day_flow": {"value": "100.00", "unit": "m³", "unit_code": "2C"},
    }
    assert out["real_time"] == "2024-06-01T12:30:45+08:00"
    assert out["status"] == {"raw": "0001", "valve": "closed", "battery_low": False}


def test_cjt188_flow_decimals_option(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--flow-decimals", "3", CJT_METERING_REPLY)
    assert out["values"]["current_cumulative_flow"]["value"] == "12.345"  # type: ignore[index]


def test_cjt188_valve_frames(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, CJT_VALVE_CLOSE)
    assert out["data_identifier_name"] == "valve_control"
    assert out["valve_command"] == "close"
    _, out, _ = run(capsys, CJT_VALVE_REPLY)
    assert out["status"] == {"raw": "0001", "valve": "closed", "battery_low": False}


def test_cjt188_error_reply(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, CJT_ERROR_REPLY)
    assert out["is_error"] is True
    assert out["control"] == "C1"
    assert out["ser"] == 2
    assert out["status"] == {"raw": "0003", "valve": "abnormal", "battery_low": False}


def test_cjt188_low_first_di_is_recognised(capsys: pytest.CaptureFixture[str]) -> None:
    frame = cjt188.read_data_request(0x10, "00000012345678", di_low_first=True)
    _, out, _ = run(capsys, cjt188.encode_frame(frame).hex())
    assert out["data_identifier"] == "901F"
    assert out["di_byte_order"] == "low_first"


# --------------------------------------------------------------------------------------------
# Modbus RTU
# --------------------------------------------------------------------------------------------


def test_modbus_request(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "01 03 00 00 00 0A C5 CD")
    assert code == 0
    assert out == {
        "protocol": "modbus-rtu",
        "address": 1,
        "direction": "request",
        "function": "03",
        "function_name": "read_holding_registers",
        "is_exception": False,
        "crc": "C5 CD",
        "start_address": 0,
        "quantity": 10,
    }


def test_modbus_reply_and_exception(capsys: pytest.CaptureFixture[str]) -> None:
    reply = modbus_rtu.encode_frame(1, 3, bytes.fromhex("04 00 0A 27 10"))
    _, out, _ = run(capsys, "--protocol", "modbus-rtu", reply.hex())
    assert out["direction"] == "reply"
    assert out["registers"] == [10, 10000]
    assert out["registers_hex"] == ["000A", "2710"]
    _, out, _ = run(capsys, modbus_rtu.encode_frame(1, 0x83, b"\x02").hex())
    assert out["is_exception"] is True
    assert out["exception_code"] == "02"
    assert out["exception_name"] == "illegal_data_address"


# --------------------------------------------------------------------------------------------
# Broken input: exit 2 with {"error": ...}
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        ([READ_REPLY[:-5] + "8B 16"], "checksum"),
        ([READ_REPLY[:-2] + "17"], "end byte"),
        ([READ_REPLY[:-9]], "truncated"),
        ([CJT_READ[:-5] + "3E 16"], "checksum"),
        (["01 03 00 00 00 0A C5 CE"], "CRC"),
        (["12 34 56"], "no DL/T 645 or CJ/T 188"),
        (["68 6X"], "not hex"),
        (["68 6"], "odd number"),
        (["--protocol", "cjt188", READ_REQUEST], "truncated"),
        (["--protocol", "dlt645-2007", "01 03 00 00 00 0A C5 CD"], "no 68"),
        ([TRIP_REQUEST.replace("4D 33 33 33 45", "82 33 33 33 45")[:-5] + "B9 16"], "N1=4F"),
    ],
)
def test_broken_frames_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], reason: str
) -> None:
    code = decode.main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    payload = json.loads(out)
    assert list(payload) == ["error"]
    assert reason in payload["error"]
    assert reason in err


def test_unknown_protocol_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        decode.main(["--protocol", "iec62056", READ_REQUEST])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_decode_hex_is_json_ready_without_floats() -> None:
    result = decode.decode_hex(CJT_METERING_REPLY)

    def walk(value: object) -> None:
        assert not isinstance(value, float | Decimal)
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        if isinstance(value, list):
            for item in value:
                walk(item)

    walk(result)
    assert json.loads(json.dumps(result)) == result
    with pytest.raises(ValueError, match="unknown protocol"):
        decode.decode_hex(CJT_READ, "mbus")


# -- through a meter profile (--profile) ---------------------------------------------------------


def _cdab_profile(directory: Path) -> Path:
    """The shipped water meter map with its float32 in CDAB word order (low word first)."""
    shipped = (
        Path(__file__).resolve().parents[2] / "meter_profiles/profiles/modbus-valve-water.yaml"
    )
    text = shipped.read_text(encoding="utf-8")
    text = text.replace("model: modbus-valve-water", "model: water-cdab")
    text = text.replace("word_order: big", "word_order: little")
    (directory / "water-cdab.yaml").write_text(text, encoding="utf-8")
    return directory


def _rtu(*payload: int, function: int = 3) -> str:
    return modbus_rtu.encode_frame(1, function, bytes(payload)).hex(" ")


def test_a_float32_in_cdab_order_shows_as_its_number(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # 123.456 is 42 F6 E9 79 as a big-endian float32; CDAB sends the low word first
    reply = _rtu(4, 0xE9, 0x79, 0x42, 0xF6)
    profiles = str(_cdab_profile(tmp_path))
    args = ("--profile", "water-cdab", "--profiles-dir", profiles, "--start", "0x0001", reply)
    code, report, _ = run(capsys, *args)
    assert code == 0
    assert report["registers_hex"] == ["E979", "42F6"]
    (volume,) = report["quantities"]  # type: ignore[misc]
    assert volume == {
        "quantity": "total_volume",
        "unit": "m³",
        "verified": False,
        "register": "0x0001",
        "type": "float32",
        "word_order": "little",
        "value": "123.456",
    }
    # the same words given bare
    bare_args = ("--profile", "water-cdab", "--profiles-dir", profiles, "--registers")
    code, bare, _ = run(capsys, *bare_args, "--start", "1", "E979 42F6")
    assert code == 0 and bare["quantities"] == report["quantities"]
    # read as the shipped big-endian profile, the same words are another number
    code, big, _ = run(capsys, "--profile", "modbus-valve-water", "--start", "1", reply)
    assert big["quantities"][0]["value"] != "123.456"  # type: ignore[index]


def test_registers_through_a_profile_name_quantities_and_unlisted_registers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = [0] * 17
    words[0:2] = [0x0001, 0x86A0]  # total_energy uint32 100000 × 0.01 = 1000.00 kWh
    words[0x0B] = 2205  # voltage 220.5 V
    words[0x0D] = 0xFFF6  # power int16 −10 × 0.001 kW
    hex_words = " ".join(f"{w:04X}" for w in words)
    code, report, _ = run(
        capsys, "--profile", "acrel-ddsy1352-modbus", "--registers", "--start", "0", hex_words
    )
    assert code == 0
    values = {q["quantity"]: q["value"] for q in report["quantities"]}  # type: ignore[attr-defined]
    assert values["total_energy"] == "1000.00"
    assert values["voltage"] == "220.5"
    assert values["power"] == "-0.010"
    assert report["unlisted_registers"] == ["0x000A", "0x000E"]


def test_a_modbus_request_lists_what_it_reads_and_a_write_names_its_control(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report, _ = run(capsys, "--profile", "acrel-ddsy1352-modbus", _rtu(0x02, 0x00, 0, 5))
    assert code == 0
    assert [q["quantity"] for q in report["quantities"]] == [  # type: ignore[attr-defined]
        "model_id",
        "remaining_amount",
        "purchase_count",
        "relay_state",
    ]
    trip = _rtu(0x02, 0x10, 0x00, 0x01, function=6)
    code, report, _ = run(capsys, "--profile", "acrel-ddsy1352-modbus", trip)
    assert report["controls"] == [{"control": "trip", "channel": 1}]


def test_a_read_reply_without_its_start_register_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report, _ = run(capsys, "--profile", "modbus-valve-water", _rtu(2, 0, 1))
    assert code == 0 and "--start" in str(report["profile_note"])
    assert "quantities" not in report


def _dlt_reply(di: int, *values: str) -> str:
    data = b"".join(dlt645.encode_bcd_decimal(Decimal(v), 4, 2) for v in values)
    return dlt645.encode_frame(dlt645.read_data_reply("000000000161", di, data)).hex(" ")


def test_block_identifiers_are_named_and_split_into_their_members(
    capsys: pytest.CaptureFixture[str],
) -> None:
    request = dlt645.encode_frame(dlt645.read_data_request("000000000161", 0x0001FF00)).hex()
    code, report, _ = run(capsys, request)
    assert code == 0
    assert report["data_identifier_name"] == "forward_active_energy_block"
    assert report["block"] is True
    code, report, _ = run(capsys, _dlt_reply(0x0001FF00, "12.34", "1", "2", "3", "6.34"))
    assert report["block_members"] == ["00010000", "00010100", "00010200", "00010300", "00010400"]
    values = report["values"]
    assert values["forward_active_energy_total"] == {"value": "12.34", "unit": "kWh"}  # type: ignore[index]
    assert values["forward_active_energy_tariff_4"]["value"] == "6.34"  # type: ignore[index]


def test_dlt645_values_through_a_profile(capsys: pytest.CaptureFixture[str]) -> None:
    block = _dlt_reply(0x0001FF00, "12.34", "1", "2", "3", "6.34")
    code, report, _ = run(capsys, "--profile", "dlt645-2007-prepaid", block)
    assert code == 0
    got = {q["quantity"]: q["value"] for q in report["quantities"]}  # type: ignore[attr-defined]
    assert got == {
        "total_energy": "12.34",
        "tou_spike": "1.00",
        "tou_peak": "2.00",
        "tou_flat": "3.00",
        "tou_valley": "6.34",
    }
    # a single identifier the profile's block stands for is its element
    code, report, _ = run(capsys, "--profile", "dlt645-2007-prepaid", _dlt_reply(0x00010200, "2.5"))
    assert [(q["quantity"], q["value"]) for q in report["quantities"]] == [("tou_peak", "2.50")]  # type: ignore[attr-defined]
    # the request names what it asks for
    request = dlt645.encode_frame(dlt645.read_data_request("000000000161", 0x00900200)).hex()
    code, report, _ = run(capsys, "--profile", "acrel-ddsy1352-dlt645", request)
    assert report["quantities"] == [{"quantity": "remaining_amount"}]
    # a profile of another protocol is not applied
    code, report, _ = run(capsys, "--profile", "acrel-ddsy1352-modbus", request)
    assert code == 0 and "not applied" in str(report["profile_note"])


def test_profile_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, report, err = run(capsys, "--profile", "no-such-meter", READ_REPLY)
    assert code == 2 and "unknown profile 'no-such-meter'" in str(report["error"])
    assert "acrel-ddsy1352-modbus" in err, "the known profiles are listed"
    code, report, _ = run(capsys, "--profile", "acrel-ddsy1352-modbus", "--registers", "0001")
    assert code == 2 and "--start" in str(report["error"])
    code, report, _ = run(
        capsys, "--profile", "acrel-ddsy1352-modbus", "--registers", "--start", "0", "000"
    )
    assert code == 2


@given(st.binary(min_size=4, max_size=4))
def test_float32_registers_decode_to_the_shortest_decimal_that_reads_back(raw: bytes) -> None:
    value = struct.unpack(">f", raw)[0]
    if not math.isfinite(value):
        return
    q = ModbusQuantity(address=0, type="float32")
    words = [int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big")]
    decoded = decode_value(q, words)
    assert struct.pack(">f", float(decoded)) == raw
    assert len(decoded.as_tuple().digits) <= 9
