"""The pure pieces of partial reads: DL/T 645 block identifiers and their members, the
Modbus block split, and the refusal memory (log once, count, retry later)."""

from __future__ import annotations

import logging

import pytest

from gateway_agent.drivers.refusals import Refusals
from gateway_agent.protocols import dlt645 as dlt
from meter_profiles.decode import plan_blocks, split_block
from meter_profiles.loader import load_profiles
from meter_profiles.schema import ModbusProfile


@pytest.mark.parametrize(
    "block,element,member",
    [
        (0x0001FF00, 0, 0x00010000),  # forward active energy: total first
        (0x0001FF00, 4, 0x00010400),  # … tariff 4 (谷)
        (0x0000FF00, 1, 0x00000100),
        (0x0201FF00, 0, 0x02010100),  # voltage: no total, phase A first
        (0x0202FF00, 2, 0x02020300),  # current phase C
        (0x0203FF00, 0, 0x02030000),  # active power: total first
        (0x0206FF00, 1, 0x02060100),
        (0x000100FF, 1, 0x00010001),  # last settlement day
    ],
)
def test_block_members(block: int, element: int, member: int) -> None:
    assert dlt.is_block_di(block)
    assert dlt.block_member(block, element) == member
    assert not dlt.is_block_di(member)


@pytest.mark.parametrize("di", [0x00010000, 0x02800002, 0x00FFFF00, 0xFFFFFFFF])
def test_not_a_block_or_ambiguous(di: int) -> None:
    assert not dlt.is_block_di(di)
    assert dlt.block_member(di, 0) is None


def test_block_member_out_of_range() -> None:
    assert dlt.block_member(0x0001FF00, 0xFE) == 0x0001FE00
    assert dlt.block_member(0x0001FF00, 0xFF) is None
    assert dlt.block_member(0x0001FF00, -1) is None


def test_block_names() -> None:
    assert dlt.block_name(0x0001FF00) == "forward_active_energy_block"
    assert dlt.block_name(0x0201FF00) == "voltage_block"
    assert dlt.block_name(0x0202FF00) == "current_block"
    assert dlt.block_name(0x00010000) is None  # a single identifier
    assert dlt.block_name(0x0999FF00) is None  # members unknown


def _modbus(name: str) -> ModbusProfile:
    profile = load_profiles()[name]
    assert isinstance(profile, ModbusProfile)
    return profile


def test_split_block_follows_the_listed_registers() -> None:
    profile = _modbus("acrel-ddsy1352-modbus")  # 0x0000–0x0009, 0x000B–0x000D, 0x000F–0x0010
    metering, prepaid = plan_blocks(profile)
    assert (metering.start, metering.count) == (0x0000, 0x11)
    runs = split_block(profile, metering)
    assert [(r.start, r.count) for r in runs] == [(0x0000, 10), (0x000B, 3), (0x000F, 2)]
    assert [m for r in runs for m in r.members] == list(metering.members)
    # a block without holes splits into one read per quantity, a single quantity not at all
    singles = split_block(profile, prepaid)
    assert [(r.start, r.count) for r in singles] == [(0x200, 1), (0x201, 2), (0x203, 1), (0x204, 1)]
    assert split_block(profile, singles[1]) == []


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_refusals_skip_until_the_retry_and_log_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    r = Refusals(retry_s=3600, clock=clock)
    caplog.set_level(logging.WARNING)
    assert not r.skip("m1", 0x00010100)
    r.refused("m1", 0x00010100, "no data 00010100")
    assert r.skip("m1", 0x00010100) and not r.skip("m2", 0x00010100)
    assert r.skipping() == 1
    clock.t = 3600.0
    assert not r.skip("m1", 0x00010100), "due again after the retry interval"
    assert r.skipping() == 0
    r.refused("m1", 0x00010100, "no data 00010100")  # refused again: counted, not logged
    assert r.take() == 2 and r.take() == 0
    assert len(caplog.records) == 1 and "m1" in caplog.records[0].getMessage()
    r.answered("m1", 0x00010100)  # the meter answers it after all (firmware update)
    assert not r.skip("m1", 0x00010100)
    r.refused("m1", 0x00010100, "no data 00010100")
    assert len(caplog.records) == 2, "a refusal after an answer is news again"
    r.refused("m1", "split", "split", remember=False)
    assert not r.skip("m1", "split") and r.take() == 2
    r.forget("m1")
    assert r.skipping() == 0 and not r.skip("m1", 0x00010100)
