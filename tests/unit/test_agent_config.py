"""The agent's YAML config: refused naming the file, the field and the reason; a pushed
config merges onto the local one and is refused the same way."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway_agent.config import ConfigError, load_config, merge_pushed

BASE: dict[str, Any] = {
    "gateway": "gw-1",
    "data_dir": "gw-data",
    "buses": [
        {
            "name": "b1",
            "port": 5020,
            "devices": [
                {"key": "m1", "profile": "acrel-ddsy1352-modbus", "unit": 1},
                {"key": "m2", "profile": "acrel-ddsy1352-modbus", "unit": 2},
            ],
        }
    ],
}


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_a_valid_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.data_dir == Path("gw-data")
    assert cfg.buses[0].port == 5020 and cfg.buses[0].timeout_s == 1.0
    assert cfg.poll_interval_s == 15.0 and cfg.tls is None


def _broken(path: list[str | int], value: object) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    "doc,field,reason",
    [
        (_broken(["buses", 0, "devices", 1, "unit"], 300), "buses.0.devices.1.unit", "<= 247"),
        (_broken(["buses", 0, "devices", 1, "unit"], 1), "buses.0", "two devices share unit 1"),
        (_broken(["buses", 0, "transport"], "serial"), "buses.0", "needs a serial: section"),
        (_broken(["buses", 0, "transport"], "rs232"), "buses.0.transport", "'modbus_tcp'"),
        (_broken(["tls"], {"cert_file": "c.pem"}), "tls", "cert_file and key_file go together"),
        (_broken(["pol_interval_s"], 3), "pol_interval_s", "not permitted"),
        (_broken(["buses", 0, "devices", 0, "address"], "0000000001\n"), "address", "regex"),
        (_broken(["publish_batch"], 0), "publish_batch", ">= 1"),
        (_broken(["gateway"], "gw/1"), "gateway", "regex"),
        ({k: v for k, v in BASE.items() if k != "gateway"}, "gateway", "required"),
    ],
)
def test_a_bad_config_names_the_file_the_field_and_the_reason(
    tmp_path: Path, doc: dict[str, Any], field: str, reason: str
) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and field in message and reason in message


def test_a_pushed_config_merges_onto_the_local_one_or_is_refused(tmp_path: Path) -> None:
    local = load_config(_write(tmp_path, BASE))
    merged = merge_pushed(local, 3, {"poll_interval_s": 2, "buses": []})
    assert (merged.poll_interval_s, merged.config_version, merged.buses) == (2, 3, [])
    assert merged.gateway == "gw-1" and merged.data_dir == local.data_dir
    with pytest.raises(ConfigError, match=r"poll_interval_s: .*> 0"):
        merge_pushed(local, 4, {"poll_interval_s": -2})
    with pytest.raises(ConfigError, match="cannot be pushed: gateway"):
        merge_pushed(local, 4, {"gateway": "other"})
