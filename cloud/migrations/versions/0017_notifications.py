"""Notifications (DESIGN §8, issue 16): the outbox ``notification`` (one row per cause and
recipient, written in the event's own transaction, delivered by ``notifications/``), the
staff to tell per site (``notify_staff``), and a site's quiet hours, how long its gateways
may be offline before staff are told, and how many messages a customer gets an hour.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql as pg

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
NEW_TABLES = ("notify_staff", "notification")
STATUSES = ("queued", "sending", "sent", "delivered", "undelivered", "failed", "skipped")


def _tenant_col() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False)


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    op.add_column(
        "site", sa.Column("quiet_start", sa.Time(), nullable=True, server_default="22:00")
    )
    op.add_column("site", sa.Column("quiet_end", sa.Time(), nullable=True, server_default="08:00"))
    op.add_column(
        "site",
        sa.Column("gateway_offline_minutes", sa.Integer(), nullable=False, server_default="30"),
    )
    op.add_column(
        "site", sa.Column("notify_hourly_limit", sa.Integer(), nullable=False, server_default="6")
    )
    op.create_check_constraint(
        "site_quiet_hours", "site", "(quiet_start IS NULL) = (quiet_end IS NULL)"
    )
    op.create_check_constraint(
        "site_gateway_offline_minutes", "site", "gateway_offline_minutes BETWEEN 1 AND 10080"
    )
    op.create_check_constraint(
        "site_notify_hourly_limit", "site", "notify_hourly_limit BETWEEN 1 AND 1000"
    )
    op.create_table(
        "notify_staff",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("site_id", sa.Uuid(), sa.ForeignKey("site.id"), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("phone", sa.String(), nullable=True),
        sa.Column("channel", sa.String(), nullable=False, server_default="sms"),
        sa.Column("language", sa.String(), nullable=False, server_default="zh_CN"),
        sa.Column(
            "kinds",
            pg.ARRAY(sa.Text()),
            nullable=False,
            server_default="{gateway_offline,work_order_assigned}",
        ),
        sa.Column("active", sa.Boolean(), nullable=False, server_default="true"),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_notify_staff_site", "notify_staff", ["site_id"])
    op.create_table(
        "notification",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("cause_kind", sa.String(40), nullable=False),
        sa.Column("cause_key", sa.String(200), nullable=False),
        sa.Column("recipient", sa.String(60), nullable=False),  # customer:<id> | staff:<id>
        sa.Column("customer_id", sa.Uuid(), sa.ForeignKey("customer.id"), nullable=True),
        sa.Column("staff_id", sa.Uuid(), sa.ForeignKey("notify_staff.id"), nullable=True),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("account.id"), nullable=True),
        sa.Column("service_point_id", sa.Uuid(), sa.ForeignKey("service_point.id"), nullable=True),
        sa.Column("site_id", sa.Uuid(), sa.ForeignKey("site.id"), nullable=True),
        sa.Column("channel", sa.String(12), nullable=True),  # sms | wechat | log
        sa.Column("language", sa.String(8), nullable=False, server_default="zh_CN"),
        sa.Column("template", sa.String(40), nullable=False),
        sa.Column("variables", pg.JSONB(), nullable=False, server_default="{}"),
        sa.Column("status", sa.String(12), nullable=False, server_default="queued"),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("address", sa.String(), nullable=True),  # the phone or openid used
        sa.Column("provider_id", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.Column("error", pg.JSONB(), nullable=True),  # the provider's last answer
        sa.Column("created_at", TS, nullable=False),
        sa.Column("claimed_at", TS, nullable=True),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("status_at", TS, nullable=True),  # the provider's last status
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint(
            "tenant_id", "cause_kind", "cause_key", "recipient", name="notification_once"
        ),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")",
            name="notification_status",
        ),
    )
    op.create_index(
        "notification_due",
        "notification",
        ["tenant_id", "next_attempt_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "notification_in_flight",
        "notification",
        ["tenant_id", "claimed_at"],
        postgresql_where=sa.text("status = 'sending'"),
    )
    op.create_index("notification_customer", "notification", ["customer_id", "created_at"])
    op.create_index("notification_sent", "notification", ["tenant_id", "sent_at"])
    for table in NEW_TABLES:
        op.create_index(f"ix_{table}_tenant_id", table, ["tenant_id"])
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO {app}")
    op.execute(f"GRANT DELETE ON notify_staff TO {app}")


def downgrade() -> None:
    for table in reversed(NEW_TABLES):
        op.drop_table(table)
    for name in ("site_notify_hourly_limit", "site_gateway_offline_minutes", "site_quiet_hours"):
        op.drop_constraint(name, "site")
    for column in ("notify_hourly_limit", "gateway_offline_minutes", "quiet_end", "quiet_start"):
        op.drop_column("site", column)
