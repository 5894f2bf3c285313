from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.mqtt import (
    BrokerAddress,
    Direction,
    Reading,
    TelemetryBatch,
    Topics,
    UpKind,
    envelope,
)
from meter_profiles.decode import decode_value, encode_value, plan_blocks
from meter_profiles.loader import ProfileError, load_file, load_profiles
from meter_profiles.schema import ModbusQuantity as Quantity


def test_topics_round_trip_and_refuse_foreign_topics() -> None:
    t = Topics("prepay")
    topic = t.up("gw-1", UpKind.TELEMETRY)
    assert topic == "prepay/gw/gw-1/up/telemetry"
    assert t.parse(topic) == ("gw-1", Direction.UP, "telemetry")
    assert t.parse("other/gw/gw-1/up/telemetry") is None
    assert t.all_up("ingest") == "$share/ingest/prepay/gw/+/up/+"


def test_decimals_travel_as_strings_and_versions_are_read_first() -> None:
    b = TelemetryBatch(
        gateway="g",
        boot_id="b",
        seq=1,
        sent_at=datetime.now(UTC),
        readings=(Reading(device="m1", measured_at=datetime.now(UTC), total=Decimal("12.34")),),
    )
    doc = json.loads(b.model_dump_json())
    assert doc["readings"][0]["total"] == "12.34" and doc["v"] == 1
    assert envelope(b"not json") is None
    assert envelope(b'{"v": true}').version is None  # type: ignore[union-attr]
    assert envelope(b'{"v": 2}').version == 2  # type: ignore[union-attr]


def test_broker_url_parsing() -> None:
    a = BrokerAddress.parse("mqtts://gw%401:s3cret@broker.example:8883")
    assert (a.host, a.port, a.username, a.password, a.tls) == (
        "broker.example",
        8883,
        "gw@1",
        "s3cret",
        True,
    )
    with pytest.raises(ValueError):
        BrokerAddress.parse("http://x")


def test_shipped_ddsy1352_reads_in_two_blocks() -> None:
    p = load_profiles()["acrel-ddsy1352-modbus"]
    blocks = plan_blocks(p)
    assert [(b.start, b.count) for b in blocks] == [(0x0000, 17), (0x0200, 5)]
    assert not p.quantities["relay_state"].verified


@given(st.decimals(min_value=0, max_value=Decimal("42949672.95"), places=2))
def test_uint32_register_round_trip(value: Decimal) -> None:
    q = Quantity.model_validate({"register": 0, "type": "uint32", "scale": "0.01"})
    assert decode_value(q, encode_value(q, value)) == value
    little = q.model_copy(update={"word_order": "little"})
    assert decode_value(little, encode_value(little, value)) == value


def test_malformed_profile_names_file_field_and_reason(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "schema_version: 1\nmodel: bad\nvendor: x\nprotocol: modbus\nutility: electricity\n"
        "quantities:\n  a: {register: 0, type: uint32}\n  b: {register: 1, type: uint16}\n"
    )
    with pytest.raises(ProfileError, match=r"bad\.yaml.*overlaps 'a' at register 0x0001"):
        load_file(f)
    f.write_text(
        "schema_version: 1\nmodel: bad\nvendor: x\nprotocol: modbus\nutility: gas\nquantities: {}\n"
    )
    with pytest.raises(ProfileError, match=r"utility"):
        load_file(f)


def test_installer_profile_overrides_a_shipped_one(tmp_path: Path) -> None:
    shipped = (
        Path(__file__).resolve().parents[2] / "meter_profiles/profiles/acrel-ddsy1352-modbus.yaml"
    )
    text = shipped.read_text().replace("0x0210", "0x0300")
    (tmp_path / "mine.yaml").write_text(text)
    assert load_profiles(tmp_path)["acrel-ddsy1352-modbus"].controls["trip"].address == 0x0300
