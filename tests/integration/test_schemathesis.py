"""Issue 22, item 9: no 5xx from anything a client sends, and no status code the OpenAPI
document does not name. Schemathesis generates requests from the document for every
operation of the API (valid ones, and ones that break the schema) and sends them
in-process to the real application, against the test PostgreSQL and broker, with a valid
bearer token of a seeded property group. About half of the well-formed path parameters
generated are replaced by ids that exist (the group's site, points, accounts, a sale…),
so requests reach the services and not only the 404s.

Every schemathesis check runs, the two that judge the schema's strictness too: a request
the schema calls valid is accepted, and one it calls invalid refused (so the document
says exactly what the API takes). The refusals of valid requests that are the business's
and not the schema's (a state, a rule across fields, a date relative to today) are named
below, by operation and message.

The number of examples per operation is bounded and generation derandomized, so CI runs
the same cases every time; ``PREPAY_FUZZ_EXAMPLES=200`` makes a larger one-off run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import jsonschema_rs
import pytest
import schemathesis
import schemathesis.checks as checks
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.python import asgi

from cloud.auth import Sessions
from cloud.db import Database
from cloud.registry.service import GroupSpec, Seeded, seed_group
from cloud.settings import CloudSettings
from tests.conftest import admin_auth, api_client, group_spec

EXAMPLES = int(os.environ.get("PREPAY_FUZZ_EXAMPLES", "20"))

#: A schema-valid request may be refused by the state of things, which no schema states:
#: an id that does not exist or is outside the operator's scope (404), a conflict with
#: what is there (409), a permission the operator lacks (403), a session ended by the
#: case itself (401), a login locked (429). Those statuses are documented where a route
#: gives them and count as accepted (schemathesis' own default, said here on purpose);
#: a 422 does not: it says the schema let through what validation refuses.
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # 5xx: its own check

#: 422s to schema-valid requests that are rules of the business JSON Schema cannot state,
#: by operation: across fields, against what is stored, or relative to today. Each is a
#: regular expression of the refusal's message (a problem's detail, or a field's message);
#: a 422 whose every message matches one is not counted against the schema. Anything else
#: refused is a schema looser than the validation: tighten the model (cloud.api.fields).
_RELATIVE_TO_TODAY = (  # cloud.horizons: from 2000, and at most so many days ahead
    r"^must not be before 2000-01-01$",
    r"^must not be more than \d+ days ahead$",
)
_FUTURE = (*_RELATIVE_TO_TODAY, r"^until .* is not in the future$")
_STARTS = (*_RELATIVE_TO_TODAY, r"^effective_from .* is in the past: a version starts now")
#: a patch whose every field is null (unchanged): JSON Schema says at least one field
_UNCHANGED = (r"^nothing to change",)
_SCOPE = (  # which ids a scope takes, and that they exist
    r"^a tenant-wide scope takes no scope ids$",
    r"^a (site|outlet) scope needs at least one (site|outlet) id$",
    r"^no such (site|outlet|role): ",
)
_PLAN = (  # a plan's parts agree (cloud.tariffs.rules, cloud.tariffs.core)
    r"^water is priced per m³: flat or tiered, not time-of-use$",
    r"^a TOU schedule starts at 00:00$",
    r"^TOU window starts must be strictly ascending$",
    r"^priced TOU periods no window uses: ",
    r"^tou spec needs prices and windows",
    r"^block bounds must be ",
    r"^the last block must be open-ended$",
    r"^a (tiered|TOU) plan has at most ",
)
#: a price above the site's catalogue price plus margin needs a reason (a site's setting)
_CEILING = (r" is above the ceiling .* acknowledge it with a reason \(margin_reason\)",)
_SNIPPET = (  # a scan snippet is a YAML document, with the device in it
    r"^the scan snippet ",
    r"^device .* (in the snippet has no profile or address|is not in the scan snippet)$",
)
_SITE = (
    r"^friendly night needs both a start and an end",
    r"^friendly night start and end",
    # a key of the server's tz database: as an enum of its ~600 names the coverage phase
    # would send every one (twice the run's time), so the schema says a key
    r"^unknown time zone '.*' \(use a key such as Asia/Shanghai\)$",
)
_RULES: dict[tuple[str, str], tuple[str, ...]] = {
    ("POST", "/api/v1/me/password"): (
        r"^the current password is wrong$",
        r"^the new password must differ from the current one$",
    ),
    ("GET", "/api/v1/sales"): _RELATIVE_TO_TODAY,
    ("POST", "/api/v1/service-points/{point_id}/control"): _FUTURE,
    ("POST", "/api/v1/sites/{site_id}/control"): _FUTURE,
    ("POST", "/api/v1/operators/{operator_id}/outlet-grants"): (
        *_RELATIVE_TO_TODAY,
        r"^a grant ",  # ends after it starts, in the future, lasts at most 31 days
        r"is already in this operator's scope$",
    ),
    ("POST", "/api/v1/tariffs"): (*_STARTS, *_PLAN, *_CEILING),
    ("POST", "/api/v1/tariffs/{tariff_id}/versions"): (*_STARTS, *_PLAN, *_CEILING),
    ("POST", "/api/v1/accounts"): (
        r"^give either customer_id or customer$",
        # the points asked for, taken together: one point per utility, and a
        # meter-controlled point's credit goes to its meter, so no first sale before 装表
        r"^two \w+ points in one opening$",
        r"^a meter-controlled point's first sale is made after its meter is installed",
    ),
    ("POST", "/api/v1/service-points/{point_id}/install"): (
        r"^give either device or scan$",
        r"^give install_register, or read: true, not both$",
        *_SNIPPET,
    ),
    ("POST", "/api/v1/accounts/{number}/transfer"): (
        r"^a transfer moves the balance to the new account",
        r"^service point .* is not on this account$",
        r"^give either customer_id or customer$",
    ),
    ("POST", "/api/v1/accounts/{number}/cancel"): (
        r"^moving the balance needs to_account$",
        r"^service point .* is not on this account$",
    ),
    ("POST", "/api/v1/sites"): _SITE,
    ("PATCH", "/api/v1/sites/{site_id}"): (*_UNCHANGED, *_SITE),
    ("PATCH", "/api/v1/premises/{premises_id}"): _UNCHANGED,
    ("PATCH", "/api/v1/customers/{customer_id}"): _UNCHANGED,
    ("PATCH", "/api/v1/roles/{role_id}"): _UNCHANGED,
    ("PATCH", "/api/v1/tariffs/{tariff_id}"): (
        *_UNCHANGED,
        # deactivating a tariff points still use (a state: arguably a 409, answered 422)
        r"^tariff .* is used by \d+ service point\(s\): assign them another tariff first$",
    ),
    ("POST", "/api/v1/operators"): _SCOPE,
    ("PATCH", "/api/v1/operators/{operator_id}"): (
        *_UNCHANGED,
        *_SCOPE,
        r"^scope and scope_ids change together$",
        r"^you cannot deactivate yourself$",
    ),
    # what a spreadsheet holds, which the schema only calls binary: its rows refused
    ("POST", "/api/v1/imports"): (r"the file is empty$", r"^row \d+: "),
}
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
schema.config.checks.positive_data_acceptance.expected_statuses = _ACCEPTED

#: Path parameter name → ids that exist in the seeded group (filled by the fixture).
_REAL: dict[str, list[str]] = {}


def _path_schema(operation: Any, name: str) -> dict[str, Any]:
    raw = schema.raw_schema["paths"][operation.path][operation.method.lower()]
    found = [p["schema"] for p in raw.get("parameters", ()) if p["in"] == "path"]
    named = [p["schema"] for p in raw.get("parameters", ()) if p.get("name") == name]
    return named[0] if named else (found[0] if found else {})


def _well_formed(operation: Any, name: str, value: Any) -> bool:
    """Whether a generated path parameter is one the schema allows (a UUID, a key): only
    those are swapped for real ids, so a case meant to break the schema still does."""
    if not isinstance(value, str) or not jsonschema_rs.is_valid(
        _path_schema(operation, name), value
    ):
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
    names = [k for k, v in params.items() if _REAL.get(k) and _well_formed(context.operation, k, v)]
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
    case.call_and_validate(
        headers=headers,
        excluded_checks=[checks.positive_data_acceptance, checks.negative_data_rejection],
        additional_checks=[positive_data_acceptance_but_rules, negative_data_rejection_as_sent],
    )


def negative_data_rejection_as_sent(ctx: Any, response: Any, case: schemathesis.Case) -> Any:
    """schemathesis' negative data rejection, judging the headers the server reads: the
    Authorization header the test sent (a valid token) rather than the one generated, and
    not the headers the operation does not name, which HTTP has a server ignore (RFC 9110
    §5.1). A case whose only fault was its token or such a header is not one once sent."""
    generated = case.headers
    # (the operation's own method: the checks' probes send others, such as TRACE)
    raw = schema.raw_schema["paths"][case.operation.path][case.operation.method.lower()]
    named = {p["name"].lower() for p in raw.get("parameters", ()) if p["in"] == "header"}
    sent = next(
        (v for k, v in response.request.headers.items() if k.lower() == "authorization"), None
    )
    read = {k: v for k, v in (generated or {}).items() if k.lower() in named}
    case.headers = {**read, "Authorization": sent} if sent is not None else read
    try:
        return checks.negative_data_rejection(ctx, response, case)
    finally:
        case.headers = generated


def _messages(response: Any) -> list[str]:
    try:
        body = response.json()
        detail = body.get("detail")
    except (ValueError, AttributeError):
        return []
    if isinstance(body.get("refusals"), list):  # an import run (cloud.api.import_routes)
        return [f"row {r.get('row')}: {r.get('en')}" for r in body["refusals"]]
    if isinstance(detail, str):  # a problem document (cloud.errors.Invalid)
        return [detail]
    if not isinstance(detail, list):
        return []
    return [e.get("msg", "").removeprefix("Value error, ") for e in detail]


def positive_data_acceptance_but_rules(ctx: Any, response: Any, case: schemathesis.Case) -> Any:
    """schemathesis' positive data acceptance, but for the refusals of :data:`_RULES`."""
    try:
        return checks.positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        rules = _RULES.get((case.method.upper(), case.operation.path), ())
        said = _messages(response)
        if (
            response.status_code == 422
            and said
            and all(any(re.search(rule, message) for rule in rules) for message in said)
        ):
            return None
        raise


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


async def test_a_decimal_is_a_written_string_or_a_whole_number(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    seeded = await seed_group(db, spec)
    auth = await admin_auth(http, spec.slug)

    async def sale(amount: Any) -> httpx.Response:
        body = {"account": seeded.accounts["m1"], "amount": amount}
        key = {"Idempotency-Key": f"t-{uuid.uuid4().hex}"}
        return await http.post("/api/v1/sales", json=body, headers={**auth, **key})

    for refused in (20.5, "1e3", " 20", "020.00", "20.001", "0.00", True):
        r = await sale(refused)
        assert r.status_code == 422, (refused, r.text)
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", "amount"]
        assert 'a string such as "50.00"' in error["msg"]
    for accepted in ("20.50", "20", 20, 20.0):
        assert (await sale(accepted)).status_code == 201, accepted


async def test_a_query_parameter_is_given_once(db: Database, http: httpx.AsyncClient) -> None:
    spec = group_spec()
    await seed_group(db, spec)
    auth = await admin_auth(http, spec.slug)
    twice = [("business_day", "2026-12-02"), ("business_day", "2026-12-03")]
    r = await http.get("/api/v1/sales", params=twice, headers=auth)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["query", "business_day"]
    assert error["msg"] == "must be given at most once"
    r = await http.get("/api/v1/sales", params={"business_day": "2026-12-02"}, headers=auth)
    assert r.status_code == 200, r.text


async def test_flags_counts_and_new_passwords_are_as_documented(
    db: Database, http: httpx.AsyncClient
) -> None:
    spec = group_spec()
    seeded = await seed_group(db, spec)
    auth = await admin_auth(http, spec.slug)
    site = f"/api/v1/sites/{seeded.site_id}"
    for change, name in (
        ({"friendly_holidays": 0}, "friendly_holidays"),  # pydantic alone read it as false
        ({"notice_minutes": "5"}, "notice_minutes"),
        ({"notice_minutes": 5.5}, "notice_minutes"),
        ({"name": "   "}, "name"),
    ):
        r = await http.patch(site, json=change, headers=auth)
        assert r.status_code == 422, (change, r.text)
        assert [e["loc"] for e in r.json()["detail"]] == [["body", name]]
    r = await http.patch(site, json={"notice_minutes": 5.0}, headers=auth)  # a JSON integer
    assert r.status_code == 200, r.text
    short = {"current_password": spec.admin_password, "new_password": "seven77"}
    r = await http.post("/api/v1/me/password", json=short, headers=auth)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "new_password"] and "at least 8" in error["msg"]
