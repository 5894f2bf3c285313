"""Operators: password check, signed session tokens, permissions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pwdlib import PasswordHash

from cloud.db import Database
from cloud.errors import Forbidden, Unauthorized

PERMISSIONS = (
    "registry.view",
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


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@dataclass(frozen=True)
class Principal:
    tenant_id: uuid.UUID
    operator_id: uuid.UUID
    username: str
    permissions: frozenset[str]

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            raise Forbidden(f"permission {permission!r} required")

    @property
    def actor(self) -> str:
        return f"operator:{self.username}"


class Sessions:
    """Signed, expiring session tokens (cookie for the console, bearer for the API)."""

    def __init__(self, db: Database, secret: str, max_age_s: int) -> None:
        self.db = db
        self.max_age_s = max_age_s
        self._s = URLSafeTimedSerializer(secret, salt="prepay-session")

    async def login(self, tenant_slug: str, username: str, password: str) -> str:
        async with self.db.platform() as conn:
            tenant_id = await conn.scalar(
                sa.text("SELECT id FROM tenant WHERE slug = :s"), {"s": tenant_slug}
            )
        if tenant_id is None:
            raise Unauthorized("unknown property group, user or password")
        async with self.db.tenant(tenant_id) as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT id, password_hash FROM operator WHERE username = :u AND active"
                    ),
                    {"u": username},
                )
            ).first()
        if row is None or not _hasher.verify(password, row.password_hash):
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
                        "SELECT o.username, r.permissions FROM operator o "
                        "JOIN role r ON r.id = o.role_id WHERE o.id = :o AND o.active"
                    ),
                    {"o": operator_id},
                )
            ).first()
        if row is None:
            raise Unauthorized("operator no longer active")
        return Principal(tenant_id, operator_id, row.username, frozenset(row.permissions))
