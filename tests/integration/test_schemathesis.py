"""Issue 22, item 9: no 5xx from anything a client sends, and no status code the OpenAPI
document does not name. Schemathesis generates requests from the document for every
operation of the API (valid ones, and ones that break the schema) and sends them
in-process to the real application, against the test PostgreSQL and broker, with a valid
bearer token of a seeded property group. About half of the well-formed path parameters
generated are replaced by ids that exist (the group's site, points, accounts, a sale…),
so requests reach the services and not only the 404s.

The number of examples per operation is bounded and generation derandomized, so CI runs
the same cases every time; ``PREPAY_FUZZ_EXAMPLES=200`` makes a larger one-off run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
import schemathesis
import schemathesis.checks as checks
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.python import asgi

from cloud.api.fields import has_control
from cloud.auth import Sessions
from cloud.db import Database
from cloud.registry.service import GroupSpec, Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import admin_auth, api_client, group_spec

EXAMPLES = int(os.environ.get("PREPAY_FUZZ_EXAMPLES", "20"))
#: Every check but two, which judge the schema's strictness rather than the server:
#: - a schema-valid request may still be refused (422) by a rule JSON Schema cannot state
#:   ("customer_id or customer", a wrong current password, "until" in the past, an empty
#:   config, the digits of a Decimal given as a string);
#: - a request that breaks the schema only by what HTTP lets a server ignore (an unknown
#:   query parameter or header, a repeated one) or by a value pydantic coerces (``0`` for
#:   ``false``) is answered as if it were valid.
#: ``PREPAY_FUZZ_STRICT=1`` checks them too, to see them.
_NOT_CHECKED = (
    []
    if os.environ.get("PREPAY_FUZZ_STRICT")
    else [checks.positive_data_acceptance, checks.negative_data_rejection]
)
#: Cases sent, by operation (``-s`` prints the total).
_CASES: dict[str, int] = {}

#: Operations that end the session they are called with: each case gets a fresh one.
_OWN_SESSION = {("POST", "/api/v1/auth/logout"), ("POST", "/api/v1/me/password")}


def _document() -> dict[str, Any]:
    """The OpenAPI document the application serves (building it touches no service).
    Loaded at import, so each operation is a test of its own; schemathesis' fixture
    loader (``schemathesis.pytest.from_fixture``) does not run under pytest 9.2."""
    from cloud.api.app import create_app

    doc: dict[str, Any] = create_app(cast(Any, None)).openapi()
    return doc


class _Deferred:
    """The ASGI application schemathesis sends to: the real one, once the fixture made it
    (the checks' own probes go through the schema's application, not the test's)."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None, "the fuzz_target fixture makes the application"
        await self.app(scope, receive, send)


_APP = _Deferred()
schema = schemathesis.openapi.from_dict(_document())
schema.app = _APP

#: Path parameter name → ids that exist in the seeded group (filled by the fixture).
_REAL: dict[str, list[str]] = {}


def _well_formed(name: str, value: Any) -> bool:
    """Whether a generated path parameter is one the schema allows (a UUID, a key): only
    those are swapped for real ids, so a case meant to break the schema still does."""
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or has_control(value):
        return False
    if name.endswith("_id"):
        try:
            uuid.UUID(value)
        except ValueError:
            return False
    return True


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
    params = path_parameters or {}
    names = [k for k, v in params.items() if _REAL.get(k) and _well_formed(k, v)]
    if not names:
        return st.just(path_parameters)
    real = st.fixed_dictionaries({k: st.sampled_from(_REAL[k]) for k in names})
    return st.one_of(st.just(path_parameters), real.map(lambda r: {**params, **r}))


@dataclass
class Target:
    sessions: Sessions
    spec: GroupSpec
    loop: asyncio.AbstractEventLoop | None = None  # the application's (schemathesis')
    headers: dict[str, str] = field(default_factory=dict)

    def fresh_headers(self) -> dict[str, str]:
        """A new session of the administrator, made on the application's loop and not
        over HTTP: the fuzzed logins lock the test client's address (100 failures), as
        they should."""
        assert self.loop is not None
        login = self.sessions.login(
            self.spec.slug, self.spec.admin_username, self.spec.admin_password
        )
        token = asyncio.run_coroutine_threadsafe(login, self.loop).result(timeout=60)
        return {"Authorization": f"Bearer {token}"}


def _ok(r: Any, status: int = 200) -> Any:
    assert r.status_code == status, (r.status_code, r.text)
    return r.json()


def _seed_world(client: Any, auth: dict[str, str], seeded: Seeded, gateway: str) -> None:
    """Something of every kind the paths name, in the fuzzed group."""
    site = str(seeded.site_id)
    building = _ok(
        client.post(f"/api/v1/sites/{site}/buildings", json={"name": "A"}, headers=auth), 201
    )
    premises = _ok(
        client.post(
            f"/api/v1/buildings/{building['id']}/premises",
            json={"floor": "1", "number": "101"},
            headers=auth,
        ),
        201,
    )
    customer = _ok(client.post("/api/v1/customers", json={"name": "Fuzz"}, headers=auth), 201)
    tariffs = _ok(client.get("/api/v1/tariffs", headers=auth))
    sale = _ok(
        client.post(
            "/api/v1/sales",
            json={"account": seeded.accounts["m1"], "amount": "20.00"},
            headers={**auth, "Idempotency-Key": f"fuzz-{uuid.uuid4().hex}"},
        ),
        201,
    )
    # the role and the operator the fuzzer may change are not the administrator's own
    role = _ok(
        client.post(
            "/api/v1/roles", json={"name": "clerk", "permissions": ["sale.create"]}, headers=auth
        ),
        201,
    )
    outlet = _ok(
        client.post(f"/api/v1/sites/{site}/outlets", json={"name": "B"}, headers=auth), 201
    )
    clerk = {
        "username": "clerk",
        "display_name": "Clerk",
        "password": "clerk-password-1",
        "role_id": role["id"],
        "scope": "outlet",
        "scope_ids": [outlet["id"]],
    }
    operator = _ok(client.post("/api/v1/operators", json=clerk, headers=auth), 201)
    now = datetime.now(UTC)
    grant = _ok(
        client.post(
            f"/api/v1/operators/{operator['id']}/outlet-grants",
            json={
                "outlet_id": str(seeded.outlet_id),
                "starts_at": now.isoformat(),
                "ends_at": (now + timedelta(days=1)).isoformat(),
                "reason": "covering a shift",
            },
            headers=auth,
        ),
        201,
    )
    _REAL.update(
        point_id=[str(p) for p in seeded.points.values()],
        site_id=[site],
        number=list(seeded.accounts.values()),
        building_id=[building["id"]],
        premises_id=[premises["id"]],
        customer_id=[customer["id"]],
        tariff_id=[t["id"] for t in tariffs],
        receipt_no=[sale["receipt_no"]],
        role_id=[role["id"]],
        operator_id=[operator["id"]],
        grant_id=[grant["id"]],
        code=[gateway],
    )


@pytest.fixture(scope="module")
def fuzz_target(db_url: str, mqtt_url: str) -> Iterator[Target]:
    from cloud.api.app import create_app
    from cloud.runtime import Wiring

    spec = group_spec(meters=2)

    async def seed() -> Seeded:
        db = Database.connect(db_url, None, "prepay_app")
        try:
            return await seed_group(db, spec)
        finally:
            await db.dispose()

    seeded = asyncio.run(seed())
    config = CloudSettings(database_url=db_url, mqtt_url=mqtt_url, mqtt_prefix=f"f{spec.slug}")
    wiring = Wiring.build(config, db_url)
    app = create_app(wiring.services)

    target = Target(wiring.services.sessions, spec)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        target.loop = asyncio.get_running_loop()  # schemathesis' loop, where the pool lives
        yield
        await wiring.db.dispose()

    app.router.lifespan_context = lifespan
    _APP.app = app
    with asgi.get_client(_APP) as client:
        target.headers = target.fresh_headers()
        assert client.get("/openapi.json").json() == schema.raw_schema
        _seed_world(client, target.headers, seeded, spec.gateway_code)
    yield target
    print(f"\nschemathesis: {sum(_CASES.values())} cases over {len(_CASES)} operations")
    asgi.shutdown_lifespans()  # (disposes of the pool)
    _APP.app = None
    _REAL.clear()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_nor_undocumented_status(
    case: schemathesis.Case, fuzz_target: Target
) -> None:
    own = (case.method.upper(), case.operation.path) in _OWN_SESSION
    headers = fuzz_target.fresh_headers() if own else fuzz_target.headers
    _CASES[case.operation.label] = _CASES.get(case.operation.label, 0) + 1
    case.call_and_validate(headers=headers, excluded_checks=_NOT_CHECKED)


# What the run above found, as a user of the API would see it.


@pytest.fixture
async def http(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(CloudSettings(database_url=db_url), db_url) as client:
        yield client


async def test_options_and_405_name_every_method_of_the_path(http: httpx.AsyncClient) -> None:
    r = await http.options("/api/v1/sites")
    assert r.status_code == 204
    assert r.headers["allow"] == "GET, POST, OPTIONS"
    r = await http.delete("/api/v1/sites")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"


async def test_an_unreadable_body_is_a_422(db: Database, http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/api/v1/auth/token", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body"]


async def test_control_characters_are_refused_in_words(http: httpx.AsyncClient) -> None:
    login = {"tenant": "a\u0000b", "username": "admin", "password": "demo-admin"}
    r = await http.post("/api/v1/auth/token", json=login)
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "tenant"]
    assert "control characters" in error["msg"]


async def test_a_name_may_be_as_long_as_documented(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec()
    await seed_group(db, spec)
    auth = await admin_auth(http, spec.slug)
    long = "客" * 120  # a customer's name: up to 120 (it was cut at a key's 64)
    r = await http.post("/api/v1/customers", json={"name": long}, headers=auth)
    assert r.status_code == 201, r.text
    r = await http.post("/api/v1/customers", json={"name": long + "客"}, headers=auth)
    assert r.status_code == 422


async def test_a_business_day_is_a_date(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec()
    await seed_group(db, spec)
    auth = await admin_auth(http, spec.slug)
    r = await http.get("/api/v1/sales", params={"business_day": "0"}, headers=auth)
    assert r.status_code == 422  # pydantic alone read it as 1970-01-01
    r = await http.get("/api/v1/sales", params={"business_day": "2026-12-02"}, headers=auth)
    assert r.status_code == 200, r.text
