"""Operators: password check, signed session tokens, permissions."""

from __future__ import annotations

import functools
import secrets
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
        # An unknown group or user costs the same hash as a known one, so the answer's time
        # does not tell an attacker which usernames exist.
        known = row is not None and _hasher.verify(password, row.password_hash)
        if row is None:
            _hasher.verify(password, _dummy_hash())
        if not known or row is None or tenant_id is None:
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
