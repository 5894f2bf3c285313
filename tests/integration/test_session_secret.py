"""The session signing key: weak or missing keys refused wherever sessions are served,
whatever PREPAY_ENVIRONMENT says; a token signed with the old public placeholder is refused."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest
import sqlalchemy as sa
from itsdangerous import URLSafeTimedSerializer

from cloud.db import Database
from cloud.registry.service import seed_group
from cloud.settings import CloudSettings, WeakSecret, weak_secret
from tests.conftest import ROOT, admin_auth, api_client, group_spec


@pytest.mark.parametrize(
    "key",
    ["", "x", "short-but-not-32-bytes", "a" * 64, "ab" * 32, "dev-only-insecure-secret-change-me"],
)
def test_weak_keys_are_named(key: str) -> None:
    assert weak_secret(key) is not None
    with pytest.raises(WeakSecret, match="PREPAY_SECRET_KEY"):
        CloudSettings(secret_key=key).session_secret(required=False)


def test_a_strong_key_is_used_and_an_unset_one_only_where_no_sessions_are_served() -> None:
    key = secrets.token_urlsafe(48)
    assert weak_secret(key) is None
    assert CloudSettings(secret_key=key).session_secret(required=True) == key
    unset = CloudSettings(_env_file=None)  # type: ignore[call-arg]
    if unset.secret_key is None:
        with pytest.raises(WeakSecret, match="not set"):
            unset.session_secret(required=True)
        a, b = unset.session_secret(required=False), unset.session_secret(required=False)
        assert a != b and weak_secret(a) is None  # random, per process


@pytest.mark.parametrize("key", [None, "x", "dev-only-insecure-secret-change-me"])
@pytest.mark.parametrize("environment", ["development", "production"])
def test_prepay_api_refuses_to_start_without_a_strong_key(
    key: str | None, environment: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREPAY_")}
    env["PREPAY_ENVIRONMENT"] = environment
    if key is not None:
        env["PREPAY_SECRET_KEY"] = key
    done = subprocess.run(
        [sys.executable, "-m", "cloud.cli", "api", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "PREPAY_SECRET_KEY" in done.stderr and "token_urlsafe" in done.stderr


async def test_a_token_signed_with_the_old_placeholder_key_is_refused(
    db: Database, db_url: str
) -> None:
    spec = group_spec()
    group = await seed_group(db, spec)
    async with db.tenant(group.tenant_id) as conn:
        operator = await conn.scalar(sa.text("SELECT id FROM operator WHERE username = 'admin'"))
    forged = URLSafeTimedSerializer(
        "dev-only-insecure-secret-change-me", salt="prepay-session"
    ).dumps({"t": str(group.tenant_id), "o": str(operator)})
    async with api_client(CloudSettings(database_url=db_url), db_url) as http:
        r = await http.get("/api/v1/service-points", headers={"authorization": f"Bearer {forged}"})
        assert r.status_code == 401
        good = await admin_auth(http, spec.slug)  # the process's own key still works
        assert (await http.get("/api/v1/service-points", headers=good)).status_code == 200
