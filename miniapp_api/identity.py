"""Who is asking the tenant app: a user's session (mini-program or H5 page) and the
accounts that user bound. DESIGN §13: a user never reaches an account they have not bound.

A token is signed (itsdangerous) and names its ``app_session`` row, so logging out or an
operator's revocation ends it; it carries the property group, so every query runs under
that tenant's row-level security.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.db import Database
from cloud.errors import NotFound, Unauthorized

SESSION_DAYS = 30


@dataclass(frozen=True)
class AppUser:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID


@dataclass(frozen=True)
class BoundAccount:
    account_id: uuid.UUID
    number: str
    customer_id: uuid.UUID
    status: str  # pending | active | closed


class AppSessions:
    """Issue, check and revoke tenant users' session tokens."""

    def __init__(
        self,
        db: Database,
        secret: str,
        max_age_s: int = SESSION_DAYS * 86400,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.max_age_s = max_age_s
        self.clock = clock
        self._s = URLSafeTimedSerializer(secret, salt="prepay-app-session")

    async def issue(self, tenant_id: uuid.UUID, user_id: uuid.UUID) -> str:
        """A new session for a user who just proved who they are (code2session, SMS code)."""
        now = self.clock()
        session_id = uuid.uuid4()
        async with self.db.tenant(tenant_id) as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO app_session (id, tenant_id, user_id, created_at, expires_at) "
                    "VALUES (:id, :t, :u, :now, :exp)"
                ),
                {
                    "id": session_id,
                    "t": tenant_id,
                    "u": user_id,
                    "now": now,
                    "exp": now + timedelta(seconds=self.max_age_s),
                },
            )
            await conn.execute(
                sa.text("UPDATE app_user SET last_login_at = :now WHERE id = :u"),
                {"now": now, "u": user_id},
            )
        return self._s.dumps({"t": str(tenant_id), "u": str(user_id), "s": str(session_id)})

    def _claims(self, token: str) -> AppUser:
        try:
            data = self._s.loads(token, max_age=self.max_age_s)
            return AppUser(uuid.UUID(data["t"]), uuid.UUID(data["u"]), uuid.UUID(data["s"]))
        except (BadSignature, KeyError, ValueError, TypeError) as exc:
            raise Unauthorized("session invalid or expired; log in again") from exc

    async def user(self, token: str) -> AppUser:
        """The session's user, or Unauthorized (bad, expired or revoked token)."""
        who = self._claims(token)
        async with self.db.tenant(who.tenant_id) as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT revoked_at, expires_at FROM app_session "
                        "WHERE id = :s AND user_id = :u"
                    ),
                    {"s": who.session_id, "u": who.user_id},
                )
            ).first()
        if row is None or row.revoked_at is not None or row.expires_at <= self.clock():
            raise Unauthorized("this session has ended; log in again")
        return who

    async def revoke(self, token: str) -> None:
        """Log out (an invalid token is simply ignored)."""
        try:
            who = self._claims(token)
        except Unauthorized:
            return
        async with self.db.tenant(who.tenant_id) as conn:
            await conn.execute(
                sa.text(
                    "UPDATE app_session SET revoked_at = :now "
                    "WHERE id = :s AND user_id = :u AND revoked_at IS NULL"
                ),
                {"s": who.session_id, "u": who.user_id, "now": self.clock()},
            )


_BOUND = """
SELECT a.id, a.number, a.customer_id, a.status
FROM account_binding b JOIN account a ON a.id = b.account_id
WHERE b.user_id = :u AND b.unbound_at IS NULL
"""


async def bound_accounts(conn: AsyncConnection, user: AppUser) -> list[BoundAccount]:
    """Every account the user has bound, by number (``conn`` under the user's tenant)."""
    rows = await conn.execute(sa.text(_BOUND + " ORDER BY a.number"), {"u": user.user_id})
    return [BoundAccount(r.id, r.number, r.customer_id, r.status) for r in rows]


async def bound_account(conn: AsyncConnection, user: AppUser, number: str) -> BoundAccount:
    """The account ``number`` if this user bound it; NotFound otherwise — the same answer
    for an account that does not exist, belongs to another group or another user."""
    row = (
        await conn.execute(sa.text(_BOUND + " AND a.number = :n"), {"u": user.user_id, "n": number})
    ).first()
    if row is None:
        raise NotFound(f"account {number} is not bound to you")
    return BoundAccount(row.id, row.number, row.customer_id, row.status)
