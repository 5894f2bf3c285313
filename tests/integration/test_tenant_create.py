"""`prepay tenant create`: a new property group whose administrator logs in, manages the
registry, sells, and whose ledger `prepay check` finds sound."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud.auth import INSTALLER_PERMISSIONS, PERMISSIONS
from cloud.cli import main
from cloud.db import Database
from cloud.ledger import core as ledger
from cloud.settings import CloudSettings
from tests.conftest import api_client


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREPAY_DATABASE_URL", db_url)


async def _cli(*args: str) -> int:
    return await asyncio.to_thread(main, list(args))


def _password(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pw"
    path.write_text(text, encoding="utf-8")
    return str(path)


async def _count(db: Database, slug: str) -> int:
    async with db.platform() as conn:
        return int(
            await conn.scalar(sa.text("SELECT count(*) FROM tenant WHERE slug = :s"), {"s": slug})
            or 0
        )


@pytest.mark.usefixtures("cli_env")
async def test_create_then_log_in_set_up_and_check(
    db: Database, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slug = f"g{uuid.uuid4().hex[:8]}"
    pw = _password(tmp_path, "s3cret-first-line\nignored second line\n")
    rc = await _cli(
        "tenant",
        "create",
        "--slug",
        slug,
        "--name",
        "绿苑物业",
        "--admin",
        "boss",
        "--password-file",
        pw,
    )
    assert rc == 0
    assert f"property group {slug} created" in capsys.readouterr().out
    async with api_client(CloudSettings(database_url=db_url), db_url) as http:
        bad = await http.post(
            "/api/v1/auth/token",
            json={"tenant": slug, "username": "boss", "password": "ignored second line"},
        )
        assert bad.status_code == 401
        r = await http.post(
            "/api/v1/auth/token",
            json={"tenant": slug, "username": "boss", "password": "s3cret-first-line"},
        )
        assert r.status_code == 200, r.text
        auth = {"authorization": f"Bearer {r.json()['access_token']}"}
        roles = (await http.get("/api/v1/roles", headers=auth)).json()
        assert sorted((x["name"], set(x["permissions"])) for x in roles) == [
            ("administrator", set(PERMISSIONS)),
            ("installer", set(INSTALLER_PERMISSIONS)),
        ]
        ops = (await http.get("/api/v1/operators", headers=auth)).json()
        assert [(o["username"], o["scope"], o["active"]) for o in ops] == [("boss", "tenant", True)]
        site = await http.post("/api/v1/sites", json={"name": "一期"}, headers=auth)
        assert site.status_code == 201, site.text
        outlet = await http.post(
            f"/api/v1/sites/{site.json()['id']}/outlets", json={"name": "营业厅"}, headers=auth
        )
        assert outlet.status_code == 201, outlet.text
        async with db.platform() as conn:
            tenant_id = await conn.scalar(
                sa.text("SELECT id FROM tenant WHERE slug = :s"), {"s": slug}
            )
        number = await _account(db, tenant_id)  # as 开户 will make it (another helper's)
        sale = await http.post(
            "/api/v1/sales",
            json={"account": number, "amount": "50.00", "outlet_id": outlet.json()["id"]},
            headers={**auth, "Idempotency-Key": "first-sale-1"},
        )
        assert sale.status_code == 201, sale.text
        balance = await http.get(f"/api/v1/accounts/{number}/balance", headers=auth)
        assert balance.json()["balance"] == "50.00"
    async with db.tenant(tenant_id) as conn:
        actions = list(await conn.scalars(sa.text("SELECT action FROM audit_event ORDER BY at")))
    assert actions[0] == "tenant.created"
    assert await _cli("check", "--tenant", slug) == 0


async def _account(db: Database, tenant_id: uuid.UUID) -> str:
    """A customer's account with an empty wallet, written as seed_group writes one."""
    account_id, wallet_id, customer_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    wallet = ledger.wallet(account_id, "A000001")
    async with db.tenant(tenant_id) as conn:
        await conn.execute(
            sa.text("INSERT INTO customer (id, tenant_id, name) VALUES (:id, :t, '张三')"),
            {"id": customer_id, "t": tenant_id},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO ledger_account (id, tenant_id, code, kind, name, normal_side, "
                "balance) VALUES (:id, :t, :code, :kind, :name, :side, 0)"
            ),
            {
                "id": wallet_id,
                "t": tenant_id,
                "code": wallet.code,
                "kind": wallet.kind.value,
                "name": wallet.name,
                "side": wallet.normal_side.value,
            },
        )
        await conn.execute(
            sa.text(
                "INSERT INTO account (id, tenant_id, customer_id, number, wallet_id) "
                "VALUES (:id, :t, :c, 'A000001', :w)"
            ),
            {"id": account_id, "t": tenant_id, "c": customer_id, "w": wallet_id},
        )
    return "A000001"


@pytest.mark.usefixtures("cli_env")
async def test_an_existing_slug_is_refused(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slug = f"g{uuid.uuid4().hex[:8]}"
    pw = _password(tmp_path, "long-enough\n")
    args = (
        "tenant",
        "create",
        "--slug",
        slug,
        "--name",
        "A",
        "--admin",
        "boss",
        "--password-file",
        pw,
    )
    assert await _cli(*args) == 0
    capsys.readouterr()
    assert await _cli(*args) == 1
    assert f"property group {slug!r} already exists" in capsys.readouterr().err
    assert await _count(db, slug) == 1


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("slug", "password", "admin", "message"),
    [
        ("Bad_Slug", "long-enough", "boss", "slug 'Bad_Slug' must be 2 to 40"),
        ("x", "long-enough", "boss", "slug 'x' must be 2 to 40"),
        ("ok-slug", "short", "boss", "password must be at least 8"),
        ("ok-slug", "", "boss", "password must be at least 8"),
        ("ok-slug", "long-enough", "b o s s", "username must be"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_created(
    db: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    slug: str,
    password: str,
    admin: str,
    message: str,
) -> None:
    slug = slug.replace("ok-slug", f"ok-{uuid.uuid4().hex[:8]}")
    pw = _password(tmp_path, password)
    rc = await _cli(
        "tenant", "create", "--slug", slug, "--name", "A", "--admin", admin, "--password-file", pw
    )
    assert rc == 1
    assert message in capsys.readouterr().err
    assert await _count(db, slug) == 0


@pytest.mark.usefixtures("cli_env")
async def test_a_missing_password_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = await _cli(
        "tenant",
        "create",
        "--slug",
        "nofile",
        "--name",
        "A",
        "--admin",
        "boss",
        "--password-file",
        str(tmp_path / "absent"),
    )
    assert rc == 1
    assert "cannot read" in capsys.readouterr().err
