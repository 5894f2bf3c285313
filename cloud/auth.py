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

from cloud.db import Database
from cloud.errors import Forbidden, TooManyAttempts, Unauthorized

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
    "control.trip",
    "control.restore",
    "control.keep_power",
    "tariff.edit",
    "finance.reconcile",
    "gateway.commission",
    "gateway.configure",
)

_hasher = PasswordHash.recommended()


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
            token = await self._login(tenant_slug, username, password)
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

    async def _login(self, tenant_slug: str, username: str, password: str) -> str:
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
        return self._s.dumps({"t": str(tenant_id), "o": str(row.id)})

    async def principal(self, token: str) -> Principal:
        try:
            data = self._s.loads(token, max_age=self.max_age_s)
            tenant_id, operator_id = uuid.UUID(data["t"]), uuid.UUID(data["o"])
        except (BadSignature, KeyError, ValueError, TypeError) as exc:
            raise Unauthorized("session invalid or expired; log in again") from exc
        async with self.db.tenant(tenant_id) as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT o.username, r.permissions, o.scope, o.scope_ids FROM operator o "
                        "JOIN role r ON r.id = o.role_id WHERE o.id = :o AND o.active"
                    ),
                    {"o": operator_id},
                )
            ).first()
        if row is None:
            raise Unauthorized("operator no longer active")
        return Principal(
            tenant_id,
            operator_id,
            row.username,
            frozenset(row.permissions),
            row.scope,
            frozenset(row.scope_ids),
        )
