"""Store telemetry batches and rate them, in one tenant transaction.

Several batches of one gateway (the messages an ingest worker finds waiting) are stored and
rated together: each point's mark, wallet and twin is then read and written once for all of
its readings in them, not once per batch. Readings are bulk-loaded with COPY into a
per-connection staging table and moved with one plain ``INSERT``. A re-delivered reading
makes that fail on ``reading``'s primary key before anything else was written; the
transaction then runs again with ``INSERT … ON CONFLICT DO NOTHING`` (a third slower per
row: a speculative insertion probes the index twice), and the rows it did not store are
neither stored nor rated twice.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.aio import raise_if_cancelled
from cloud.control.policy import SupplyState
from cloud.control.service import CommandTiming, apply_ack, sweep_tenant
from cloud.db import Database
from cloud.rating.fast import STAGED, STAGED_COLUMNS, STAGING
from cloud.rating.service import RatingReport, rate_staged
from contract.mqtt import Ack, GatewayEvent, Reading, Supply, TelemetryBatch

log = logging.getLogger(__name__)

MAX_FUTURE = timedelta(minutes=10)
#: How far back a reading may lie when its site says nothing else (site.reading_max_age_days).
DEFAULT_MAX_AGE = timedelta(days=365)
SEEN_RESOLUTION = timedelta(seconds=5)  # gateway.last_seen_at is kept to this resolution
RETRIES = 3
# Two workers can meet in the same rows (a stream fed twice); PostgreSQL breaks the rare
# cycle and the batch is simply run again.
TRANSIENT = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
# Moves the staged rows; fails if any is there already (or twice among them: see
# _Repeated). The order is one lock order for every worker.
_MOVE_ALL = (
    f"INSERT INTO reading ({STAGED_COLUMNS}, tenant_id, received_at) "
    f"SELECT {STAGED_COLUMNS}, %(tenant)s, %(received)s FROM {STAGED} "
    "ORDER BY channel_id, measured_at, n"
)
# Moves the staged rows that are new and answers how many were stored. The rest are rated
# where they are staged (cloud.rating.service.rate_staged).
_MOVE = (
    f"WITH stored AS ({_MOVE_ALL} "
    "ON CONFLICT (channel_id, measured_at) DO NOTHING RETURNING 1) SELECT count(*) FROM stored"
)
# When some were not (already there, or repeated within the staged rows, where the first,
# lowest ``n``, is the one stored): which. A row this transaction stored carries its id.
_NOT_STORED = (
    "SELECT i.n FROM (SELECT n, channel_id, measured_at, row_number() OVER "
    f"(PARTITION BY channel_id, measured_at ORDER BY n) AS k FROM {STAGED}) AS i "
    "WHERE i.k > 1 OR NOT EXISTS (SELECT 1 FROM reading r WHERE r.channel_id = i.channel_id "
    "AND r.measured_at = i.measured_at AND r.xmin = pg_current_xact_id()::xid)"
)


class UnknownGateway(LookupError):
    pass


class _Repeated(Exception):
    """Some staged readings are stored already: the transaction, which wrote nothing yet,
    runs again moving only the new ones."""


@dataclass(frozen=True)
class Heartbeat:
    """What a heartbeat tells the installer: each bus's statistics since the previous one
    (transactions, timeouts, errors, utilisation) and the outbox backlog."""

    buses: dict[str, dict[str, Any]] = field(default_factory=dict)
    queue_depth: int | None = None

    @classmethod
    def of(cls, event: GatewayEvent) -> Heartbeat:
        return cls(
            {name: msgspec.to_builtins(b) for name, b in event.buses.items()}, event.queue_depth
        )


@dataclass
class IngestResult:
    """What became of one batch. ``charged`` and ``commands`` are the whole transaction's:
    batches stored together share them."""

    stored: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    charged: Decimal = Decimal(0)
    commands: int = 0

    def quarantine(self, reason: str) -> None:
        self.quarantined[reason] = self.quarantined.get(reason, 0) + 1


@dataclass(frozen=True)
class _Target:
    channel_id: uuid.UUID
    service_point_id: uuid.UUID | None
    #: when the binding to the point began (装表, 换表, 过户), in UTC; None: unbound
    installed_at: datetime | None = None
    channel_text: str = field(init=False)  # both as COPY writes them, made once
    point_text: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_text", str(self.channel_id))
        object.__setattr__(self, "point_text", _text(self.service_point_id))


@dataclass(frozen=True)
class _GatewayMap:
    """What the ingest knows of one gateway, as of one registry version: its id, its
    (device, channel) → :class:`_Target` map and how far back its site takes readings."""

    version: int
    gateway_id: uuid.UUID
    targets: dict[tuple[str, int], _Target]
    max_age: timedelta = DEFAULT_MAX_AGE


class IngestService:
    def __init__(self, db: Database, timing: CommandTiming) -> None:
        self.db = db
        self.timing = timing
        self._tenants: dict[str, uuid.UUID] = {}
        self._maps: dict[str, _GatewayMap] = {}  # by gateway code; see _targets

    async def tenant_of(self, gateway_code: str) -> uuid.UUID:
        tenant = self._tenants.get(gateway_code)
        if tenant is None:
            tenant = await self.db.gateway_tenant(gateway_code)
            if tenant is None:
                raise UnknownGateway(gateway_code)
            self._tenants[gateway_code] = tenant
        return tenant

    async def store_telemetry(
        self, topic_gateway: str, batch: TelemetryBatch, received_at: datetime
    ) -> IngestResult:
        return (await self.store_telemetry_many(topic_gateway, [batch], received_at))[0]

    async def store_telemetry_many(
        self, topic_gateway: str, batches: Sequence[TelemetryBatch], received_at: datetime
    ) -> list[IngestResult]:
        """Store and rate ``batches`` of one gateway in one transaction; one result each."""
        for batch in batches:
            if batch.gateway != topic_gateway:
                raise UnknownGateway(f"batch names {batch.gateway!r} on {topic_gateway!r}'s topic")
        tenant_id = await self.tenant_of(topic_gateway)
        careful, attempt = False, 1
        while True:
            try:
                return await self._store(tenant_id, topic_gateway, batches, received_at, careful)
            except _Repeated:  # (not an attempt lost: nothing was written)
                careful = True
            except sa.exc.DBAPIError as exc:
                raise_if_cancelled()
                if not isinstance(exc.orig, TRANSIENT) or attempt == RETRIES:
                    raise
                log.warning("telemetry batch retried after %s (attempt %d)", exc.orig, attempt)
                attempt += 1

    async def _store(
        self,
        tenant_id: uuid.UUID,
        topic_gateway: str,
        batches: Sequence[TelemetryBatch],
        received_at: datetime,
        careful: bool,
    ) -> list[IngestResult]:
        results = [IngestResult() for _ in batches]
        async with self.db.tenant(tenant_id) as conn:
            known = await self._targets(conn, topic_gateway)
            version, gateway_id, targets = known.version, known.gateway_id, known.targets
            # The times the site takes (see _quarantine_reason): worked out once here, so
            # a reading costs comparisons only.
            latest, oldest = received_at + MAX_FUTURE, received_at - known.max_age
            rows: list[str] = []  # COPY lines
            kept: list[dict[str, object]] = []  # quarantined readings
            points: set[str] = set()  # the service points the rows are bound to
            ends: list[int] = []  # where each batch's rows end in ``rows``
            for batch, result in zip(batches, results, strict=True):
                for r in batch.readings:
                    target = targets.get((r.device, r.channel))
                    reason = _quarantine_reason(r, target, latest, oldest)
                    if reason:
                        result.quarantine(reason)
                        kept.append(_kept(r, reason, tenant_id, gateway_id, received_at))
                        continue
                    assert target is not None
                    rows.append(_line(r, target, len(rows)))
                    if target.service_point_id is not None:
                        points.add(target.point_text)  # (a str's hash is cached, a UUID's not)
                ends.append(len(rows))
            skipped = await _insert(conn, tenant_id, received_at, rows, careful)
            if kept:
                await conn.execute(sa.text(_KEEP), kept)
            _count_stored(results, ends, skipped)
            if rows:  # nothing staged (every reading quarantined): nothing to rate
                report = await rate_staged(
                    conn, tenant_id, len(points), skipped, received_at, self.timing, version
                )
                for result in results:
                    result.charged, result.commands = report.charged, report.commands
            # Last, and only when it changes anything worth a write: every worker's batch of
            # the same gateway would otherwise queue on this one row until commit.
            back = await conn.scalar(
                sa.text(
                    "UPDATE gateway g SET online = true, last_seen_at = :at FROM gateway old "
                    "WHERE old.id = g.id AND g.id = :id AND (NOT g.online OR "
                    "g.last_seen_at IS NULL OR g.last_seen_at < :stale) RETURNING NOT old.online"
                ),
                {"at": received_at, "id": gateway_id, "stale": received_at - SEEN_RESOLUTION},
            )
        if back:  # it was offline: converge its twins (see gateway_presence)
            await self._converge_gateway(tenant_id, gateway_id, received_at)
        return results

    async def _converge_gateway(
        self, tenant_id: uuid.UUID, gateway_id: uuid.UUID, now: datetime
    ) -> None:
        """A gateway is back: converge its twins with fresh commands for the state desired
        now. In a transaction of its own, after the gateway's row is committed, so it never
        holds that row while waiting for control state a rating batch holds (or the
        reverse)."""
        try:
            async with self.db.tenant(tenant_id) as conn:
                await sweep_tenant(conn, tenant_id, now, self.timing, gateway_id)
        except sa.exc.DBAPIError:  # the dispatcher's sweep converges it within seconds
            raise_if_cancelled()
            log.exception("converging gateway %s after its return failed", gateway_id)

    async def gateway_presence(
        self,
        topic_gateway: str,
        online: bool,
        seen_at: datetime,
        config_version: int | None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        """The gateway's retained online/offline state (its last will says offline) and its
        heartbeats: who is connected, since when, on which config version, and (from a
        heartbeat) its buses' statistics and outbox backlog for the installer's page."""
        tenant_id = await self.tenant_of(topic_gateway)
        hb = heartbeat or Heartbeat()
        async with self.db.tenant(tenant_id) as conn:
            back = await conn.scalar(
                sa.text(
                    "UPDATE gateway g SET online = :on, last_seen_at = :at, "
                    "config_version = coalesce(:v, g.config_version), "
                    "heartbeat_at = CASE WHEN :hb THEN :at ELSE g.heartbeat_at END, "
                    "bus_stats = CASE WHEN :hb THEN CAST(:buses AS jsonb) ELSE g.bus_stats END, "
                    "queue_depth = CASE WHEN :hb THEN :q ELSE g.queue_depth END "
                    "FROM gateway old WHERE old.id = g.id AND g.code = :c "
                    "RETURNING CASE WHEN :on AND NOT old.online THEN g.id END"
                ),
                {
                    "on": online,
                    "at": seen_at,
                    "v": config_version,
                    "c": topic_gateway,
                    "hb": heartbeat is not None,
                    "buses": json.dumps(hb.buses),
                    "q": hb.queue_depth,
                },
            )
        if back is not None:
            # Back online: converge its twins to the current desired state with fresh
            # commands (what it missed expired; it never replays stale ones).
            await self._converge_gateway(tenant_id, back, seen_at)

    async def store_ack(self, topic_gateway: str, ack: Ack, received_at: datetime) -> bool:
        if ack.gateway != topic_gateway or ack.id is None:
            return False
        tenant_id = await self.tenant_of(topic_gateway)
        reported = SupplyState(ack.reported_supply.value) if ack.reported_supply else None
        async with self.db.tenant(tenant_id) as conn:
            return await apply_ack(
                conn,
                ack.id,
                ack.status,
                {"detail": ack.detail, **ack.meter_answer},
                reported,
                ack.at,
            )

    async def _targets(self, conn: AsyncConnection, gateway_code: str) -> _GatewayMap:
        """The gateway's map (:class:`_GatewayMap`), re-read only when the tenant's
        registry changed since (a trigger counts every change to devices, channels and
        bindings, and to a site's allowed reading age; reading the counter is one row, the
        map is thousands)."""
        version = int(
            await conn.scalar(sa.text("SELECT value FROM tenant_counter WHERE name = 'registry'"))
            or 0
        )
        cached = self._maps.get(gateway_code)
        if cached is not None and cached.version == version:
            return cached
        known = await self._load_targets(conn, gateway_code, version)
        self._maps[gateway_code] = known
        return known

    async def _load_targets(
        self, conn: AsyncConnection, gateway_code: str, version: int
    ) -> _GatewayMap:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT g.id AS gateway_id, s.reading_max_age_days, d.key, ch.number, "
                    "ch.id AS channel_id, b.service_point_id, b.installed_at FROM gateway g "
                    "JOIN site s ON s.id = g.site_id "
                    "LEFT JOIN device d ON d.gateway_id = g.id "
                    "LEFT JOIN channel ch ON ch.device_id = d.id "
                    "LEFT JOIN binding b ON b.channel_id = ch.id AND b.removed_at IS NULL "
                    "WHERE g.code = :code"
                ),
                {"code": gateway_code},
            )
        ).all()
        if not rows:
            raise UnknownGateway(gateway_code)
        targets = {
            # in UTC, the readings' zone, so comparing them is a plain comparison
            (r.key, r.number): _Target(
                r.channel_id,
                r.service_point_id,
                None if r.installed_at is None else r.installed_at.astimezone(UTC),
            )
            for r in rows
            if r.channel_id is not None
        }
        first = rows[0]
        return _GatewayMap(
            version, first.gateway_id, targets, timedelta(days=first.reading_max_age_days)
        )


_KEEP = """
INSERT INTO reading_quarantine
  (gateway_id, device, channel, measured_at, tenant_id, reason, reading, received_at)
VALUES (:g, :device, :channel, :measured_at, :t, :reason, CAST(:reading AS jsonb), :at)
ON CONFLICT DO NOTHING
"""


def _kept(
    r: Reading, reason: str, tenant_id: uuid.UUID, gateway_id: uuid.UUID, at: datetime
) -> dict[str, object]:
    """The parameters of one quarantined reading for :data:`_KEEP`."""
    return {
        "t": tenant_id,
        "g": gateway_id,
        "at": at,
        "device": r.device,
        "channel": r.channel,
        "measured_at": r.measured_at,
        "reason": reason,
        "reading": r.model_dump_json(),
    }


@dataclass(frozen=True)
class Unregistered:
    """A device (and channel) a gateway reports that the registry does not know yet."""

    device: str
    channel: int
    readings: int
    first_at: datetime
    last_at: datetime
    last: dict[str, Any]  # the latest reading as the gateway sent it


async def unregistered(
    db: Database, tenant_id: uuid.UUID, gateway_id: uuid.UUID
) -> list[Unregistered]:
    """What ``gateway_id`` reports for devices or channels not registered yet, from the
    quarantine: for the installer's page (register and install them from here)."""
    async with db.tenant(tenant_id) as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT device, channel, count(*) AS n, min(measured_at) AS first_at, "
                "max(measured_at) AS last_at, "
                "(array_agg(reading ORDER BY measured_at DESC))[1] AS last "
                "FROM reading_quarantine WHERE gateway_id = :g AND reason = 'unknown_channel' "
                "GROUP BY device, channel ORDER BY device, channel"
            ),
            {"g": gateway_id},
        )
        return [Unregistered(r.device, r.channel, r.n, r.first_at, r.last_at, r.last) for r in rows]


@dataclass(frozen=True)
class SetAside:
    """Readings of a registered meter the cloud keeps but does not rate, by reason."""

    device: str
    channel: int
    reason: str  # too_old | future_timestamp | before_installation | negative_register
    readings: int
    first_at: datetime  # measured
    last_at: datetime
    last_received_at: datetime


async def set_aside(db: Database, tenant_id: uuid.UUID, gateway_id: uuid.UUID) -> list[SetAside]:
    """What ``gateway_id``'s registered meters sent that is kept in quarantine unrated (a
    clock far off, a reading from before 装表 or 过户, a negative register): for the
    installer's page, so a meter whose clock is wrong is noticed."""
    async with db.tenant(tenant_id) as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT device, channel, reason, count(*) AS n, min(measured_at) AS first_at, "
                "max(measured_at) AS last_at, max(received_at) AS rcv "
                "FROM reading_quarantine WHERE gateway_id = :g AND reason <> 'unknown_channel' "
                "GROUP BY device, channel, reason ORDER BY max(received_at) DESC LIMIT 200"
            ),
            {"g": gateway_id},
        )
        return [
            SetAside(r.device, r.channel, r.reason, r.n, r.first_at, r.last_at, r.rcv) for r in rows
        ]


def _quarantine_reason(
    r: Reading, target: _Target | None, latest: datetime, oldest: datetime
) -> str | None:
    """Why ``r`` is kept in quarantine instead of stored and rated, or None. ``latest`` and
    ``oldest``: the times its site takes (received_at, plus :data:`MAX_FUTURE` of clock
    skew, less the site's allowed age). The contract
    has refused what no clock says (before 2000, from 2100); these are the times a meter's
    clock may say but that rating must not take as recent."""
    if target is None:
        return "unknown_channel"
    return unratable(r, latest, oldest, target.installed_at)


def unratable(
    r: Reading, latest: datetime, oldest: datetime, installed_at: datetime | None
) -> str | None:
    """Why a reading of a known channel cannot be stored as it is (see
    :func:`_quarantine_reason`), or None. Also asked of a quarantined reading of a meter
    that is being installed, before it becomes the meter's history (``installed_at`` None:
    history lies before the installation by definition)."""
    at = r.measured_at
    if at > latest:
        return "future_timestamp"
    if at < oldest:
        return "too_old"
    if installed_at is not None and at < installed_at:
        # before the meter was bound to the point: not the point's consumption (a late
        # reading of the previous holder after a 过户, a clock set back before 装表)
        return "before_installation"
    if r.total is not None and r.total < 0:
        return "negative_register"
    return None


_NULL = "\\N"


def _text(value: object) -> str:
    """A value in COPY's text format: every value here is a number, a time, a uuid or a
    boolean, none with a character COPY would need escaped."""
    return _NULL if value is None else str(value)


def _num(value: Decimal | None) -> str:
    """A quantity in COPY's text format. The contract has bounded its magnitude; a value
    written with an exponent (``1E-100000``, beyond PostgreSQL's numeric format) or with
    very many digits is rounded to 12 places first, as no column keeps more."""
    if value is None:
        return _NULL
    text = str(value)
    if len(text) > 40 or "E" in text:
        return f"{value.quantize(_PLACES):f}"
    return text


_PLACES = Decimal("1E-12")


def _line(r: Reading, target: _Target, n: int) -> str:
    """One staged row in COPY's text format. The columns round the values as they are
    stored; rating reads them from there."""
    tou = _NULL if r.tou is None else "{" + ",".join(_num(v) for v in r.tou) + "}"
    supply = _NULL if r.supply is None else ("t" if r.supply is Supply.ON else "f")
    return (
        f"{target.channel_text}\t{r.measured_at.isoformat()}\t{_num(r.total)}\t"
        f"{tou}\t{_num(r.voltage)}\t{_num(r.current)}\t{_num(r.power)}\t{supply}\t"
        f"{_num(r.meter_balance)}\t{_text(r.purchase_count)}\t{target.point_text}\t{n}\n"
    )


async def _insert(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    received_at: datetime,
    rows: list[str],
    careful: bool,
) -> set[int]:
    """Store ``rows`` (:func:`_line`) of the tenant, received at ``received_at``; return the
    places of those not stored. Unless ``careful``, all of them are stored or
    :class:`_Repeated` is raised (the transaction is then aborted); ``careful``, duplicates
    are no-ops."""
    if not rows:
        return set()
    await conn.execute(sa.text(STAGING))
    raw = await conn.get_raw_connection()
    pg = raw.driver_connection
    assert pg is not None
    async with pg.cursor() as cur:
        async with cur.copy(
            f"COPY {STAGED} ({STAGED_COLUMNS}, service_point_id, n) FROM STDIN"
        ) as copy:
            await copy.write("".join(rows))
        params = {"tenant": tenant_id, "received": received_at}
        if not careful:
            try:
                await cur.execute(_MOVE_ALL, params)
            except psycopg.errors.UniqueViolation:
                raise _Repeated from None
            return set()
        await cur.execute(_MOVE, params)
        row = await cur.fetchone()
        if row is not None and row[0] == len(rows):
            return set()
        await cur.execute(_NOT_STORED)
        return {r[0] for r in await cur.fetchall()}


async def store_and_rate(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    lines: list[str],
    points: int,
    received_at: datetime,
    timing: CommandTiming,
) -> tuple[set[int], RatingReport]:
    """Store readings another source than a gateway brings (a field worker's, DESIGN §15)
    and rate them exactly as a gateway's are, in the caller's transaction: ``lines`` made
    by :func:`staged_line`, bound to ``points`` (how many) service points. A reading of a
    channel at a time already stored is not stored again; the places of those not stored
    are returned with the rating's report."""
    skipped = await _insert(conn, tenant_id, received_at, lines, careful=True)
    report = await rate_staged(conn, tenant_id, points, skipped, received_at, timing)
    return skipped, report


def staged_line(r: Reading, channel_id: uuid.UUID, point_id: uuid.UUID, n: int) -> str:
    """The staged row of ``r`` of a channel bound to a point, for :func:`store_and_rate`."""
    return _line(r, _Target(channel_id, point_id), n)


def _count_stored(results: list[IngestResult], ends: list[int], skipped: set[int]) -> None:
    """Each batch's stored and duplicate readings: a stored row belongs to the first batch
    that carried it (a re-sent batch stored with its original counts as duplicates)."""
    start = 0
    for result, end in zip(results, ends, strict=True):
        dup = sum(1 for n in skipped if start <= n < end) if skipped else 0
        result.stored, result.duplicates = end - start - dup, dup
        start = end
