"""Operators: password check, signed session tokens, permissions."""

from __future__ import annotations

import functools
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pwdlib import PasswordHash
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import audit
from cloud.db import Database
from cloud.errors import Forbidden, Invalid, TooManyAttempts, Unauthorized

PERMISSIONS = (
    "registry.view",
    "registry.edit",  # sites, buildings, premises, outlets
    "operator.manage",  # roles, operators and their scopes, cross-outlet grants
    "account.open",  # 开户 (customers, accounts, points at a premises)
    "account.close",  # 消户 and 过户
    "account.write_off",  # close an account in debt by writing its arrears off
    "meter.install",  # 装表, 换表, 拆表
    "import.run",  # legacy import
    "sale.create",
    "sale.reverse",
    "dunning.send",  # 催费: send arrears reminders to customers
    "control.trip",
    "control.restore",
    "control.keep_power",
    "tariff.edit",
    "finance.reconcile",
    "finance.write_off",  # write off a reconciliation difference (posted to adjustments)
    "gateway.commission",
    "gateway.configure",
    "field.books",  # make meter books (表册), open reading cycles, assign field workers
    "field.work",  # read, collect and dun in the field, within the books assigned
)

#: The installer's role a new property group starts with (issue 17): see the gateways and
#: their meters, issue and revoke claim codes, push configs, install meters (装表).
INSTALLER_PERMISSIONS = (
    "registry.view",
    "gateway.commission",
    "gateway.configure",
    "meter.install",
)

_hasher = PasswordHash.recommended()
MIN_PASSWORD = 8


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the group or user is unknown: the same algorithm and cost as
    a real operator's hash (made once, on first use, not at import)."""
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@dataclass(frozen=True)
class Principal:
    tenant_id: uuid.UUID
    operator_id: uuid.UUID
    username: str
    permissions: frozenset[str]
    # what the operator's scope covers: "tenant" (everything), "site" (scope_ids are site
    # ids) or "outlet" (scope_ids are outlet ids; their sites are visible through them)
    scope: str = "tenant"
    scope_ids: frozenset[uuid.UUID] = frozenset()
    session_id: uuid.UUID | None = None

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            raise Forbidden(f"permission {permission!r} required")

    @property
    def actor(self) -> str:
        return f"operator:{self.username}"


LOGIN_LIMIT = 20  # failed logins of one group + username within WINDOW lock that login
ADDRESS_LIMIT = 100  # of one client address (an office behind one NAT has many clerks)
WINDOW = timedelta(minutes=1)
LOCK = timedelta(minutes=15)
IDLE = timedelta(days=1)  # rows untouched this long are pruned

_LOCKED = """
SELECT max(locked_until) FROM login_throttle WHERE key = ANY(:keys) AND locked_until > :now
"""
# A failure in a fixed window: a new window once the last one is over; the lock once the
# window's failures reach the limit (a failure during a lock does not extend it).
_FAILED = """
INSERT INTO login_throttle AS t (key, window_start, failures, locked_until)
VALUES (:k, :now, 1, CASE WHEN :limit <= 1 THEN :now + :lock END)
ON CONFLICT (key) DO UPDATE SET
  window_start = CASE WHEN t.window_start <= :now - :window THEN :now ELSE t.window_start END,
  failures = CASE WHEN t.window_start <= :now - :window THEN 1 ELSE t.failures + 1 END,
  locked_until = CASE
    WHEN t.locked_until > :now THEN t.locked_until
    WHEN t.window_start > :now - :window AND t.failures + 1 >= :limit THEN :now + :lock
    ELSE t.locked_until END
"""
_FORGET = "DELETE FROM login_throttle WHERE key = :k"
_PRUNE = """
DELETE FROM login_throttle
WHERE window_start < :idle AND (locked_until IS NULL OR locked_until < :now)
"""


class Sessions:
    """Signed, expiring session tokens (cookie for the console, bearer for the API)."""

    def __init__(
        self,
        db: Database,
        secret: str,
        max_age_s: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.max_age_s = max_age_s
        self.clock = clock
        self.secret = secret  # (the tenant app's sessions are signed with it too)
        self._s = URLSafeTimedSerializer(secret, salt="prepay-session")

    async def login(
        self, tenant_slug: str, username: str, password: str, address: str | None = None
    ) -> str:
        """A session token, or Unauthorized; TooManyAttempts while this login (20 failures
        in a minute) or this client address (100) is locked — even for the right password."""
        now = self.clock()
        login_key = f"login:{tenant_slug}/{username}"
        keys = [(login_key, LOGIN_LIMIT)]
        if address:
            keys.append((f"addr:{address}", ADDRESS_LIMIT))
        await self._refuse_if_locked([k for k, _ in keys], now)
        try:
            token = await self._login(tenant_slug, username, password, address, now)
        except Unauthorized:
            await self._failed(keys, now)
            raise
        async with self.db.platform() as conn:
            await conn.execute(sa.text(_FORGET), {"k": login_key})
        return token

    async def _refuse_if_locked(self, keys: list[str], now: datetime) -> None:
        async with self.db.platform() as conn:
            until = await conn.scalar(sa.text(_LOCKED), {"keys": keys, "now": now})
        if until is not None:
            wait = max(1, int((until - now).total_seconds()) + 1)
            raise TooManyAttempts(
                f"too many failed logins: locked until {until:%Y-%m-%d %H:%M:%S} UTC "
                f"(in {(wait + 59) // 60} min); other operators can still log in",
                wait,
            )

    async def _failed(self, keys: list[tuple[str, int]], now: datetime) -> None:
        async with self.db.platform() as conn:
            for key, limit in keys:
                await conn.execute(
                    sa.text(_FAILED),
                    {"k": key, "now": now, "window": WINDOW, "lock": LOCK, "limit": limit},
                )
            await conn.execute(sa.text(_PRUNE), {"idle": now - IDLE, "now": now})

    async def _login(
        self, tenant_slug: str, username: str, password: str, address: str | None, now: datetime
    ) -> str:
        async with self.db.platform() as conn:
            tenant_id = await conn.scalar(
                sa.text("SELECT id FROM tenant WHERE slug = :s"), {"s": tenant_slug}
            )
        # An unknown group still asks for the operator (under a tenant nobody has, so
        # row-level security finds nothing): the same queries as for a known one.
        async with self.db.tenant(tenant_id or uuid.uuid4()) as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT id, password_hash FROM operator WHERE username = :u AND active"
                    ),
                    {"u": username},
                )
            ).first()
        if row is None:  # (an unknown group finds no row either)
            # the same hash as a known user's, so the answer's time does not tell an
            # attacker which usernames exist
            _hasher.verify(password, _dummy_hash())
            raise Unauthorized("unknown property group, user or password")
        if not _hasher.verify(password, row.password_hash):
            raise Unauthorized("unknown property group, user or password")
        assert tenant_id is not None
        session_id = uuid.uuid4()
        async with self.db.tenant(tenant_id) as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO operator_session (id, tenant_id, operator_id, created_at, address)"
                    " VALUES (:id, :t, :o, :now, :a)"
                ),
                {"id": session_id, "t": tenant_id, "o": row.id, "now": now, "a": address},
            )
        return self._s.dumps({"t": str(tenant_id), "o": str(row.id), "s": str(session_id)})

    def _claims(self, token: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        try:
            data = self._s.loads(token, max_age=self.max_age_s)
            return uuid.UUID(data["t"]), uuid.UUID(data["o"]), uuid.UUID(data["s"])
        except (BadSignature, KeyError, ValueError, TypeError) as exc:
            raise Unauthorized("session invalid or expired; log in again") from exc

    async def logout(self, token: str) -> None:
        """Revoke this session (a token that is already invalid is simply ignored)."""
        try:
            tenant_id, operator_id, session_id = self._claims(token)
        except Unauthorized:
            return
        async with self.db.tenant(tenant_id) as conn:
            await conn.execute(
                sa.text(
                    "UPDATE operator_session SET revoked_at = :now "
                    "WHERE id = :s AND operator_id = :o AND revoked_at IS NULL"
                ),
                {"s": session_id, "o": operator_id, "now": self.clock()},
            )

    async def change_password(self, who: Principal, current: str, new: str) -> None:
        """An operator changes their own password: the current one must be right, the new
        one at least 8 characters and different; every session of the operator (this one
        included) is revoked, so a stolen session ends with the change."""
        if len(new) < MIN_PASSWORD or len(new) > 256:
            raise Invalid(f"the new password must be {MIN_PASSWORD} to 256 characters")
        if new == current:
            raise Invalid("the new password must differ from the current one")
        now = self.clock()
        async with self.db.tenant(who.tenant_id) as conn:
            stored = await conn.scalar(
                sa.text("SELECT password_hash FROM operator WHERE id = :o AND active FOR UPDATE"),
                {"o": who.operator_id},
            )
            if stored is None or not _hasher.verify(current, stored):
                raise Invalid("the current password is wrong")
            await conn.execute(
                sa.text(
                    "UPDATE operator SET password_hash = :h, password_changed_at = :now "
                    "WHERE id = :o"
                ),
                {"h": hash_password(new), "now": now, "o": who.operator_id},
            )
            await revoke_sessions(conn, who.operator_id, now)
            await audit.record(
                conn, who.tenant_id, who.actor, "operator.password", f"operator:{who.username}", now
            )

    async def principal(self, token: str) -> Principal:
        tenant_id, operator_id, session_id = self._claims(token)
        async with self.db.tenant(tenant_id) as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT o.username, r.permissions, o.scope, o.scope_ids, "
                        "s.revoked_at FROM operator o JOIN role r ON r.id = o.role_id "
                        "JOIN operator_session s ON s.operator_id = o.id AND s.id = :s "
                        "WHERE o.id = :o AND o.active"
                    ),
                    {"o": operator_id, "s": session_id},
                )
            ).first()
        if row is None:
            raise Unauthorized("operator no longer active; log in again")
        if row.revoked_at is not None:
            raise Unauthorized(
                "this session has ended (logged out or password changed); log in again"
            )
        return Principal(
            tenant_id,
            operator_id,
            row.username,
            frozenset(row.permissions),
            row.scope,
            frozenset(row.scope_ids),
            session_id,
        )


async def revoke_sessions(conn: AsyncConnection, operator_id: uuid.UUID, now: datetime) -> int:
    """End every live session of an operator (password changed or reset, deactivated)."""
    result = await conn.execute(
        sa.text(
            "UPDATE operator_session SET revoked_at = :now "
            "WHERE operator_id = :o AND revoked_at IS NULL"
        ),
        {"o": operator_id, "now": now},
    )
    return result.rowcount
