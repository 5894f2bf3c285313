"""Legacy import (DESIGN §12 onboarding): a desktop vending program's export — an .xlsx
workbook or a CSV file (UTF-8 with or without BOM, or GB18030) — of customers, accounts,
premises, meters and opening balances.

A dry run checks every row (cloud.registry.import_core) and reports each refusal without
writing anything to the registry or the ledger. A real run writes everything in one
transaction, or nothing if any row is refused: set-based inserts per table, one journal
entry of kind ``opening`` per account with a balance (against the "opening balances"
adjustments account), one ``import_run`` row with the report and one audit event. Every run
(dry, refused or written) is kept in ``import_run`` so the office sees what was tried."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit, schema
from cloud.db import Database, pg_array, pg_text_array
from cloud.errors import Conflict, DomainError, Invalid
from cloud.ledger import core as ledger
from cloud.ledger.service import ensure_accounts, post_many
from cloud.registry.import_core import (
    MAX_ROWS,
    Facts,
    GatewayFact,
    Plan,
    ProfileFact,
    Refusal,
    TariffFact,
    validate,
)

MAX_BYTES = 20 * 1024 * 1024
OPENING = ledger.AccountRef("opening_balances", ledger.AccountKind.ADJUSTMENTS, "Opening balances")
_SEEDED_NUMBER = re.compile(r"^A(\d{1,18})\Z")  # the form next_number's account numbers take


class FileTooLarge(DomainError):
    status = 413


@dataclass(frozen=True)
class ImportReport:
    run_id: uuid.UUID
    filename: str
    dry_run: bool
    written: bool  # False for a dry run and for a refused file
    rows: int
    refusals: list[Refusal]
    customers: int
    accounts: int
    premises: int  # new premises (existing ones are reused)
    points: int
    meters: int
    opening_entries: int
    opening_total: Decimal  # sum of the opening balances (arrears negative)

    @property
    def refused(self) -> int:
        return len({r.row for r in self.refusals})


def _cell(value: object) -> str:
    """A spreadsheet cell as text: numbers as typed (Excel stores 12.5 as a float; its
    shortest repr is what the office typed), dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _too_many() -> Invalid:
    return Invalid(f"文件超过{MAX_ROWS}行 / the file has more than {MAX_ROWS:,} rows")


def _read_xlsx(data: bytes) -> list[list[str]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise Invalid(f"无法读取该Excel文件 / not a readable .xlsx workbook: {exc}") from None
    try:
        sheet = book.worksheets[0]
        rows: list[list[str]] = []
        for values in sheet.iter_rows(values_only=True):
            rows.append([_cell(v) for v in values])
            if len(rows) > MAX_ROWS + 1:
                raise _too_many()
        return rows
    finally:
        book.close()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise Invalid(
            "CSV文件编码应为UTF-8或GB18030 / a CSV file must be UTF-8 or GB18030"
        ) from None


def _read_csv(data: bytes) -> list[list[str]]:
    text = _decode(data)
    if "\x00" in text:
        raise Invalid("CSV文件含有NUL字符 / the CSV file holds NUL characters")
    rows: list[list[str]] = []
    try:
        for values in csv.reader(io.StringIO(text, newline="")):
            rows.append(values)
            if len(rows) > MAX_ROWS + 1:
                raise _too_many()
    except csv.Error as exc:
        raise Invalid(f"CSV文件格式错误 / malformed CSV: {exc}") from None
    return rows


def read_table(filename: str, data: bytes) -> list[list[str]]:
    """The file's first sheet as rows of text (the header first). Refuses a file over
    20 MB (413), one over 50,000 data rows, an unreadable workbook or a CSV in another
    encoding (422)."""
    if len(data) > MAX_BYTES:
        raise FileTooLarge(f"文件超过20 MB / the file is larger than 20 MB ({len(data):,} bytes)")
    if data.startswith(b"PK\x03\x04"):
        return _read_xlsx(data)
    if filename.lower().endswith((".xlsx", ".xlsm")):
        raise Invalid("不是有效的Excel文件 / not a valid .xlsx workbook")
    if filename.lower().endswith(".xls"):
        raise Invalid(
            "不支持旧版.xls格式，请另存为.xlsx或CSV / old .xls files are not read: "
            "save it as .xlsx or CSV"
        )
    return _read_csv(data)


@lru_cache(maxsize=1)
def _profiles() -> dict[str, ProfileFact]:
    from meter_profiles.loader import load_profiles

    return {
        model: ProfileFact(p.utility, p.protocol, p.channels)
        for model, p in load_profiles().items()
    }


@dataclass(frozen=True)
class _Existing:
    facts: Facts
    buildings: dict[tuple[uuid.UUID, str], uuid.UUID]  # (site, name) → id
    premises: dict[tuple[uuid.UUID, str, str], uuid.UUID]  # (site, building, number) → id


async def _load(conn: AsyncConnection, sites: Sequence[uuid.UUID] | None) -> _Existing:
    accounts = frozenset(await conn.scalars(sa.text("SELECT number FROM account")))
    tariffs: dict[str, list[TariffFact]] = {}
    for r in await conn.execute(
        sa.text("SELECT id, name, utility, site_id FROM tariff WHERE active")
    ):
        tariffs.setdefault(r.name, []).append(TariffFact(r.id, r.utility, r.site_id))
    scoped = "" if sites is None else " WHERE site_id = ANY(CAST(:sites AS uuid[]))"
    params = {} if sites is None else {"sites": "{" + ",".join(map(str, sites)) + "}"}
    gateways = {
        r.code: GatewayFact(r.id, r.site_id)
        for r in await conn.execute(
            sa.text(f"SELECT id, code, site_id FROM gateway{scoped}"), params
        )
    }
    keys: set[tuple[uuid.UUID, str]] = set()
    addresses: set[tuple[uuid.UUID, str, str]] = set()
    for r in await conn.execute(sa.text("SELECT gateway_id, key, bus, address FROM device")):
        keys.add((r.gateway_id, r.key))
        addresses.add((r.gateway_id, r.bus, r.address))
    buildings = {
        (r.site_id, r.name): r.id
        for r in await conn.execute(sa.text("SELECT id, site_id, name FROM building"))
    }
    premises = {
        (r.site_id, r.name, r.number): r.id
        for r in await conn.execute(
            sa.text(
                "SELECT p.id, p.site_id, b.name, p.number FROM premises p "
                "JOIN building b ON b.id = p.building_id"
            )
        )
    }
    facts = Facts(
        accounts=accounts,
        tariffs={k: tuple(v) for k, v in tariffs.items()},
        gateways=gateways,
        profiles=_profiles(),
        device_keys=frozenset(keys),
        device_addresses=frozenset(addresses),
    )
    return _Existing(facts, buildings, premises)


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


@lru_cache(maxsize=32)
def _bulk_insert(table: sa.Table, names: tuple[str, ...]) -> sa.TextClause:
    casts = []
    for i, name in enumerate(names):
        column = table.c[name]
        kind = "text" if isinstance(column.type, sa.String) else column.type.compile(dialect=_PG)
        casts.append(f"CAST(:c{i} AS {kind}[])")
    return sa.text(
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({', '.join(casts)})"
    )


async def _insert(conn: AsyncConnection, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """One INSERT … SELECT FROM unnest(arrays) per table, whatever the number of rows (the
    registry's statement-level triggers then fire once); scalar column defaults applied."""
    if not rows:
        return
    table: sa.Table = model.__table__
    defaults = {
        c.name: c.default.arg
        for c in table.columns
        if c.name not in rows[0] and isinstance(c.default, sa.ColumnDefault) and c.default.is_scalar
    }
    names = tuple(rows[0]) + tuple(defaults)
    params: dict[str, str] = {}
    for i, name in enumerate(names):
        values = [r[name] for r in rows] if name in rows[0] else [defaults[name]] * len(rows)
        text = isinstance(table.c[name].type, sa.String)
        params[f"c{i}"] = pg_text_array(values) if text else pg_array(values)
    await conn.execute(_bulk_insert(table, names), params)


@dataclass(frozen=True)
class _Written:
    premises: int
    entries: int


async def _write(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    plan: Plan,
    existing: _Existing,
    actor: str,
    now: datetime,
    run_id: uuid.UUID,
) -> _Written:
    t = tenant_id
    customer_ids = {c: uuid.uuid4() for c in plan.customers}
    await _insert(
        conn,
        schema.Customer,
        [
            {"id": i, "tenant_id": t, "name": c.name, "phone": c.phone, "id_number": c.id_number}
            for c, i in customer_ids.items()
        ],
    )
    account_ids = {n: uuid.uuid4() for n in plan.accounts}
    wallets = {n: ledger.wallet(account_ids[n], n) for n in plan.accounts}
    wallet_ids = {n: uuid.uuid4() for n in plan.accounts}
    await _insert(
        conn,
        schema.LedgerAccount,
        [
            {
                "id": wallet_ids[n],
                "tenant_id": t,
                "code": w.code,
                "kind": w.kind.value,
                "name": w.name,
                "normal_side": w.normal_side.value,
                "balance": Decimal(0),
                "unposted": Decimal(0),
            }
            for n, w in wallets.items()
        ],
    )
    await _insert(
        conn,
        schema.Account,
        [
            {
                "id": account_ids[n],
                "tenant_id": t,
                "customer_id": customer_ids[a.customer],
                "number": n,
                "wallet_id": wallet_ids[n],
                "status": "active",
                "opened_at": now,
            }
            for n, a in plan.accounts.items()
        ],
    )
    buildings = dict(existing.buildings)
    new_buildings: list[dict[str, Any]] = []
    for site, name, _ in plan.premises:
        if (site, name) not in buildings:
            buildings[(site, name)] = uuid.uuid4()
            new_buildings.append(
                {"id": buildings[(site, name)], "tenant_id": t, "site_id": site, "name": name}
            )
    await _insert(conn, schema.Building, new_buildings)
    premises_ids = dict(existing.premises)
    new_premises: list[dict[str, Any]] = []
    for key, p in plan.premises.items():
        if key not in premises_ids:
            premises_ids[key] = uuid.uuid4()
            new_premises.append(
                {
                    "id": premises_ids[key],
                    "tenant_id": t,
                    "site_id": p.site_id,
                    "building_id": buildings[(p.site_id, p.building)],
                    "floor": p.floor,
                    "number": p.number,
                    "kind": p.kind,
                    "floor_area": p.floor_area,
                }
            )
    await _insert(conn, schema.Premises, new_premises)
    device_ids = {k: uuid.uuid4() for k in plan.devices}
    await _insert(
        conn,
        schema.Device,
        [
            {
                "id": device_ids[k],
                "tenant_id": t,
                "gateway_id": d.gateway_id,
                "key": d.key,
                "profile": d.profile,
                "bus": d.bus,
                "address": d.address,
                "serial": d.serial,
            }
            for k, d in plan.devices.items()
        ],
    )
    channel_ids = {(p.device, p.channel): uuid.uuid4() for p in plan.points}
    await _insert(
        conn,
        schema.Channel,
        [
            {"id": i, "tenant_id": t, "device_id": device_ids[dev], "number": number}
            for (dev, number), i in channel_ids.items()
        ],
    )
    point_ids = [uuid.uuid4() for _ in plan.points]
    await _insert(
        conn,
        schema.ServicePoint,
        [
            {
                "id": i,
                "tenant_id": t,
                "site_id": p.site_id,
                "account_id": account_ids[p.account_number],
                "tariff_id": p.tariff_id,
                "name": p.name,
                "utility": p.utility,
                "control_mode": "cloud",
                "credit_limit": Decimal(0),
                "premises_id": premises_ids[p.premises],
            }
            for i, p in zip(point_ids, plan.points, strict=True)
        ],
    )
    await _insert(
        conn,
        schema.Binding,
        [
            {
                "id": uuid.uuid4(),
                "tenant_id": t,
                "service_point_id": i,
                "channel_id": channel_ids[(p.device, p.channel)],
                "installed_at": now,
                "install_register": p.install_register,
            }
            for i, p in zip(point_ids, plan.points, strict=True)
        ],
    )
    drafts = [
        ledger.EntryDraft(
            idempotency_key=f"opening:{account_ids[n]}",
            kind=ledger.EntryKind.OPENING,
            actor=actor,
            effective_at=now,
            legs=(
                ledger.transfer(OPENING, wallets[n], a.opening_balance)
                if a.opening_balance > 0
                else ledger.transfer(wallets[n], OPENING, -a.opening_balance)
            ),
            reason=f"opening balance, import {run_id}",
        )
        for n, a in plan.accounts.items()
        if a.opening_balance != 0
    ]
    if drafts:
        known = await ensure_accounts(conn, tenant_id, [OPENING])
        known |= {w.code: (wallet_ids[n], ledger.Side.CREDIT) for n, w in wallets.items()}
        await post_many(conn, tenant_id, drafts, known=known)
    await _advance_account_counter(conn, tenant_id, list(plan.accounts))
    return _Written(len(new_premises), len(drafts))


async def _advance_account_counter(
    conn: AsyncConnection, tenant_id: uuid.UUID, numbers: list[str]
) -> None:
    """Legacy numbers in the form new accounts get (A000123) move the tenant's account
    counter past them, so an account opened later never collides with one imported."""
    top = max((int(m[1]) for n in numbers if (m := _SEEDED_NUMBER.match(n))), default=0)
    if top:
        await conn.execute(
            sa.text(
                "INSERT INTO tenant_counter (tenant_id, name, value) VALUES (:t, 'account', :v) "
                "ON CONFLICT (tenant_id, name) DO UPDATE "
                "SET value = greatest(tenant_counter.value, EXCLUDED.value)"
            ),
            {"t": tenant_id, "v": top},
        )


async def run_import(
    db: Database,
    tenant_id: uuid.UUID,
    actor: str,
    filename: str,
    data: bytes,
    *,
    dry_run: bool,
    now: datetime,
    sites: Sequence[uuid.UUID] | None = None,
) -> ImportReport:
    """Check (``dry_run``) or import a legacy file for ``tenant_id``. ``sites``: the sites
    the operator's scope covers (None: all); a gateway elsewhere is refused as unknown.
    Raises FileTooLarge or Invalid for a file that cannot be read at all; a readable file's
    refused rows are in the report (and a real run then writes nothing but the report)."""
    table = await asyncio.to_thread(read_table, filename, data)
    run_id = uuid.uuid4()
    try:
        return await _run(db, tenant_id, actor, filename, table, dry_run, now, sites, run_id)
    except sa.exc.IntegrityError:  # another import or an opening wrote the same rows
        raise Conflict(
            "导入期间数据已被修改，未写入任何数据，请重试 / the registry changed during the "
            "import (another import or account opening?): nothing was written, try again"
        ) from None


async def _run(
    db: Database,
    tenant_id: uuid.UUID,
    actor: str,
    filename: str,
    table: list[list[str]],
    dry_run: bool,
    now: datetime,
    sites: Sequence[uuid.UUID] | None,
    run_id: uuid.UUID,
) -> ImportReport:
    header, rows = (table[0], table[1:]) if table else ([], [])
    async with db.tenant(tenant_id) as conn:
        existing = await _load(conn, sites)
        plan = await asyncio.to_thread(validate, header, rows, existing.facts)
        write = plan.ok and not dry_run
        written = (
            await _write(conn, tenant_id, plan, existing, actor, now, run_id)
            if write
            else _Written(0, 0)
        )
        report = ImportReport(
            run_id=run_id,
            filename=filename,
            dry_run=dry_run,
            written=write,
            rows=plan.rows,
            refusals=plan.refusals,
            customers=len(plan.customers),
            accounts=len(plan.accounts),
            premises=written.premises if write else len(plan.premises),
            points=len(plan.points),
            meters=len(plan.devices),
            opening_entries=written.entries
            if write
            else sum(1 for a in plan.accounts.values() if a.opening_balance != 0),
            opening_total=sum((a.opening_balance for a in plan.accounts.values()), Decimal(0)),
        )
        await conn.execute(
            sa.insert(schema.ImportRun.__table__),  # type: ignore[attr-defined]
            [
                {
                    "id": run_id,
                    "tenant_id": tenant_id,
                    "created_at": now,
                    "actor": actor,
                    "filename": filename,
                    "rows": plan.rows,
                    "dry_run": dry_run,
                    "refused": report.refused,
                    "report": [r.as_dict() for r in plan.refusals],
                }
            ],
        )
        await audit.record(
            conn,
            tenant_id,
            actor,
            "import.run" if write else ("import.dry_run" if dry_run else "import.refused"),
            str(run_id),
            now,
            {
                "filename": filename,
                "rows": str(plan.rows),
                "refused": str(report.refused),
                "accounts": str(report.accounts),
                "points": str(report.points),
                "opening_total": str(report.opening_total),
            },
        )
    return report


@dataclass(frozen=True)
class RunSummary:
    id: uuid.UUID
    created_at: datetime
    actor: str
    filename: str
    rows: int
    dry_run: bool
    refused: int
    report: list[dict[str, Any]]


async def get_run(db: Database, tenant_id: uuid.UUID, run_id: uuid.UUID) -> RunSummary | None:
    """One import run of the tenant (None: no such run, another group's included)."""
    async with db.tenant(tenant_id) as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT id, created_at, actor, filename, rows, dry_run, refused, report "
                    "FROM import_run WHERE id = :id"
                ),
                {"id": run_id},
            )
        ).first()
    return None if row is None else RunSummary(*row)


async def list_runs(
    db: Database, tenant_id: uuid.UUID, limit: int = 50, offset: int = 0, q: str | None = None
) -> list[RunSummary]:
    """The tenant's import runs, newest first (``q``: part of the file's name or of who ran
    it)."""
    return (await find_runs(db, tenant_id, q, limit, offset))[1]


_RUNS_LIKE = "WHERE CAST(:like AS text) IS NULL OR filename ILIKE :like OR actor ILIKE :like"


async def find_runs(
    db: Database, tenant_id: uuid.UUID, q: str | None, limit: int, offset: int
) -> tuple[int, list[RunSummary]]:
    """How many runs match ``q`` (part of the file name or of who ran it; None: all), and
    one page of them, newest first."""
    like = (
        None
        if not q
        else "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    )
    async with db.tenant(tenant_id) as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT id, created_at, actor, filename, rows, dry_run, refused, report, "
                    f"count(*) OVER () AS total FROM import_run {_RUNS_LIKE} "
                    "ORDER BY created_at DESC, id LIMIT :n OFFSET :off"
                ),
                {"like": like, "n": limit, "off": offset},
            )
        ).all()
    total = int(rows[0].total) if rows else 0
    if not rows and offset:  # past the end: only the count
        async with db.tenant(tenant_id) as conn:
            total = int(
                await conn.scalar(
                    sa.text(f"SELECT count(*) FROM import_run {_RUNS_LIKE}"),
                    {"like": like},
                )
                or 0
            )
    return total, [RunSummary(*r[:8]) for r in rows]
