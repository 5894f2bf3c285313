"""Gateway commissioning: an operator issues a one-time, expiring claim code for a site; the
installer's `prepay-gateway commission --claim CODE` exchanges it for a new gateway's
identity and its own MQTT credentials. The cloud keeps only hashes: SHA-256 of the claim
code, and the broker's own PBKDF2-SHA512 hash of the password, from which the broker's
password file is written (`prepay broker-sync`). A credential can be revoked.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from cloud import audit
from cloud.auth import Principal
from cloud.db import Database
from cloud.errors import Conflict, DomainError, Invalid, NotFound
from cloud.registry.scope import require_site

#: Crockford-style alphabet: no I, L, O, U, so a code read aloud is typed right.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 12  # 60 bits
MAX_TTL = timedelta(days=7)
PBKDF2_ITERATIONS = 101  # Mosquitto's default for `$7$` hashes


class ClaimRefused(DomainError):
    """Unknown, used or expired claim code (one message for all: no oracle for guessing)."""

    status = 403


@dataclass(frozen=True)
class Claim:
    code: str
    site_id: uuid.UUID
    expires_at: datetime


@dataclass(frozen=True)
class GatewayIdentity:
    gateway: str
    username: str
    password: str
    site_id: uuid.UUID


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(code: str) -> str:
    """What an installer types: case, spaces and dashes do not matter; O/I/L read as 0/1/1."""
    text = code.strip().upper().replace("-", "").replace(" ", "")
    return text.translate(str.maketrans("OIL", "011"))


def code_hash(code: str) -> str:
    return hashlib.sha256(normalise_code(code).encode()).hexdigest()


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """Mosquitto 2.x password-file hash: ``$7$<iterations>$<salt b64>$<PBKDF2-SHA512 b64>``."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return (
        f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}"
        f"${base64.b64encode(digest).decode()}"
    )


async def issue_claim(
    db: Database, who: Principal, site_id: uuid.UUID, now: datetime, ttl: timedelta
) -> Claim:
    who.require("gateway.commission")
    if not timedelta(minutes=1) <= ttl <= MAX_TTL:
        raise Invalid(f"a claim code lives between 1 minute and {MAX_TTL.days} days")
    code = new_code()
    async with db.tenant(who.tenant_id) as conn:
        site = await conn.scalar(sa.text("SELECT id FROM site WHERE id = :s"), {"s": site_id})
        if site is None:
            raise NotFound(f"no site {site_id}")
        await conn.execute(
            sa.text(
                "INSERT INTO gateway_claim (id, tenant_id, site_id, code_hash, expires_at, "
                "created_at, created_by) VALUES (:id, :t, :s, :h, :exp, :now, :by)"
            ),
            {
                "id": uuid.uuid4(),
                "t": who.tenant_id,
                "s": site_id,
                "h": code_hash(code),
                "exp": now + ttl,
                "now": now,
                "by": who.actor,
            },
        )
        await audit.record(
            conn, who.tenant_id, who.actor, "gateway.claim_issued", str(site_id), now
        )
    return Claim(code, site_id, now + ttl)


async def exchange_claim(
    db: Database, code: str, now: datetime, name: str | None = None
) -> GatewayIdentity:
    """Use a claim code once: create the gateway and its credential."""
    h = code_hash(code)
    async with db.platform() as conn:
        tenant_id = await conn.scalar(sa.text("SELECT prepay_claim_tenant(:h)"), {"h": h})
    if not isinstance(tenant_id, uuid.UUID):
        raise ClaimRefused("claim code refused: unknown, already used or expired")
    async with db.tenant(tenant_id) as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT id, site_id, expires_at, used_at, revoked_at FROM gateway_claim "
                    "WHERE code_hash = :h FOR UPDATE"
                ),
                {"h": h},
            )
        ).one()
        if row.used_at is not None or row.revoked_at is not None or row.expires_at <= now:
            raise ClaimRefused("claim code refused: unknown, already used or expired")
        gateway_id = uuid.uuid4()
        gateway = f"gw-{secrets.token_hex(5)}"
        password = secrets.token_urlsafe(24)
        await conn.execute(
            sa.text(
                "INSERT INTO gateway (id, tenant_id, site_id, code, name, online) "
                "VALUES (:id, :t, :s, :c, :n, false)"
            ),
            {
                "id": gateway_id,
                "t": tenant_id,
                "s": row.site_id,
                "c": gateway,
                "n": name or gateway,
            },
        )
        await conn.execute(
            sa.text(
                "INSERT INTO gateway_credential (id, tenant_id, gateway_id, username, "
                "password_hash, created_at) VALUES (:id, :t, :g, :u, :p, :now)"
            ),
            {
                "id": uuid.uuid4(),
                "t": tenant_id,
                "g": gateway_id,
                "u": gateway,
                "p": mosquitto_hash(password),
                "now": now,
            },
        )
        await conn.execute(
            sa.text("UPDATE gateway_claim SET used_at = :now, gateway_id = :g WHERE id = :id"),
            {"now": now, "g": gateway_id, "id": row.id},
        )
        await audit.record(conn, tenant_id, "installer:claim", "gateway.commissioned", gateway, now)
    return GatewayIdentity(gateway, gateway, password, row.site_id)


@dataclass(frozen=True)
class ClaimLine:
    id: uuid.UUID
    created_at: datetime
    created_by: str
    expires_at: datetime
    used_at: datetime | None
    gateway: str | None  # the gateway it commissioned
    revoked_at: datetime | None
    revoked_by: str | None

    def state(self, now: datetime) -> str:
        """used | revoked | expired | live"""
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "live"


async def site_claims(
    db: Database, who: Principal, site_id: uuid.UUID, limit: int = 100
) -> list[ClaimLine]:
    """The site's claim codes, newest first (their codes are not kept: only the hash)."""
    who.require("gateway.commission")
    async with db.tenant(who.tenant_id) as conn:
        await require_site(conn, who, site_id)
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT c.id, c.created_at, c.created_by, c.expires_at, c.used_at, "
                    "g.code, c.revoked_at, c.revoked_by FROM gateway_claim c "
                    "LEFT JOIN gateway g ON g.id = c.gateway_id WHERE c.site_id = :s "
                    "ORDER BY c.created_at DESC LIMIT :lim"
                ),
                {"s": site_id, "lim": limit},
            )
        ).all()
    return [ClaimLine(*r) for r in rows]


async def revoke_claim(db: Database, who: Principal, claim_id: uuid.UUID, now: datetime) -> None:
    """Revoke a claim code not used yet: it is refused from now on. Conflict when it was
    used, revoked or has expired already; NotFound beyond the scope."""
    who.require("gateway.commission")
    async with db.tenant(who.tenant_id) as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT site_id, used_at, revoked_at, expires_at FROM gateway_claim "
                    "WHERE id = :id FOR UPDATE"
                ),
                {"id": claim_id},
            )
        ).first()
        if row is None:
            raise NotFound(f"no claim code {claim_id}")
        await require_site(conn, who, row.site_id)
        if row.used_at is not None or row.revoked_at is not None or row.expires_at <= now:
            raise Conflict("claim code already used, revoked or expired")
        await conn.execute(
            sa.text("UPDATE gateway_claim SET revoked_at = :now, revoked_by = :by WHERE id = :id"),
            {"now": now, "by": who.actor, "id": claim_id},
        )
        await audit.record(
            conn, who.tenant_id, who.actor, "gateway.claim_revoked", str(claim_id), now
        )


async def revoke_credential(db: Database, who: Principal, gateway: str, now: datetime) -> int:
    """Revoke the gateway's live credential; returns how many were revoked (0 or 1)."""
    who.require("gateway.commission")
    async with db.tenant(who.tenant_id) as conn:
        gid = await conn.scalar(sa.text("SELECT id FROM gateway WHERE code = :c"), {"c": gateway})
        if gid is None:
            raise NotFound(f"no gateway {gateway}")
        result = await conn.execute(
            sa.text(
                "UPDATE gateway_credential SET revoked_at = :now "
                "WHERE gateway_id = :g AND revoked_at IS NULL"
            ),
            {"now": now, "g": gid},
        )
        if result.rowcount == 0:
            raise Conflict(f"gateway {gateway} has no live credential")
        await audit.record(
            conn, who.tenant_id, who.actor, "gateway.credential_revoked", gateway, now
        )
        return int(result.rowcount)


async def broker_password_lines(db: Database) -> list[str]:
    """``username:hash`` for every live gateway credential, for Mosquitto's password file."""
    async with db.platform() as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM prepay_broker_credentials()"))).all()
    return [f"{r.username}:{r.password_hash}" for r in rows]
