"""Tenancy: forced RLS on every tenant-owned table, an unprivileged app role, isolation."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from cloud.db import Database, sqlalchemy_url
from cloud.registry.service import Seeded, seed_group
from tests.conftest import group_spec


def test_every_tenant_table_has_forced_rls_and_a_policy(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                   (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
            """
        ).fetchall()
    assert len(rows) >= 20
    bad = [r[0] for r in rows if not (r[1] and r[2] and r[3] >= 1)]
    assert bad == [], f"tables with tenant_id lacking forced RLS or a policy: {bad}"


def test_app_role_is_not_owner_superuser_or_bypassrls(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        role = conn.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'prepay_app'"
        ).fetchone()
        owned = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tableowner = 'prepay_app'"
        ).fetchone()
    assert role == (False, False)
    assert owned == (0,)


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = create_engine(sqlalchemy_url(db_url))
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    engine.dispose()
    assert diff == []


async def test_one_group_never_sees_anothers_rows(db: Database, group: Seeded) -> None:
    other = await seed_group(db, group_spec(meters=2))
    async with db.tenant(group.tenant_id) as conn:
        points = await conn.scalar(sa.text("SELECT count(*) FROM service_point"))
        foreign = await conn.scalar(
            sa.text("SELECT count(*) FROM ledger_account WHERE tenant_id = :t"),
            {"t": other.tenant_id},
        )
    assert points == 1
    assert foreign == 0
    async with db.platform() as conn:  # no tenant set: nothing at all
        assert await conn.scalar(sa.text("SELECT count(*) FROM service_point")) == 0


async def test_writing_into_another_group_is_refused(db: Database, group: Seeded) -> None:
    other = await seed_group(db, group_spec())
    with pytest.raises(sa.exc.ProgrammingError, match="row-level security"):
        async with db.tenant(group.tenant_id) as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO customer (id, tenant_id, name) VALUES (gen_random_uuid(), :t, 'x')"
                ),
                {"t": other.tenant_id},
            )
