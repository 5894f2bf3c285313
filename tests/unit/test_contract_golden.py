"""The MQTT wire format, byte for byte: every contract payload encodes to the bytes stored
in ``fixtures/contract`` (written by the pydantic contract this one replaced) and decodes
from them to equal values. A failing test here is a wire-format change: gateways in the
field and the cloud would disagree.

``CONTRACT_GOLDEN_WRITE=1`` rewrites the fixtures (only for a deliberate, versioned change).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from contract.mqtt import (
    Ack,
    AckStatus,
    BusStats,
    Command,
    CommandAction,
    ConfigPush,
    EventKind,
    GatewayEvent,
    GatewayState,
    Reading,
    Receipt,
    ReceiptStatus,
    Supply,
    TelemetryBatch,
    dump,
)

FIXTURES = Path(__file__).parent / "fixtures" / "contract"
CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 21, 8, 30, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 21, 16, 30, 5, 123456, tzinfo=CST)
T2 = datetime(2026, 11, 21, 8, 30, 5, 500000, tzinfo=UTC)
CMD_ID = UUID("0b7f6c1e-3d2a-4f5b-9c8d-7e6f5a4b3c2d")

FULL = Reading(
    device="m-0001",
    channel=2,
    measured_at=T1,
    total=Decimal("12345.67"),
    tou=(Decimal("1.00"), Decimal("2.5"), Decimal("0"), Decimal("12342.17")),
    voltage=Decimal("229.8"),
    current=Decimal("0.001"),
    power=Decimal("-0.120"),
    supply=Supply.ON,
    meter_balance=Decimal("1E+2"),
    purchase_count=17,
)
BARE = Reading(device="m.0002_x", measured_at=T0)
EDGE = Reading(
    device="w1",
    measured_at=T2,
    total=Decimal("0E-8"),
    meter_balance=Decimal("-0.00"),
    supply=Supply.OFF,
    purchase_count=0,
)

CASES: dict[str, Any] = {
    "telemetry_batch": TelemetryBatch(
        gateway="gw-1", boot_id="3f2a9c", seq=42, sent_at=T2, readings=(FULL, BARE, EDGE)
    ),
    "telemetry_batch_empty": TelemetryBatch(
        gateway="gw_2.b", boot_id="b", seq=0, sent_at=T1, readings=()
    ),
    "command": Command(
        id=CMD_ID,
        device="m-0001",
        channel=3,
        action=CommandAction.RECHARGE,
        params={"amount": "50.00", "count": "3"},
        issued_at=T0,
        deadline=T1,
    ),
    "command_defaults": Command(
        id=CMD_ID, device="m-0001", action=CommandAction.TRIP, issued_at=T2, deadline=T2
    ),
    "ack": Ack(
        id=CMD_ID,
        gateway="gw-1",
        status=AckStatus.OK,
        detail="继电器已断开",
        meter_answer={"relay": "open", "raw": "0x0001"},
        reported_supply=Supply.OFF,
        device="m-0001",
        channel=1,
        at=T1,
        duplicate=True,
    ),
    "ack_invalid": Ack(
        id=None, gateway="gw-1", status=AckStatus.INVALID, detail='bad "json"\n', at=T0
    ),
    "receipt": Receipt(gateway="gw-1", boot_id="3f2a9c", seq=42, stored=498, duplicates=2),
    "receipt_rejected": Receipt(
        gateway="gw-1",
        boot_id="3f2a9c",
        seq=7,
        status=ReceiptStatus.REJECTED,
        quarantined=3,
        detail="readings[0].device: unknown",
    ),
    "gateway_state_online": GatewayState(gateway="gw-1", online=True, boot_id="3f2a9c", at=T2),
    "gateway_state_offline": GatewayState(gateway="gw-1", online=False),
    "gateway_event_heartbeat": GatewayEvent(
        gateway="gw-1",
        boot_id="3f2a9c",
        kind=EventKind.HEARTBEAT,
        at=T1,
        config_version=3,
        queue_depth=1_000_000,
        dropped_total=0,
        buses={
            "bus-1": BusStats(transactions=1200, timeouts=3, errors=1, utilisation=0.996),
            "bus-2": BusStats(
                transactions=0,
                timeouts=0,
                errors=0,
                utilisation=0.0,
                devices_backing_off=2,
                refused=4,
                refused_items=2,
            ),
            "bus-3": BusStats(transactions=5, timeouts=0, errors=0, utilisation=1.0),
            "bus-4": BusStats(transactions=5, timeouts=0, errors=0, utilisation=0.1234567891),
            "bus-5": BusStats(transactions=5, timeouts=0, errors=0, utilisation=1e-05),
        },
    ),
    "gateway_event_device": GatewayEvent(
        gateway="gw-1",
        boot_id="b",
        kind=EventKind.DEVICE_OFFLINE,
        at=T0,
        detail="unit 3: timeout",
        device="m-0003",
    ),
    "config_push": ConfigPush(
        id=CMD_ID,
        version=4,
        config={
            "poll_interval_s": 2.5,
            "publish_batch": 500,
            "heartbeat_s": 60,
            "buses": [
                {
                    "name": "bus-1",
                    "host": "10.0.0.7",
                    "port": 502,
                    "timeout_s": 0.5,
                    "silence_s": None,
                    "devices": [{"key": "m-0001", "profile": "acrel-ddsy1352-modbus", "unit": 1}],
                }
            ],
            "profiles": [],
            "说明": "三号楼",
            "flag": True,
        },
        issued_at=T2,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_payload_encodes_to_the_golden_bytes_and_decodes_back(name: str) -> None:
    payload = CASES[name]
    path = FIXTURES / f"{name}.json"
    if os.environ.get("CONTRACT_GOLDEN_WRITE") == "1":
        path.write_bytes(dump(payload))
    golden = path.read_bytes()
    assert dump(payload) == golden
    assert payload.model_dump_json().encode() == golden
    assert type(payload).model_validate_json(golden) == payload


def test_a_reading_alone_encodes_as_in_a_batch() -> None:
    """The agent stores readings one by one in its outbox and writes the batch envelope
    itself: each reading's bytes must be those it has inside a batch."""
    golden = (FIXTURES / "telemetry_batch.json").read_bytes()
    for r in (FULL, BARE, EDGE):
        assert r.model_dump_json().encode() in golden
