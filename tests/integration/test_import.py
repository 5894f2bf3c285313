"""Legacy import against the real PostgreSQL: all or nothing, opening entries that keep
`prepay check`, GB18030 CSVs, other groups' gateways refused, the API's permission."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from openpyxl import Workbook

from cloud.auth import hash_password
from cloud.check import check
from cloud.cli import main as prepay
from cloud.db import Database
from cloud.errors import Conflict, Invalid
from cloud.registry.import_core import COLUMNS, MAX_ROWS
from cloud.registry.importer import MAX_BYTES, FileTooLarge, ImportReport, run_import
from cloud.registry.service import Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import admin_auth, api_client, group_spec

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
HEADER = [c.header for c in COLUMNS]
COUNTED = ("customer", "account", "premises", "building", "service_point", "device", "binding")


def rows_for(gateway: str, n: int) -> list[dict[str, str]]:
    """``n`` rows: shops with electricity; every tenth account also has water; balances
    positive, zero and negative (arrears)."""
    out: list[dict[str, str]] = []
    for i in range(n):
        base = i - i % 10 if i % 10 in (0, 1) else i  # rows 0 and 1 of ten: one shop
        account = f"W{base:06d}" if i % 10 in (0, 1) else f"L{i:06d}"
        water = i % 10 == 1
        out.append(
            {
                "customer_name": f"客户{account}",
                "phone": f"138{base:08d}",
                "id_number": "",
                "account_number": account,
                "building": f"{base % 7 + 1}号楼",
                "floor": str(base % 20 + 1),
                "premises_number": f"P{account}",
                "premises_kind": "shop" if base % 3 else "住宅",
                "floor_area": f"{20 + base % 50}.50",
                "utility": "water" if water else "electricity",
                "tariff": "Water" if water else "Commercial flat",
                "meter_profile": "cjt188-valve-water" if water else "acrel-ddsy1352-modbus",
                "gateway_code": gateway,
                "bus": f"bus{i // 200}",
                "address": f"{i:014d}" if water else str(i % 200 + 1),
                "channel": "",
                "meter_number": "",
                "install_register": f"{i}.125",
                "opening_balance": ("0" if water else str(Decimal(i % 97 - 20) + Decimal("0.35"))),
            }
        )
    return out


def to_csv(rows: list[dict[str, str]], encoding: str = "utf-8") -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HEADER)
    w.writerows([r[c.key] for c in COLUMNS] for r in rows)
    return buf.getvalue().encode(encoding)


def to_xlsx(rows: list[dict[str, str]]) -> bytes:
    book = Workbook(write_only=True)
    sheet = book.create_sheet("导入")
    sheet.append(HEADER)
    for r in rows:
        sheet.append([r[c.key] for c in COLUMNS])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


async def _group(db: Database) -> Seeded:
    seeded = await seed_group(db, group_spec(meters=0))
    async with db.tenant(seeded.tenant_id) as conn:
        tariff = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO tariff (id, tenant_id, name, utility, active) "
                "VALUES (:id, :t, 'Water', 'water', true)"
            ),
            {"id": tariff, "t": seeded.tenant_id},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO tariff_version (id, tenant_id, tariff_id, effective_from, kind, "
                "unit_price, spec, monthly_fee) VALUES (gen_random_uuid(), :t, :tr, "
                "'2020-01-01', 'flat', 4.5, '{}', 0)"
            ),
            {"t": seeded.tenant_id, "tr": tariff},
        )
    return seeded


async def _gateway(db: Database, seeded: Seeded) -> str:
    async with db.tenant(seeded.tenant_id) as conn:
        code = await conn.scalar(
            sa.text("SELECT code FROM gateway WHERE id = :g"), {"g": seeded.gateway_id}
        )
    assert isinstance(code, str)
    return code


async def _counts(db: Database, tenant_id: uuid.UUID) -> dict[str, int]:
    async with db.tenant(tenant_id) as conn:
        out = {
            t: int(await conn.scalar(sa.text(f"SELECT count(*) FROM {t}")) or 0) for t in COUNTED
        }
        out["journal_entry"] = int(
            await conn.scalar(sa.text("SELECT count(*) FROM journal_entry")) or 0
        )
    return out


async def _import(
    db: Database, seeded: Seeded, data: bytes, *, dry_run: bool, name: str = "legacy.xlsx"
) -> ImportReport:
    return await run_import(db, seeded.tenant_id, "test", name, data, dry_run=dry_run, now=NOW)


async def test_ten_thousand_rows_import_whole_and_check_holds(db: Database) -> None:
    seeded = await _group(db)
    rows = rows_for(await _gateway(db, seeded), 10_000)
    data = to_xlsx(rows)
    before = await _counts(db, seeded.tenant_id)

    dry = await _import(db, seeded, data, dry_run=True)
    assert dry.refusals == [] and dry.rows == 10_000 and not dry.written
    assert await _counts(db, seeded.tenant_id) == before

    report = await _import(db, seeded, data, dry_run=False)
    assert report.written and report.refusals == []
    assert report.points == 10_000 and report.meters == 10_000
    assert report.accounts == 9_000 and report.customers == 9_000
    after = await _counts(db, seeded.tenant_id)
    assert after["service_point"] == 10_000 and after["binding"] == 10_000
    assert after["account"] == 9_000 and after["building"] == 7
    assert after["journal_entry"] == report.opening_entries

    async with db.tenant(seeded.tenant_id) as conn:
        kinds = set(await conn.scalars(sa.text("SELECT DISTINCT kind FROM journal_entry")))
        wallets = await conn.scalar(
            sa.text("SELECT sum(balance) FROM ledger_account WHERE kind = 'wallet'")
        )
        opening = await conn.scalar(
            sa.text("SELECT balance FROM ledger_account WHERE code = 'opening_balances'")
        )
        arrears = await conn.scalar(
            sa.text(
                "SELECT l.balance FROM account a JOIN ledger_account l ON l.id = a.wallet_id "
                "WHERE a.number = 'L000002'"
            )
        )
        water = await conn.execute(
            sa.text(
                "SELECT sp.utility, d.profile, d.address, b.install_register, p.kind "
                "FROM service_point sp JOIN account a ON a.id = sp.account_id "
                "JOIN binding b ON b.service_point_id = sp.id "
                "JOIN channel c ON c.id = b.channel_id JOIN device d ON d.id = c.device_id "
                "JOIN premises p ON p.id = sp.premises_id "
                "WHERE a.number = 'W000000' ORDER BY sp.utility"
            )
        )
        shop = [tuple(r) for r in water]
        runs = await conn.scalar(sa.text("SELECT count(*) FROM import_run"))
        audits = await conn.scalar(
            sa.text("SELECT count(*) FROM audit_event WHERE action = 'import.run'")
        )
    assert kinds == {"opening"}
    assert wallets == report.opening_total and opening == report.opening_total
    assert arrears == Decimal("-17.65")  # row 4: 2 - 20 + 0.35
    assert shop == [
        ("electricity", "acrel-ddsy1352-modbus", "1", Decimal("0.125"), "flat"),
        ("water", "cjt188-valve-water", "00000000000001", Decimal("1.125"), "flat"),
    ]
    assert runs == 2 and audits == 1
    verdict = await check(db, [seeded.tenant_id])
    assert verdict.ok, verdict.breaches

    again = await _import(db, seeded, data, dry_run=False)
    assert not again.written and again.refused == 10_000
    assert await _counts(db, seeded.tenant_id) == after


async def test_one_bad_row_in_the_middle_imports_nothing(db: Database) -> None:
    seeded = await _group(db)
    rows = rows_for(await _gateway(db, seeded), 10_000)
    rows[4_999]["opening_balance"] = "12.345"  # spreadsheet row 5,001 (header = row 1)
    data = to_csv(rows)
    before = await _counts(db, seeded.tenant_id)

    dry = await _import(db, seeded, data, dry_run=True, name="legacy.csv")
    assert [(r.row, r.column) for r in dry.refusals] == [(5_001, "opening_balance")]
    assert "12.345 has more than 2 decimals" in dry.refusals[0].en
    assert "最多2位小数" in dry.refusals[0].zh

    real = await _import(db, seeded, data, dry_run=False, name="legacy.csv")
    assert not real.written and real.refused == 1
    assert await _counts(db, seeded.tenant_id) == before
    async with db.tenant(seeded.tenant_id) as conn:
        report = await conn.scalar(
            sa.text("SELECT report FROM import_run WHERE id = :r"), {"r": real.run_id}
        )
    assert report[0]["row"] == 5_001 and report[0]["column"] == "opening_balance"


@pytest.mark.parametrize("encoding", ["gb18030", "utf-8-sig", "utf-8"])
async def test_csv_in_gb18030_or_utf8(db: Database, encoding: str) -> None:
    seeded = await _group(db)
    rows = rows_for(await _gateway(db, seeded), 3)
    rows[2]["customer_name"] = "张三丰𠀀"  # a character beyond GBK, in GB18030
    report = await _import(db, seeded, to_csv(rows, encoding), dry_run=False, name="a.csv")
    assert report.written, report.refusals
    async with db.tenant(seeded.tenant_id) as conn:
        names = set(await conn.scalars(sa.text("SELECT name FROM customer")))
        buildings = set(await conn.scalars(sa.text("SELECT name FROM building")))
    assert "张三丰𠀀" in names and "1号楼" in buildings


async def test_another_groups_gateway_is_refused(db: Database) -> None:
    seeded, other = await _group(db), await _group(db)
    rows = rows_for(await _gateway(db, seeded), 4)
    rows[2]["gateway_code"] = await _gateway(db, other)
    before = await _counts(db, other.tenant_id)
    report = await _import(db, seeded, to_csv(rows), dry_run=False, name="a.csv")
    assert [(r.row, r.column) for r in report.refusals] == [(4, "gateway_code")]
    assert "not found" in report.refusals[0].en
    assert await _counts(db, other.tenant_id) == before
    assert (await _counts(db, seeded.tenant_id))["account"] == 0


async def test_existing_accounts_and_meters_are_refused(db: Database) -> None:
    seeded = await _group(db)
    gw = await _gateway(db, seeded)
    first = await _import(db, seeded, to_csv(rows_for(gw, 3)), dry_run=False, name="a.csv")
    assert first.written
    rows = rows_for(gw, 6)[3:]
    rows[0]["address"] = "1"  # the meter of the first file's row 2
    report = await _import(db, seeded, to_csv(rows), dry_run=True, name="b.csv")
    assert [(r.row, r.column) for r in report.refusals] == [(2, "address")]
    assert "already registered" in report.refusals[0].en


async def test_two_imports_of_one_file_at_once_write_it_once(db: Database) -> None:
    seeded = await _group(db)
    data = to_csv(rows_for(await _gateway(db, seeded), 200))
    results = await asyncio.gather(
        _import(db, seeded, data, dry_run=False, name="a.csv"),
        _import(db, seeded, data, dry_run=False, name="a.csv"),
        return_exceptions=True,
    )
    written = [r for r in results if isinstance(r, ImportReport) and r.written]
    others = [r for r in results if not (isinstance(r, ImportReport) and r.written)]
    assert len(written) == 1, results
    assert isinstance(others[0], Conflict) or (
        isinstance(others[0], ImportReport) and others[0].refused == 200
    )
    assert (await _counts(db, seeded.tenant_id))["service_point"] == 200
    assert (await check(db, [seeded.tenant_id])).ok


async def test_the_registry_counter_moves_once_per_statement(db: Database) -> None:
    """Ingest re-reads a gateway's meter map when the counter moves (migration 0013)."""
    seeded = await _group(db)
    counter = sa.text("SELECT value FROM tenant_counter WHERE name = 'registry'")
    async with db.tenant(seeded.tenant_id) as conn:
        before = await conn.scalar(counter)
    data = to_csv(rows_for(await _gateway(db, seeded), 30))
    await _import(db, seeded, data, dry_run=False, name="a.csv")
    async with db.tenant(seeded.tenant_id) as conn:
        imported = await conn.scalar(counter)
        await conn.execute(sa.text("UPDATE binding SET install_register = 0"))
        updated = await conn.scalar(counter)
        await conn.execute(sa.text("UPDATE binding SET install_register = 0 WHERE false"))
        untouched = await conn.scalar(counter)
    assert (before, imported, updated, untouched) == (None, 3, 4, 4)  # device, channel, binding


async def test_unreadable_and_oversized_files_are_refused(db: Database) -> None:
    seeded = await _group(db)
    with pytest.raises(FileTooLarge):
        await _import(db, seeded, b"x" * (MAX_BYTES + 1), dry_run=True, name="a.csv")
    lines = ",".join(HEADER) + "\n" + "a\n" * (MAX_ROWS + 1)
    with pytest.raises(Invalid, match="more than 50,000 rows"):
        await _import(db, seeded, lines.encode(), dry_run=True, name="a.csv")
    with pytest.raises(Invalid, match="UTF-8 or GB18030"):
        await _import(db, seeded, b"\xff\xfe\x00\x81\x30", dry_run=True, name="a.csv")
    with pytest.raises(Invalid, match="xlsx"):
        await _import(db, seeded, b"PK\x03\x04broken", dry_run=True, name="a.xlsx")
    with pytest.raises(Invalid, match=r"\.xls"):
        await _import(db, seeded, b"\xd0\xcf\x11\xe0", dry_run=True, name="old.xls")


async def test_prepay_import_cli(
    db: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded = await _group(db)
    async with db.platform() as conn:
        slug = await conn.scalar(
            sa.text("SELECT slug FROM tenant WHERE id = :t"), {"t": seeded.tenant_id}
        )
    rows = rows_for(await _gateway(db, seeded), 5)
    good = tmp_path / "good.csv"
    good.write_bytes(to_csv(rows, "gb18030"))
    rows[3]["utility"] = "gas"
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(to_xlsx(rows))
    monkeypatch.setenv("PREPAY_DATABASE_URL", db_url)
    assert await asyncio.to_thread(prepay, ["import", str(bad), "--tenant", slug]) == 1
    assert (
        await asyncio.to_thread(prepay, ["import", str(good), "--tenant", slug, "--dry-run"]) == 0
    )
    assert (await _counts(db, seeded.tenant_id))["account"] == 0
    assert await asyncio.to_thread(prepay, ["import", str(good), "--tenant", slug]) == 0
    assert (await _counts(db, seeded.tenant_id))["service_point"] == 5
    assert await asyncio.to_thread(prepay, ["import", str(good), "--tenant", "nope"]) == 2
    assert await asyncio.to_thread(prepay, ["check", "--tenant", slug]) == 0


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def _clerk(
    db: Database, seeded: Seeded, permissions: list[str], sites: list[uuid.UUID] | None = None
) -> None:
    async with db.tenant(seeded.tenant_id) as conn:
        role = uuid.uuid4()
        await conn.execute(
            sa.text("INSERT INTO role (id, tenant_id, name, permissions) VALUES (:i, :t, 'c', :p)"),
            {"i": role, "t": seeded.tenant_id, "p": permissions},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO operator (id, tenant_id, username, display_name, password_hash, "
                "role_id, active, scope, scope_ids) VALUES (gen_random_uuid(), :t, 'clerk', "
                "'Clerk', :h, :r, true, :scope, :ids)"
            ),
            {
                "t": seeded.tenant_id,
                "h": hash_password("clerk-pass"),
                "r": role,
                "scope": "tenant" if sites is None else "site",
                "ids": sites or [],
            },
        )


async def test_api_dry_run_by_default_then_import_and_list(
    db: Database, http: httpx.AsyncClient
) -> None:
    seeded = await _group(db)
    async with db.platform() as conn:
        slug = await conn.scalar(
            sa.text("SELECT slug FROM tenant WHERE id = :t"), {"t": seeded.tenant_id}
        )
    auth = await admin_auth(http, slug)
    rows = rows_for(await _gateway(db, seeded), 4)
    files = {"file": ("旧系统.xlsx", to_xlsx(rows), "application/octet-stream")}

    dry = await http.post("/api/v1/imports", files=files, headers=auth)
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True and dry.json()["written"] is False
    assert (await _counts(db, seeded.tenant_id))["account"] == 0

    done = await http.post("/api/v1/imports", files=files, data={"dry_run": "false"}, headers=auth)
    assert done.status_code == 201, done.text
    body = done.json()
    assert body["points"] == 4 and body["opening_total"] == str(report_total(rows))
    assert body["filename"] == "旧系统.xlsx"

    refused = await http.post(
        "/api/v1/imports", files=files, data={"dry_run": "false"}, headers=auth
    )
    assert refused.status_code == 422
    assert refused.json()["refusals"][0]["column"] == "account_number"

    runs = await http.get("/api/v1/imports", headers=auth)
    assert runs.status_code == 200
    assert [r["dry_run"] for r in runs.json()] == [False, False, True]
    assert runs.json()[0]["refused"] == 4 and runs.json()[1]["refused"] == 0


def report_total(rows: list[dict[str, str]]) -> Decimal:
    return sum((Decimal(r["opening_balance"]) for r in rows), Decimal(0))


async def test_api_refuses_without_permission_and_bad_uploads(
    db: Database, http: httpx.AsyncClient
) -> None:
    seeded = await _group(db)
    await _clerk(db, seeded, ["registry.view", "sale.create"])
    async with db.platform() as conn:
        slug = await conn.scalar(
            sa.text("SELECT slug FROM tenant WHERE id = :t"), {"t": seeded.tenant_id}
        )
    r = await http.post(
        "/api/v1/auth/token", json={"tenant": slug, "username": "clerk", "password": "clerk-pass"}
    )
    clerk = {"authorization": f"Bearer {r.json()['access_token']}"}
    rows = rows_for(await _gateway(db, seeded), 2)
    files = {"file": ("a.csv", to_csv(rows), "text/csv")}
    denied = await http.post(
        "/api/v1/imports", files=files, data={"dry_run": "false"}, headers=clerk
    )
    assert denied.status_code == 403 and "import.run" in denied.json()["detail"]
    assert (await http.get("/api/v1/imports", headers=clerk)).status_code == 403
    assert (await _counts(db, seeded.tenant_id))["account"] == 0
    assert (await http.post("/api/v1/imports", files=files)).status_code == 401

    auth = await admin_auth(http, slug)
    big = {"file": ("big.csv", b"x" * (MAX_BYTES + 1), "text/csv")}
    too_big = await http.post("/api/v1/imports", files=big, headers=auth)
    assert too_big.status_code == 413 and "20 MB" in too_big.json()["detail"]
    empty = await http.post("/api/v1/imports", files={"file": ("a.csv", b"")}, headers=auth)
    assert empty.status_code == 422 and "empty" in empty.json()["detail"]
    missing = await http.post("/api/v1/imports", data={"dry_run": "true"}, headers=auth)
    assert missing.status_code == 422
    garbled = {"file": ("a.csv", b"\xff\xfe\x00\x81\x30", "text/csv")}
    bad = await http.post("/api/v1/imports", files=garbled, headers=auth)
    assert bad.status_code == 422 and "GB18030" in bad.json()["detail"]
    assert (await _counts(db, seeded.tenant_id))["account"] == 0


async def test_a_site_scoped_operator_imports_only_onto_gateways_of_their_sites(
    db: Database, http: httpx.AsyncClient
) -> None:
    seeded = await _group(db)
    async with db.tenant(seeded.tenant_id) as conn:
        elsewhere = uuid.uuid4()
        await conn.execute(
            sa.text(
                "INSERT INTO site (id, tenant_id, name, timezone, notice_minutes, "
                "alarm_hysteresis, friendly_weekends, friendly_holidays) "
                "VALUES (:i, :t, 'Elsewhere', 'Asia/Shanghai', 0, 1, true, true)"
            ),
            {"i": elsewhere, "t": seeded.tenant_id},
        )
    await _clerk(db, seeded, ["import.run"], sites=[elsewhere])
    async with db.platform() as conn:
        slug = await conn.scalar(
            sa.text("SELECT slug FROM tenant WHERE id = :t"), {"t": seeded.tenant_id}
        )
    r = await http.post(
        "/api/v1/auth/token", json={"tenant": slug, "username": "clerk", "password": "clerk-pass"}
    )
    clerk = {"authorization": f"Bearer {r.json()['access_token']}"}
    files = {"file": ("a.csv", to_csv(rows_for(await _gateway(db, seeded), 2)), "text/csv")}
    refused = await http.post(
        "/api/v1/imports", files=files, data={"dry_run": "false"}, headers=clerk
    )
    assert refused.status_code == 422
    assert {x["column"] for x in refused.json()["refusals"]} == {"gateway_code"}
    assert (await _counts(db, seeded.tenant_id))["account"] == 0
