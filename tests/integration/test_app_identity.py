"""Tenant users' sessions and bindings (miniapp_api.identity) against the real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cloud.db import Database
from cloud.errors import NotFound, Unauthorized
from cloud.registry.service import Seeded, seed_group
from miniapp_api.identity import AppSessions, bound_account, bound_accounts
from tests.conftest import group_spec

SECRET = "a-test-secret-that-is-long-enough-for-sessions-0123456789"


async def _user(db: Database, tenant_id: uuid.UUID, phone: str) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with db.tenant(tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO app_user (id, tenant_id, phone, created_at) VALUES (:u, :t, :p, now())"
            ),
            {"u": user_id, "t": tenant_id, "p": phone},
        )
    return user_id


async def _bind(db: Database, tenant_id: uuid.UUID, user_id: uuid.UUID, number: str) -> None:
    async with db.tenant(tenant_id) as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO account_binding (id, tenant_id, user_id, account_id, bound_at) "
                "SELECT gen_random_uuid(), :t, :u, id, now() FROM account WHERE number = :n"
            ),
            {"t": tenant_id, "u": user_id, "n": number},
        )


async def test_a_session_names_its_user_until_revoked(db: Database, group: Seeded) -> None:
    sessions = AppSessions(db, SECRET)
    user_id = await _user(db, group.tenant_id, "+8613800000001")
    token = await sessions.issue(group.tenant_id, user_id)
    who = await sessions.user(token)
    assert (who.tenant_id, who.user_id) == (group.tenant_id, user_id)
    with pytest.raises(Unauthorized):
        await AppSessions(db, SECRET + "x").user(token)  # signed with another key
    await sessions.revoke(token)
    with pytest.raises(Unauthorized, match="ended"):
        await sessions.user(token)


async def test_an_expired_session_is_refused(db: Database, group: Seeded) -> None:
    later = datetime.now(UTC) + timedelta(days=31)
    user_id = await _user(db, group.tenant_id, "+8613800000002")
    token = await AppSessions(db, SECRET).issue(group.tenant_id, user_id)
    with pytest.raises(Unauthorized):
        await AppSessions(db, SECRET, clock=lambda: later).user(token)


async def test_only_bound_accounts_of_ones_own_group_are_reached(
    db: Database, group: Seeded
) -> None:
    other = await seed_group(db, group_spec())
    sessions = AppSessions(db, SECRET)
    mine = next(iter(group.accounts.values()))
    theirs = next(iter(other.accounts.values()))
    user_id = await _user(db, group.tenant_id, "+8613800000003")
    who = await sessions.user(await sessions.issue(group.tenant_id, user_id))
    async with db.tenant(who.tenant_id) as conn:
        with pytest.raises(NotFound):  # not bound yet
            await bound_account(conn, who, mine)
    await _bind(db, group.tenant_id, user_id, mine)
    async with db.tenant(who.tenant_id) as conn:
        assert (await bound_account(conn, who, mine)).number == mine
        assert [a.number for a in await bound_accounts(conn, who)] == [mine]
    # the other group's connection sees neither the binding nor, through it, the account
    async with db.tenant(other.tenant_id) as conn:
        with pytest.raises(NotFound):
            await bound_account(conn, who, theirs)
        assert await bound_accounts(conn, who) == []
