"""Commissioning: one-time expiring claim codes, the gateway's own credential kept as the
broker's hash, revocation, and the installer's `prepay-gateway commission`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import socket
import stat
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
import yaml

from cloud.api.app import create_app
from cloud.db import Database
from cloud.registry.broker_sync import render, write_if_changed
from cloud.registry.commissioning import (
    ClaimRefused,
    broker_password_lines,
    exchange_claim,
    mosquitto_hash,
    normalise_code,
)
from cloud.registry.service import seed_group
from cloud.runtime import Wiring
from cloud.settings import CloudSettings
from gateway_agent.commission import CommissionError, exchange, write_config
from gateway_agent.config import load_config
from tests.conftest import admin_auth, group_spec


@pytest.fixture
async def wiring(db_url: str) -> AsyncIterator[Wiring]:
    w = Wiring.build(
        CloudSettings(database_url=db_url, gateway_broker_url="mqtts://broker.example:8883"),
        db_url,
    )
    yield w
    await w.db.dispose()


@pytest.fixture
async def http(wiring: Wiring) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(wiring.services))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def _verify(password: str, hashed: str) -> bool:
    _, alg, iterations, salt, digest = hashed.split("$")
    calc = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    return alg == "7" and base64.b64encode(calc).decode() == digest


def test_our_hash_is_the_one_mosquitto_passwd_writes(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    pw = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(pw), "gw-1", "s3cret!"], check=True)
    theirs = pw.read_text().strip().split(":", 1)[1]
    salt = base64.b64decode(theirs.split("$")[3])
    assert mosquitto_hash("s3cret!", salt) == theirs


def test_claim_codes_survive_how_installers_type_them() -> None:
    assert normalise_code(" abcd-efgh-jk0o ") == "ABCDEFGHJK00"
    assert normalise_code("il") == "11"


async def test_claim_code_exchanged_once_for_a_gateway_and_its_credential(
    db: Database, wiring: Wiring, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    group = await seed_group(db, spec)
    auth = await admin_auth(http, spec.slug)
    r = await http.post(
        f"/api/v1/sites/{group.site_id}/claim-codes", json={"ttl_minutes": 30}, headers=auth
    )
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    assert len(code) == 12

    typed = "-".join(code[i : i + 4] for i in range(0, 12, 4)).lower()  # as read aloud
    first = await http.post("/api/v1/gateways/commission", json={"claim": typed, "name": "B2"})
    assert first.status_code == 201, first.text
    ident = first.json()
    assert ident["mqtt_url"] == "mqtts://broker.example:8883"
    assert ident["username"] == ident["gateway"] and len(ident["password"]) >= 24

    again = await http.post("/api/v1/gateways/commission", json={"claim": code})
    assert again.status_code == 403
    assert "already used or expired" in again.json()["detail"]
    wrong = await http.post("/api/v1/gateways/commission", json={"claim": "ZZZZZZZZZZZZ"})
    assert wrong.status_code == 403

    async with db.tenant(group.tenant_id) as conn:
        gw = (
            await conn.execute(
                sa.text("SELECT site_id, name FROM gateway WHERE code = :c"),
                {"c": ident["gateway"]},
            )
        ).one()
        stored = await conn.scalar(
            sa.text("SELECT password_hash FROM gateway_credential WHERE username = :u"),
            {"u": ident["gateway"]},
        )
    assert gw.site_id == group.site_id and gw.name == "B2"
    assert ident["password"] not in str(stored) and _verify(ident["password"], str(stored))
    lines = await broker_password_lines(db)
    mine = [ln for ln in lines if ln.startswith(ident["gateway"] + ":")]
    assert mine == [f"{ident['gateway']}:{stored}"]

    # another property group's operator cannot revoke it; its own can, once
    other = group_spec()
    await seed_group(db, other)
    foreign = await http.post(
        f"/api/v1/gateways/{ident['gateway']}/revoke-credential",
        headers=await admin_auth(http, other.slug),
    )
    assert foreign.status_code == 404
    revoked = await http.post(
        f"/api/v1/gateways/{ident['gateway']}/revoke-credential", headers=auth
    )
    assert revoked.status_code == 200 and revoked.json()["revoked"] == 1
    twice = await http.post(f"/api/v1/gateways/{ident['gateway']}/revoke-credential", headers=auth)
    assert twice.status_code == 409
    assert not any(ln.startswith(ident["gateway"] + ":") for ln in await broker_password_lines(db))


async def test_an_expired_claim_is_refused(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec()
    group = await seed_group(db, spec)
    auth = await admin_auth(http, spec.slug)
    r = await http.post(
        f"/api/v1/sites/{group.site_id}/claim-codes", json={"ttl_minutes": 1}, headers=auth
    )
    code = r.json()["code"]
    later = datetime.now(UTC) + timedelta(minutes=2)
    with pytest.raises(ClaimRefused):
        await exchange_claim(db, code, later)
    bad = await http.post(
        f"/api/v1/sites/{group.site_id}/claim-codes", json={"ttl_minutes": 0}, headers=auth
    )
    assert bad.status_code == 422
    unknown_site = await http.post(
        "/api/v1/sites/00000000-0000-0000-0000-000000000000/claim-codes", json={}, headers=auth
    )
    assert unknown_site.status_code == 404
    anonymous = await http.post(f"/api/v1/sites/{group.site_id}/claim-codes", json={})
    assert anonymous.status_code == 401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_the_installer_command_writes_a_private_config(
    db: Database, wiring: Wiring, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    spec = group_spec()
    group = await seed_group(db, spec)
    auth = await admin_auth(http, spec.slug)
    code = (
        await http.post(f"/api/v1/sites/{group.site_id}/claim-codes", json={}, headers=auth)
    ).json()["code"]
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(wiring.services), host="127.0.0.1", port=port, log_level="error")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        cloud = f"http://127.0.0.1:{port}"
        config = tmp_path / "etc" / "config.yaml"
        config.parent.mkdir()
        config.write_text("poll_interval_s: 5\nbuses: []\n")  # an installer's earlier edits
        ident = await asyncio.to_thread(exchange, cloud, code, "meter room 2")
        write_config(config, ident, tmp_path / "data")
        with pytest.raises(CommissionError, match="refused the claim \\(403\\)"):
            await asyncio.to_thread(exchange, cloud, code, None)
        with pytest.raises(CommissionError, match="cannot reach"):
            await asyncio.to_thread(exchange, "http://127.0.0.1:1", code, None, 1.0)
    finally:
        server.should_exit = True
        await serving
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    cfg = load_config(config)
    assert cfg.gateway == ident["gateway"] and cfg.mqtt_password == ident["password"]
    assert cfg.poll_interval_s == 5 and cfg.data_dir == tmp_path / "data"
    assert yaml.safe_load(config.read_text())["mqtt_url"] == "mqtts://broker.example:8883"


def test_broker_password_file_keeps_static_accounts_first(tmp_path: Path) -> None:
    static = tmp_path / "static"
    static.write_text("# service accounts\nprepay-cloud:$7$101$x$y\n")
    text = render(["gw-a:$7$101$a$b", "prepay-cloud:$7$101$evil$evil"], static)
    assert text == "prepay-cloud:$7$101$x$y\ngw-a:$7$101$a$b\n"
    target = tmp_path / "passwd"
    assert write_if_changed(target, text) is True
    assert write_if_changed(target, text) is False
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
