"""The notification outbox: every event that should tell someone writes its
``notification`` rows here, in the event's own transaction, so a message exists exactly
when its event committed (DESIGN §8). ``notifications.worker`` delivers them.

One row per cause and recipient (unique ``(tenant, cause_kind, cause_key, recipient)``,
``ON CONFLICT DO NOTHING``): a control event's key is its point and the minute it
happened, so a threshold crossed twice in a minute is one message; a payment's key is the
payment's own (``sale:R00000012``), a replay of it changes nothing.

Each row carries what its template needs (point, account, site, amounts, days of credit
left) as JSON, the customer's language and first preferred channel, and wakes the
delivery workers (``NOTIFY prepay_notify``, payload the tenant).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.db import pg_array, pg_text_array

NOTIFY_CHANNEL = "prepay_notify"

#: control_event kinds that tell the customer (all of them, today)
CONTROL_KINDS = (
    "low_balance_1",
    "low_balance_2",
    "emergency_credit",
    "arrears_notice",
    "cut_deferred",
    "supply_cut",
    "supply_restored",
    "keep_power_expired",
    "override_expired",
)
PAYMENT_KINDS = ("topup_received", "refund_paid")
DUNNING_KINDS = ("arrears_reminder",)  # sent by staff to a selection (催费)
STAFF_KINDS = ("gateway_offline", "work_order_assigned")
ALL_KINDS = (
    *CONTROL_KINDS,
    *PAYMENT_KINDS,
    *DUNNING_KINDS,
    "recharge_failed",
    *STAFF_KINDS,
)

# The customer's channel, language and mutes: no preference row is SMS in Chinese.
_PREF_COLUMNS = """
    CASE WHEN pref.customer_id IS NULL THEN 'sms' ELSE pref.channels[1] END,
    coalesce(pref.language, 'zh_CN')"""
_MUTED = "coalesce(CAST(:kind AS text) = ANY(pref.muted), false)"

# Days of credit left at the wallet's spend of the last 7 days (usage entries).
_DAYS_LEFT = """
LEFT JOIN LATERAL (
    SELECT CASE WHEN sum(p.amount) > 0 AND la.balance > 0
           THEN floor(la.balance / (sum(p.amount) / 7))::bigint END AS days
    FROM ledger_account la
    LEFT JOIN (posting p JOIN journal_entry je ON je.id = p.entry_id AND je.kind = 'usage'
               AND je.effective_at > CAST(:now AS timestamptz) - interval '7 days')
         ON p.ledger_account_id = la.id AND p.amount > 0
    WHERE la.id = a.wallet_id GROUP BY la.balance
) dl ON true"""

_CONTROL = f"""
INSERT INTO notification (id, tenant_id, cause_kind, cause_key, recipient, customer_id,
    account_id, service_point_id, site_id, channel, language, template, variables, status,
    reason, next_attempt_at, created_at, updated_at)
SELECT gen_random_uuid(), :t, e.kind,
    e.service_point_id::text || ':' || floor(extract(epoch FROM e.at) / 60)::bigint::text,
    'customer:' || c.id::text, c.id, a.id, sp.id, sp.site_id, {_PREF_COLUMNS}, e.kind,
    jsonb_strip_nulls(jsonb_build_object(
        'point', sp.name, 'account', a.number, 'site', s.name, 'customer', c.name,
        'balance', e.balance::text, 'days_left', dl.days::text, 'detail', e.detail)),
    CASE WHEN coalesce(e.kind = ANY(pref.muted), false) THEN 'skipped' ELSE 'queued' END,
    CASE WHEN coalesce(e.kind = ANY(pref.muted), false)
         THEN 'the customer turned this kind of message off' END,
    e.at, e.at, e.at
FROM control_event e
JOIN service_point sp ON sp.id = e.service_point_id AND NOT sp.common_area
JOIN account a ON a.id = sp.account_id
JOIN customer c ON c.id = a.customer_id
JOIN site s ON s.id = sp.site_id
LEFT JOIN notify_preference pref ON pref.customer_id = c.id
{_DAYS_LEFT}
WHERE e.id = ANY(CAST(:ids AS uuid[])) AND e.kind = ANY(CAST(:kinds AS text[]))
ON CONFLICT ON CONSTRAINT notification_once DO NOTHING
"""

_ACCOUNT = f"""
INSERT INTO notification (id, tenant_id, cause_kind, cause_key, recipient, customer_id,
    account_id, service_point_id, site_id, channel, language, template, variables, status,
    reason, next_attempt_at, created_at, updated_at)
SELECT gen_random_uuid(), :t, CAST(:kind AS text), :key, 'customer:' || c.id::text, c.id, a.id,
    sp.id, sp.site_id, {_PREF_COLUMNS}, CAST(:kind AS text),
    jsonb_strip_nulls(CAST(:vars AS jsonb) || jsonb_build_object(
        'account', a.number, 'site', s.name, 'customer', c.name, 'point', sp.name,
        'balance', la.balance::text)),
    CASE WHEN {_MUTED} THEN 'skipped' ELSE 'queued' END,
    CASE WHEN {_MUTED} THEN 'the customer turned this kind of message off' END,
    :now, :now, :now
FROM account a
JOIN customer c ON c.id = a.customer_id
JOIN ledger_account la ON la.id = a.wallet_id
LEFT JOIN LATERAL (
    SELECT id, site_id, name FROM service_point WHERE account_id = a.id AND NOT common_area
    ORDER BY removed_at IS NOT NULL, name LIMIT 1
) sp ON true
LEFT JOIN site s ON s.id = sp.site_id
LEFT JOIN notify_preference pref ON pref.customer_id = c.id
WHERE a.id = :a
ON CONFLICT ON CONSTRAINT notification_once DO NOTHING
"""

_POINT = f"""
INSERT INTO notification (id, tenant_id, cause_kind, cause_key, recipient, customer_id,
    account_id, service_point_id, site_id, channel, language, template, variables, status,
    reason, next_attempt_at, created_at, updated_at)
SELECT gen_random_uuid(), :t, CAST(:kind AS text), :key, 'customer:' || c.id::text, c.id,
    a.id, sp.id, sp.site_id, {_PREF_COLUMNS}, CAST(:kind AS text),
    jsonb_strip_nulls(CAST(:vars AS jsonb) || jsonb_build_object(
        'account', a.number, 'site', s.name, 'customer', c.name, 'point', sp.name,
        'balance', la.balance::text)),
    CASE WHEN {_MUTED} THEN 'skipped' ELSE 'queued' END,
    CASE WHEN {_MUTED} THEN 'the customer turned this kind of message off' END,
    :now, :now, :now
FROM service_point sp
JOIN account a ON a.id = sp.account_id
JOIN customer c ON c.id = a.customer_id
JOIN ledger_account la ON la.id = a.wallet_id
JOIN site s ON s.id = sp.site_id
LEFT JOIN notify_preference pref ON pref.customer_id = c.id
WHERE sp.id = :p
ON CONFLICT ON CONSTRAINT notification_once DO NOTHING
"""

_STAFF = """
INSERT INTO notification (id, tenant_id, cause_kind, cause_key, recipient, staff_id,
    site_id, channel, language, template, variables, status, next_attempt_at, created_at,
    updated_at)
SELECT gen_random_uuid(), :t, CAST(:kind AS text), :key, 'staff:' || st.id::text, st.id, st.site_id,
    st.channel, st.language, CAST(:kind AS text),
    jsonb_strip_nulls(CAST(:vars AS jsonb) || jsonb_build_object('site', s.name)),
    'queued', :now, :now, :now
FROM notify_staff st JOIN site s ON s.id = st.site_id
WHERE st.site_id = :s AND st.active AND CAST(:kind AS text) = ANY(st.kinds)
ON CONFLICT ON CONSTRAINT notification_once DO NOTHING
"""

_GATEWAYS_OFFLINE = """
INSERT INTO notification (id, tenant_id, cause_kind, cause_key, recipient, staff_id,
    site_id, channel, language, template, variables, status, next_attempt_at, created_at,
    updated_at)
SELECT gen_random_uuid(), :t, 'gateway_offline',
    g.id::text || ':' || floor(extract(epoch FROM g.last_seen_at))::bigint::text,
    'staff:' || st.id::text, st.id, st.site_id, st.channel, st.language, 'gateway_offline',
    jsonb_build_object('site', s.name, 'gateway', g.name, 'code', g.code,
        'minutes', floor(extract(epoch FROM (CAST(:now AS timestamptz) - g.last_seen_at))
                         / 60)::bigint::text),
    'queued', :now, :now, :now
FROM gateway g
JOIN site s ON s.id = g.site_id
JOIN notify_staff st ON st.site_id = g.site_id AND st.active
     AND 'gateway_offline' = ANY(st.kinds)
WHERE NOT g.online AND g.last_seen_at IS NOT NULL
  AND g.last_seen_at < CAST(:now AS timestamptz) - make_interval(mins => s.gateway_offline_minutes)
ON CONFLICT ON CONSTRAINT notification_once DO NOTHING
"""


async def _wake(conn: AsyncConnection, tenant_id: uuid.UUID, written: int) -> int:
    if written:
        await conn.execute(
            sa.text("SELECT pg_notify(:c, :t)"), {"c": NOTIFY_CHANNEL, "t": str(tenant_id)}
        )
    return written


async def control_events(
    conn: AsyncConnection, tenant_id: uuid.UUID, event_ids: Sequence[uuid.UUID], now: datetime
) -> int:
    """The customers' messages of control events just recorded (``control_event`` ids);
    marks the events ``notified_at`` (handed to the outbox). Returns the rows written."""
    if not event_ids:
        return 0
    ids = pg_array(event_ids)
    result = await conn.execute(
        sa.text(_CONTROL),
        {"t": tenant_id, "ids": ids, "kinds": pg_text_array(CONTROL_KINDS), "now": now},
    )
    await conn.execute(
        sa.text("UPDATE control_event SET notified_at = :now WHERE id = ANY(CAST(:ids AS uuid[]))"),
        {"now": now, "ids": ids},
    )
    return await _wake(conn, tenant_id, result.rowcount)


async def _write(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    sql: str,
    kind: str,
    key: str,
    variables: dict[str, str],
    now: datetime,
    **recipient: uuid.UUID,
) -> int:
    """One of the outbox's INSERT … SELECTs for ``kind`` keyed ``key``, its recipient named
    by ``recipient`` (``a`` an account, ``p`` a point, ``s`` a site's staff); wakes the
    workers when it wrote a row."""
    result = await conn.execute(
        sa.text(sql),
        {
            "t": tenant_id,
            "kind": kind,
            "key": key[:200],
            "vars": json.dumps(variables, ensure_ascii=False),
            "now": now,
            **recipient,
        },
    )
    return await _wake(conn, tenant_id, result.rowcount)


async def _account_event(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    kind: str,
    account_id: uuid.UUID,
    key: str,
    variables: dict[str, str],
    now: datetime,
) -> int:
    return await _write(conn, tenant_id, _ACCOUNT, kind, key, variables, now, a=account_id)


async def topup_received(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    amount: Decimal,
    cause: str,
    now: datetime,
) -> int:
    """A top-up credited the account (counter sale, WeChat Pay, a balance moved in): one
    "received" message to its customer, keyed by the payment's cause."""
    return await _account_event(
        conn, tenant_id, "topup_received", account_id, cause, {"amount": str(amount)}, now
    )


async def arrears_reminder(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    owed: Decimal,
    days: int,
    batch: str,
    now: datetime,
) -> int:
    """催费: staff remind an account in arrears (one of a selection sent together as
    ``batch``): one message to its customer per batch, with what it owes and since when.
    Returns 1 when written, 0 when this batch already reminded it."""
    variables = {"owed": f"{owed:.2f}", "days_owed": str(days)}
    return await _account_event(
        conn, tenant_id, "arrears_reminder", account_id, f"remind:{batch}", variables, now
    )


async def refund_paid(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    amount: Decimal,
    cause: str,
    now: datetime,
) -> int:
    """A balance was refunded to the customer (消户, 过户 with refund)."""
    return await _account_event(
        conn, tenant_id, "refund_paid", account_id, cause, {"amount": str(amount)}, now
    )


async def recharge_failed(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    point_id: uuid.UUID,
    detail: dict[str, str],
    now: datetime,
) -> int:
    """A meter-controlled point's recharge did not reach the meter (failed or expired):
    the customer learns the money is safe in the wallet. Keyed by the purchase count."""
    key = f"{point_id}:{detail.get('purchase_count', '')}:{detail.get('cause', '')}"
    variables = {"amount": detail.get("amount", "")} if detail.get("amount") else {}
    return await _write(conn, tenant_id, _POINT, "recharge_failed", key, variables, now, p=point_id)


async def staff_event(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    site_id: uuid.UUID,
    kind: str,
    key: str,
    variables: dict[str, str],
    now: datetime,
) -> int:
    """A staff event: one message to each active staff member of the site who takes
    this kind (``notify_staff.kinds``)."""
    return await _write(conn, tenant_id, _STAFF, kind, key, variables, now, s=site_id)


async def work_order_assigned(
    conn: AsyncConnection,
    tenant_id: uuid.UUID,
    site_id: uuid.UUID,
    work_order_id: uuid.UUID,
    kind: str,
    point: str,
    now: datetime,
) -> int:
    """A work order was assigned at a site: its staff who take work orders are told."""
    return await staff_event(
        conn,
        tenant_id,
        site_id,
        "work_order_assigned",
        str(work_order_id),
        {"work_order": kind, "point": point},
        now,
    )


async def gateways_offline(conn: AsyncConnection, tenant_id: uuid.UUID, now: datetime) -> int:
    """Staff of each site whose gateway has been offline longer than the site allows
    (``site.gateway_offline_minutes``): once per offline episode (keyed by the gateway's
    last sign of life). Run by the dispatcher's control sweep."""
    result = await conn.execute(sa.text(_GATEWAYS_OFFLINE), {"t": tenant_id, "now": now})
    return await _wake(conn, tenant_id, result.rowcount)
