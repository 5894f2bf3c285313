"""`prepay-gateway commission --cloud URL --claim CODE`: exchange an installer's one-time
claim code for this gateway's identity and its own MQTT credentials, and write them into the
agent's config file (created if missing; its buses and settings are kept if present). The
file holds a password: it is written with mode 0600."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml


class CommissionError(Exception):
    pass


def exchange(cloud: str, claim: str, name: str | None, timeout_s: float = 15.0) -> dict[str, Any]:
    url = cloud.rstrip("/") + "/api/v1/gateways/commission"
    if not url.startswith(("http://", "https://")):
        raise CommissionError(f"--cloud must be an http(s) URL, got {cloud!r}")
    body = json.dumps({"claim": claim, "name": name}).encode()
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            doc: dict[str, Any] = json.loads(response.read())
            return doc
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise CommissionError(f"the cloud refused the claim ({exc.code}): {detail}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise CommissionError(f"cannot reach {url}: {exc}") from exc


def write_config(path: Path, ident: dict[str, Any], data_dir: Path | None) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            doc = loaded
    doc.update(
        {
            "gateway": ident["gateway"],
            "mqtt_url": ident["mqtt_url"],
            "mqtt_prefix": ident["mqtt_prefix"],
            "mqtt_username": ident["username"],
            "mqtt_password": ident["password"],
        }
    )
    if data_dir is not None:
        doc["data_dir"] = str(data_dir)
    doc.setdefault("buses", [])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False, allow_unicode=True)
    tmp.replace(path)
    return doc


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="prepay-gateway commission", description=__doc__)
    p.add_argument(
        "--cloud", required=True, help="the cloud's base URL, e.g. https://cloud.example"
    )
    p.add_argument("--claim", required=True, help="the one-time claim code from the console")
    p.add_argument("--config", type=Path, default=Path("/etc/prepay-gateway/config.yaml"))
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--name", default=None, help="a name for this gateway in the console")
    args = p.parse_args(argv)
    try:
        ident = exchange(args.cloud, args.claim, args.name)
        write_config(args.config, ident, args.data_dir)
    except (CommissionError, OSError, yaml.YAMLError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(f"commissioned as {ident['gateway']}; config written to {args.config}\n")
    return 0
