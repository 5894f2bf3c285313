"""The delivery worker: takes due outbox rows ``FOR UPDATE SKIP LOCKED``, applies the
rules (quiet hours, the hourly limit, a phone that is E.164, a template's variables, a
WeChat acceptance to spend), sends through the providers, and records each outcome.

Any number of workers run side by side. A row is *claimed* (``sending``, committed)
before its provider is called, so two workers never send the same message; the outcome
is written after. A worker that dies between the two leaves the row ``sending``: after
``lease_s`` another worker sends it again — unless the provider's status callback has
moved it on meanwhile (it knows the row by the id in its URL), so a message goes twice
only if the worker died after the provider accepted it *and* no callback came
(at-least-once; Twilio has no idempotency key for Messages).

Woken by ``NOTIFY prepay_notify`` (the tenant) the moment a row is written, and sweeping
every tenant once a second for retries and the end of quiet hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.aio import raise_if_cancelled
from cloud.db import Database, pg_array
from notifications import rules, templates
from notifications.providers import Message, Outcome, Provider, Result
from notifications.settings import NotifySettings

log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "prepay_notify"  # cloud.notify.outbox.NOTIFY_CHANNEL
DELIVERED = Counter(
    "prepay_notifications_total", "Notifications by channel and outcome", ["channel", "outcome"]
)

_REQUEUE_LOST = sa.text(
    "UPDATE notification SET status = 'queued', next_attempt_at = :now, updated_at = :now, "
    "reason = 'the worker sending it stopped; sending again' "
    "WHERE status = 'sending' AND claimed_at < :before"
)
_CLAIM = sa.text(
    "WITH due AS (SELECT id FROM notification WHERE status = 'queued' "
    "AND next_attempt_at <= :now ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED) "
    "UPDATE notification n SET status = 'sending', claimed_at = :now, "
    "attempts = n.attempts + 1, updated_at = :now FROM due WHERE n.id = due.id "
    "RETURNING n.id, n.cause_kind, n.template, n.channel, n.language, n.variables, "
    "n.attempts, n.customer_id, n.staff_id, n.account_id, n.site_id"
)
_SPEND = sa.text(
    "UPDATE subscribe_acceptance sa SET remaining = sa.remaining - 1, updated_at = :now "
    "FROM (SELECT s.user_id, s.template_id, u.openid FROM subscribe_acceptance s "
    "JOIN account_binding b ON b.user_id = s.user_id AND b.unbound_at IS NULL "
    "JOIN app_user u ON u.id = s.user_id AND u.openid IS NOT NULL "
    "WHERE b.account_id = :a AND s.template_id = :tmpl AND s.remaining > 0 "
    "ORDER BY s.updated_at, s.user_id LIMIT 1 FOR UPDATE OF s) pick "
    "WHERE sa.user_id = pick.user_id AND sa.template_id = pick.template_id "
    "RETURNING sa.user_id, pick.openid"
)
_GIVE_BACK = sa.text(
    "UPDATE subscribe_acceptance SET remaining = remaining + 1, updated_at = :now "
    "WHERE user_id = :u AND template_id = :tmpl"
)
_NONE_LEFT = sa.text(
    "UPDATE subscribe_acceptance SET remaining = 0, updated_at = :now "
    "WHERE user_id = :u AND template_id = :tmpl"
)
_SENT = sa.text(
    "UPDATE notification SET status = CASE WHEN status = 'sending' THEN 'sent' ELSE status END, "
    "provider_id = :pid, sent_at = :now, segments = coalesce(:seg, segments), "
    "channel = :ch, address = :addr, reason = :reason, error = NULL, updated_at = :now "
    "WHERE id = :id"
)
_RETRY = sa.text(
    "UPDATE notification SET status = 'queued', next_attempt_at = :at, "
    "error = CAST(:err AS jsonb), reason = :reason, channel = :ch, updated_at = :now "
    "WHERE id = :id AND status = 'sending'"
)
_FINAL = sa.text(
    "UPDATE notification SET status = :status, reason = :reason, error = CAST(:err AS jsonb), "
    "channel = :ch, address = :addr, updated_at = :now WHERE id = :id AND status = 'sending'"
)
_DEFER = sa.text(
    "UPDATE notification SET status = 'queued', next_attempt_at = :at, attempts = attempts - 1, "
    "claimed_at = NULL, reason = :reason, updated_at = :now WHERE id = :id"
)


@dataclass(frozen=True)
class Site:
    quiet: rules.QuietHours
    hourly_limit: int


@dataclass
class Job:
    """One claimed row and what the rules made of it."""

    id: uuid.UUID
    kind: str
    template: str
    channel: str | None
    language: str
    variables: dict[str, str]
    attempts: int
    customer_id: uuid.UUID | None
    staff_id: uuid.UUID | None
    account_id: uuid.UUID | None
    site_id: uuid.UUID | None
    phone: str | None = None
    address: str | None = None
    note: str | None = None  # e.g. "no WeChat acceptance left; sent by SMS"
    wechat_user: uuid.UUID | None = None
    wechat_template: str | None = None
    rendered: templates.Rendered | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class NotifyWorker:
    def __init__(
        self,
        db: Database,
        providers: Mapping[str, Provider],
        settings: NotifySettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sweep_s: float = 1.0,
    ) -> None:
        self.db = db
        self.providers = dict(providers)
        self.settings = settings or NotifySettings()
        self.clock = clock
        self.sweep_s = sweep_s
        self._wake: asyncio.Queue[uuid.UUID | None] = asyncio.Queue()
        self.ready = asyncio.Event()

    # -- the loop -------------------------------------------------------------------

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen(), name="notify-listen")
        try:
            while True:
                try:
                    async with asyncio.timeout(self.sweep_s):
                        tenant = await self._wake.get()
                except TimeoutError:
                    try:
                        await self.sweep()
                    except Exception:  # the database away (a failover, a killed backend):
                        raise_if_cancelled()  # the next sweep tries again
                        log.exception("notification sweep failed; retrying")
                    continue
                if tenant is not None:
                    await self._safe_deliver(tenant)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self.close()

    async def close(self) -> None:
        """Close the providers' HTTP sessions."""
        for p in self.providers.values():
            with contextlib.suppress(Exception):
                await p.close()

    async def sweep(self) -> int:
        done = 0
        for tenant in await self.db.tenant_ids():
            done += await self._safe_deliver(tenant)
        return done

    async def _safe_deliver(self, tenant: uuid.UUID) -> int:
        try:
            return await self.deliver(tenant)
        except Exception:  # one tenant's failure must not stop the others
            raise_if_cancelled()
            log.exception("notification delivery failed for tenant %s", tenant)
            return 0

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.db.app_libpq_url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.ready.set()
                    await self._wake.put(None)
                    async for note in conn.notifies():
                        with contextlib.suppress(ValueError):
                            await self._wake.put(uuid.UUID(note.payload))
            except psycopg.OperationalError as exc:
                self.ready.clear()
                log.warning("notify LISTEN connection lost (%s); retrying", exc)
                await asyncio.sleep(1.0)

    # -- one tenant -----------------------------------------------------------------

    async def deliver(self, tenant_id: uuid.UUID) -> int:
        """Deliver this tenant's due messages, batch after batch; returns how many rows
        reached an outcome (sent, failed, skipped) this call."""
        total = 0
        while True:
            jobs, finished, claimed = await self._claim(tenant_id)
            total += finished
            if jobs:
                await self._send_all(tenant_id, jobs)
                total += len(jobs)
            if claimed < self.settings.batch:
                return total

    async def _claim(self, tenant_id: uuid.UUID) -> tuple[list[Job], int, int]:
        now = self.clock()
        async with self.db.tenant(tenant_id) as conn:
            await conn.execute(
                _REQUEUE_LOST,
                {"now": now, "before": now - timedelta(seconds=self.settings.lease_s)},
            )
            rows = (await conn.execute(_CLAIM, {"now": now, "n": self.settings.batch})).all()
            if not rows:
                return [], 0, 0
            jobs = [
                Job(
                    r.id,
                    r.cause_kind,
                    r.template,
                    r.channel,
                    r.language,
                    dict(r.variables or {}),
                    r.attempts,
                    r.customer_id,
                    r.staff_id,
                    r.account_id,
                    r.site_id,
                )
                for r in rows
            ]
            sites = await _sites(conn, {j.site_id for j in jobs if j.site_id})
            phones = await _phones(conn, jobs)
            recent = await _sent_last_hour(
                conn, {j.customer_id for j in jobs if j.customer_id}, now
            )
            ready: list[Job] = []
            finished = 0
            for job in jobs:
                job.phone = phones.get(job.staff_id or job.customer_id)  # type: ignore[arg-type]
                verdict = await self._plan(conn, job, sites.get(job.site_id), recent, now)
                if verdict is None:
                    ready.append(job)
                elif isinstance(verdict, datetime):
                    pass  # deferred (written by _plan)
                else:
                    finished += 1
            return ready, finished, len(rows)

    async def _plan(
        self,
        conn: AsyncConnection,
        job: Job,
        site: Site | None,
        recent: dict[uuid.UUID, list[datetime]],
        now: datetime,
    ) -> datetime | str | None:
        """None: send it; a datetime: deferred until then; a str: finished (skipped or
        failed) with that reason. Writes deferrals and finishes itself."""
        if site is not None:
            until = site.quiet.release(job.kind, now)
            why = "quiet hours at the site"
            if until is None and job.customer_id is not None:
                sent = recent[job.customer_id]
                until = rules.over_limit(job.kind, sent, site.hourly_limit, now)
                why = f"at most {site.hourly_limit} messages an hour to a customer"
            if until is not None:
                await conn.execute(
                    _DEFER, {"at": until, "reason": f"waiting: {why}", "now": now, "id": job.id}
                )
                return until
        if job.channel is None:
            return await self._finish(
                conn, job, "skipped", "the customer has no notification channel", now
            )
        try:
            job.rendered = templates.render(job.template, job.language, job.variables)
        except (templates.MissingVariable, templates.UnknownTemplate) as exc:
            return await self._finish(conn, job, "failed", str(exc), now)
        if job.channel == "wechat":
            if "wechat" in self.providers and job.account_id is not None:
                tmpl = self.settings.wechat_template(job.kind)
                spent = (
                    await conn.execute(_SPEND, {"a": job.account_id, "tmpl": tmpl, "now": now})
                ).first()
                if spent is not None:
                    job.wechat_user, job.wechat_template = spent.user_id, tmpl
                    job.address = spent.openid
                    if job.customer_id:
                        recent[job.customer_id].append(now)
                    return None
            job.note = (
                "no WeChat acceptance left; sent by SMS"
                if "wechat" in self.providers
                else "WeChat is not set up here; sent by SMS"
            )
            job.channel = "sms"
        if job.channel in ("sms", "log"):
            try:
                job.address = rules.e164(job.phone)
            except rules.BadPhone as exc:
                if job.channel == "sms":
                    return await self._finish(conn, job, "failed", str(exc), now)
                job.address = job.phone or str(job.customer_id or job.staff_id)
        elif job.channel not in self.providers:
            return await self._finish(conn, job, "failed", f"unknown channel {job.channel}", now)
        if job.customer_id:
            recent[job.customer_id].append(now)
        return None

    async def _finish(
        self, conn: AsyncConnection, job: Job, status: str, reason: str, now: datetime
    ) -> str:
        await conn.execute(
            _FINAL,
            {
                "status": status,
                "reason": reason,
                "err": None,
                "ch": job.channel,
                "addr": job.address,
                "now": now,
                "id": job.id,
            },
        )
        DELIVERED.labels(job.channel or "none", status).inc()
        return reason

    def _message(self, tenant_id: uuid.UUID, job: Job) -> Message:
        assert job.rendered is not None and job.address is not None
        return Message(
            tenant_id,
            job.id,
            job.kind,
            job.address,
            job.rendered.text,
            job.wechat_template,
            templates.wechat_data(job.rendered) if job.channel == "wechat" else {},
        )

    async def _send_one(self, tenant_id: uuid.UUID, job: Job, gate: asyncio.Semaphore) -> Result:
        provider = self.providers.get(job.channel or "")
        if provider is None:
            return Result(Outcome.PERMANENT, answer={"error": f"no provider for {job.channel}"})
        async with gate:
            try:
                return await provider.send(self._message(tenant_id, job))
            except Exception as exc:  # a provider's bug must not lose the row
                raise_if_cancelled()
                log.exception("provider %s failed on %s", job.channel, job.id)
                return Result(Outcome.TRANSIENT, answer={"error": f"{type(exc).__name__}: {exc}"})

    async def _send_all(self, tenant_id: uuid.UUID, jobs: list[Job]) -> None:
        gate = asyncio.Semaphore(self.settings.concurrency)
        results = list(await asyncio.gather(*(self._send_one(tenant_id, j, gate) for j in jobs)))
        # WeChat said the user has no subscription left (43101): the same as none recorded
        fallback = [i for i, r in enumerate(results) if r.outcome is Outcome.NO_CONSENT]
        lost: list[tuple[uuid.UUID, str]] = []
        for i in fallback:
            j = jobs[i]
            assert j.wechat_user is not None and j.wechat_template is not None
            lost.append((j.wechat_user, j.wechat_template))
            sms = replace(
                j, channel="sms", note="WeChat refused (no subscription left); sent by SMS"
            )
            try:
                sms.address = rules.e164(j.phone)
                sms.wechat_user = None
                results[i] = await self._send_one(tenant_id, sms, gate)
            except rules.BadPhone as exc:
                results[i] = Result(Outcome.PERMANENT, answer={"error": str(exc)})
            jobs[i] = sms
        await self._record(tenant_id, jobs, results, lost)

    async def _record(
        self,
        tenant_id: uuid.UUID,
        jobs: list[Job],
        results: list[Result],
        lost: list[tuple[uuid.UUID, str]],
    ) -> None:
        now = self.clock()
        sent: list[dict[str, Any]] = []
        retry: list[dict[str, Any]] = []
        final: list[dict[str, Any]] = []
        give_back: list[dict[str, Any]] = []
        for job, res in zip(jobs, results, strict=True):
            err = json.dumps(res.answer, ensure_ascii=False, default=str) if res.answer else None
            DELIVERED.labels(job.channel or "none", res.outcome.value).inc()
            if res.outcome is Outcome.ACCEPTED:
                sent.append(
                    {
                        "pid": res.provider_id,
                        "now": now,
                        "seg": res.segments,
                        "ch": job.channel,
                        "addr": job.address,
                        "reason": job.note,
                        "id": job.id,
                    }
                )
                continue
            if job.wechat_user is not None and job.wechat_template is not None:
                give_back.append({"u": job.wechat_user, "tmpl": job.wechat_template, "now": now})
            if res.outcome is Outcome.TRANSIENT and job.attempts < rules.MAX_ATTEMPTS:
                at = now + rules.backoff(job.attempts)
                retry.append(
                    {
                        "at": at,
                        "err": err,
                        "reason": f"provider unavailable (try {job.attempts}); retrying",
                        "ch": job.channel,
                        "now": now,
                        "id": job.id,
                    }
                )
            else:
                why = (
                    f"gave up after {job.attempts} tries"
                    if res.outcome is Outcome.TRANSIENT
                    else "refused by the provider"
                )
                final.append(
                    {
                        "status": "failed",
                        "reason": why,
                        "err": err,
                        "ch": job.channel,
                        "addr": job.address,
                        "now": now,
                        "id": job.id,
                    }
                )
        async with self.db.tenant(tenant_id) as conn:
            if sent:
                await conn.execute(_SENT, sent)
            if retry:
                await conn.execute(_RETRY, retry)
            if final:
                await conn.execute(_FINAL, final)
            if give_back:
                await conn.execute(_GIVE_BACK, give_back)
            for user, tmpl in lost:
                await conn.execute(_NONE_LEFT, {"u": user, "tmpl": tmpl, "now": now})


async def _sites(conn: AsyncConnection, ids: set[uuid.UUID]) -> dict[uuid.UUID | None, Site]:
    if not ids:
        return {}
    rows = await conn.execute(
        sa.text(
            "SELECT id, timezone, quiet_start, quiet_end, notify_hourly_limit FROM site "
            "WHERE id = ANY(CAST(:ids AS uuid[]))"
        ),
        {"ids": pg_array(ids)},
    )
    return {
        r.id: Site(rules.QuietHours(r.quiet_start, r.quiet_end, r.timezone), r.notify_hourly_limit)
        for r in rows
    }


async def _phones(conn: AsyncConnection, jobs: list[Job]) -> dict[uuid.UUID, str | None]:
    customers = {j.customer_id for j in jobs if j.customer_id}
    staff = {j.staff_id for j in jobs if j.staff_id}
    out: dict[uuid.UUID, str | None] = {}
    if customers:
        rows = await conn.execute(
            sa.text("SELECT id, phone FROM customer WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": pg_array(customers)},
        )
        out.update({r.id: r.phone for r in rows})
    if staff:
        rows = await conn.execute(
            sa.text("SELECT id, phone FROM notify_staff WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": pg_array(staff)},
        )
        out.update({r.id: r.phone for r in rows})
    return out


async def _sent_last_hour(
    conn: AsyncConnection, customers: set[uuid.UUID], now: datetime
) -> defaultdict[uuid.UUID, list[datetime]]:
    out: defaultdict[uuid.UUID, list[datetime]] = defaultdict(list)
    if customers:
        rows = await conn.execute(
            sa.text(
                "SELECT customer_id, sent_at FROM notification "
                "WHERE customer_id = ANY(CAST(:ids AS uuid[])) AND sent_at > :since "
                "AND sent_at <= :now AND cause_kind <> ALL(CAST(:exempt AS text[]))"
            ),
            {
                "ids": pg_array(customers),
                "since": now - timedelta(hours=1),
                "now": now,
                "exempt": "{" + ",".join(sorted(rules.LIMIT_EXEMPT)) + "}",
            },
        )
        for r in rows:
            out[r.customer_id].append(r.sent_at)
    return out


def providers_from(settings: NotifySettings) -> dict[str, Provider]:
    """The providers the settings name: SMS by Twilio (or the log), WeChat when an
    appid is set, and the log."""
    from notifications.providers.log import LogProvider

    out: dict[str, Provider] = {"log": LogProvider()}
    if settings.sms_provider == "twilio":
        from notifications.providers.twilio_sms import TwilioSms

        if settings.twilio_auth_token is None:
            raise ValueError("PREPAY_NOTIFY_TWILIO_AUTH_TOKEN is not set")
        out["sms"] = TwilioSms(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            settings.twilio_from,
            settings.public_base_url,
            settings.twilio_base_url,
        )
    else:
        sms = LogProvider()
        sms.channel = "sms"
        out["sms"] = sms
    if settings.wechat_appid and settings.wechat_secret is not None:
        from notifications.providers.wechat import WeChatSubscribe

        out["wechat"] = WeChatSubscribe(
            settings.wechat_appid,
            settings.wechat_secret.get_secret_value(),
            settings.wechat_base_url,
            settings.wechat_page,
        )
    return out
