"""Shipped profiles load; malformed profile files are refused naming the file, the field and
the reason; an installer's directory overrides a shipped model and adds new ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meter_profiles.decode import plan_blocks
from meter_profiles.loader import SHIPPED, ProfileError, load_file, load_profiles
from meter_profiles.schema import ModbusProfile

SHIPPED_FILES = sorted(SHIPPED.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.name)
def test_every_shipped_profile_loads_and_is_named_after_its_file(path: Path) -> None:
    profile = load_file(path)
    assert profile.model == path.stem


@pytest.mark.parametrize(
    "model,requests",
    [
        ("acrel-ddsy1352-modbus", 2),
        ("acrel-dtsy1352-modbus", 2),
        ("acrel-adf300l-4s", 1),
        ("acrel-adf300l-12", 2),
        ("acrel-adf300l-24", 2),
        ("acrel-adf300l-36", 3),
    ],
)
def test_modbus_profiles_read_in_few_blocks_within_max_block(model: str, requests: int) -> None:
    profile = load_profiles()[model]
    assert isinstance(profile, ModbusProfile)
    blocks = plan_blocks(profile)
    assert len(blocks) == requests
    assert all(b.count <= profile.max_block for b in blocks)
    members = [m for b in blocks for m in b.members]
    assert len(members) == len(set(members))  # nothing read twice
    assert sum(1 for name, _ in members if name in profile.shared) == len(profile.shared)


def test_unverified_acrel_maps_say_so() -> None:
    profiles = load_profiles()
    for model in ("acrel-dtsy1352-modbus", "acrel-adf300l-12", "acrel-adf300l-36"):
        p = profiles[model]
        assert isinstance(p, ModbusProfile)
        assert not p.verified
        assert all(not q.verified for q in p.quantities.values())
        assert all(not c.verified for c in p.controls.values())


def test_prepaid_capable_acrel_meters_have_a_recharge_mapping() -> None:
    for model in ("acrel-ddsy1352-modbus", "acrel-dtsy1352-modbus"):
        p = load_profiles()[model]
        assert isinstance(p, ModbusProfile)
        assert p.recharge is not None and p.recharge.address == 0x0220


BASE = {
    "schema_version": 1,
    "model": "test-meter",
    "vendor": "Test",
    "protocol": "modbus",
    "utility": "electricity",
    "quantities": {
        "total_energy": {"register": 0, "type": "uint32", "scale": "0.01"},
        "voltage": {"register": 2, "type": "uint16", "scale": "0.1"},
    },
}
DLT = {
    "schema_version": 1,
    "model": "test-dlt",
    "vendor": "Test",
    "protocol": "dlt645",
    "utility": "electricity",
    "quantities": {"total_energy": {"di": 0x00010000, "format": "XXXXXX.XX"}},
}


def _with(base: dict[str, object], path: list[str], value: object) -> dict[str, object]:
    doc = yaml.safe_load(yaml.safe_dump(base))
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


_DELETE = object()

MALFORMED = [
    # (label, document, field named in the error, reason words)
    (
        "bad type",
        _with(BASE, ["quantities", "voltage", "type"], "uint24"),
        "voltage.type",
        "uint16",
    ),
    (  # the type fixes the register count; a count of its own is refused
        "bad count",
        _with(BASE, ["quantities", "voltage", "count"], 2),
        "voltage.count",
        "not permitted",
    ),
    (
        "overlapping registers",
        _with(BASE, ["quantities", "current"], {"register": 1, "type": "uint16"}),
        "quantity 'total_energy'",
        "overlaps 'current' at register 0x0001",
    ),
    (
        "channel overlap from a too-small stride",
        {**_with(BASE, ["channels"], 2), "channel_stride": 2},
        "(channel 2)",
        "overlaps",
    ),
    (
        "bad scale",
        _with(BASE, ["quantities", "voltage", "scale"], "-0.1"),
        "voltage.scale",
        "scale",
    ),
    ("missing field", _with(BASE, ["vendor"], _DELETE), "vendor", "required"),
    ("unknown protocol", _with(BASE, ["protocol"], "bacnet"), "protocol", "modbus"),
    ("wrong schema_version", _with(BASE, ["schema_version"], 2), "schema_version", "1"),
    (
        "bad DL/T 645 format",
        _with(DLT, ["quantities", "total_energy", "format"], "XXXXX.XX"),
        "total_energy",
        "odd number of digits",
    ),
    (
        "unknown key",
        _with(BASE, ["quantities", "voltage", "regster"], 3),
        "voltage.regster",
        "not permitted",
    ),
]


@pytest.mark.parametrize(
    "doc,field,reason", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_profile_is_rejected_with_file_field_and_reason(
    tmp_path: Path, doc: dict[str, object], field: str, reason: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ProfileError) as err:
        load_file(path)
    message = str(err.value)
    assert str(path) in message
    assert field in message
    assert reason in message


def test_a_profile_file_that_is_not_yaml_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("model: [unclosed", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"x\.yaml: not valid YAML"):
        load_file(path)


def test_a_malformed_installer_file_stops_loading(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump(_with(BASE, ["schema_version"], 9)), encoding="utf-8"
    )
    with pytest.raises(ProfileError, match=r"bad\.yaml"):
        load_profiles(tmp_path)


def test_installer_directory_overrides_a_shipped_model_and_adds_a_new_one(tmp_path: Path) -> None:
    shipped = yaml.safe_load((SHIPPED / "acrel-adf300l-12.yaml").read_text(encoding="utf-8"))
    shipped["controls"]["trip"]["register"] = 0x0900
    shipped["controls"]["close"]["register"] = 0x0900
    (tmp_path / "my-adf300l.yaml").write_text(yaml.safe_dump(shipped), encoding="utf-8")
    (tmp_path / "test-meter.yaml").write_text(yaml.safe_dump(BASE), encoding="utf-8")
    profiles = load_profiles(tmp_path)
    adf = profiles["acrel-adf300l-12"]
    assert isinstance(adf, ModbusProfile)
    assert adf.controls["trip"].address == 0x0900
    assert adf.control_register("trip", 5) is not None
    assert profiles["test-meter"].vendor == "Test"
    assert load_profiles()["acrel-adf300l-12"].controls["trip"].address == 0x0800  # type: ignore[union-attr]
    assert set(load_profiles()) < set(profiles)
