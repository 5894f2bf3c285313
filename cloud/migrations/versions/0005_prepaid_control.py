"""Prepaid control: per-point control settings and state (alarms, notice, keep-power,
overrides, the meter's mirrored balance and purchase count), per-site friendly hours,
control events for the notifications worker, keep-power in the supply twin.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TENANT_EXPR = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    site_columns = [
        sa.Column("friendly_night_start", sa.Time(), nullable=True, server_default="22:00"),
        sa.Column("friendly_night_end", sa.Time(), nullable=True, server_default="08:00"),
        sa.Column("friendly_weekends", sa.Boolean(), nullable=False, server_default="true"),
        sa.Column("friendly_holidays", sa.Boolean(), nullable=False, server_default="true"),
        sa.Column("notice_minutes", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("alarm_hysteresis", MONEY, nullable=False, server_default="1.00"),
    ]
    for column in site_columns:
        op.add_column("site", column)
    op.create_check_constraint("site_notice", "site", "notice_minutes >= 0")
    for name in ("alarm1", "alarm2"):
        op.add_column("service_point", sa.Column(name, MONEY, nullable=True))
    op.add_column(
        "service_point",
        sa.Column("emergency_credit", MONEY, nullable=False, server_default="0"),
    )
    op.create_check_constraint(
        "service_point_control",
        "service_point",
        "credit_limit >= 0 AND emergency_credit >= 0 AND control_mode IN ('cloud', 'meter') "
        "AND (alarm1 IS NULL OR alarm2 IS NULL OR alarm1 >= alarm2)",
    )
    op.add_column(
        "device", sa.Column("close_only", sa.Boolean(), nullable=False, server_default="false")
    )
    op.add_column("supply_twin", sa.Column("desired_keep", sa.Boolean(), nullable=True))
    op.add_column("supply_twin", sa.Column("reported_keep", sa.Boolean(), nullable=True))
    op.add_column("supply_twin", sa.Column("reported_keep_at", TS, nullable=True))
    op.add_column(
        "device_command",
        sa.Column("origin", sa.String(length=40), nullable=False, server_default="policy"),
    )
    op.add_column("device_command", sa.Column("service_point_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        "device_command_point", "device_command", "service_point", ["service_point_id"], ["id"]
    )
    op.execute(
        "CREATE INDEX device_command_channel_open ON device_command (channel_id) "
        "WHERE state IN ('queued', 'sent')"
    )

    op.create_table(
        "control_state",
        sa.Column("service_point_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("supply", sa.String(length=3), nullable=True),
        sa.Column("reason", sa.String(), nullable=False, server_default=""),
        sa.Column("alarm_level", sa.SmallInteger(), nullable=False, server_default="0"),
        sa.Column("emergency", sa.Boolean(), nullable=False, server_default="false"),
        sa.Column("notice_at", TS, nullable=True),
        sa.Column("deferred_until", TS, nullable=True),
        sa.Column("keep_power_by", sa.String(), nullable=True),
        sa.Column("keep_power_reason", sa.String(), nullable=True),
        sa.Column("keep_power_until", TS, nullable=True),
        sa.Column("override", sa.String(length=3), nullable=True),
        sa.Column("override_by", sa.String(), nullable=True),
        sa.Column("override_reason", sa.String(), nullable=True),
        sa.Column("override_until", TS, nullable=True),
        sa.Column("override_until_credit", sa.Boolean(), nullable=False, server_default="false"),
        sa.Column("recheck_at", TS, nullable=True),
        sa.Column("meter_balance", MONEY, nullable=True),
        sa.Column("meter_balance_at", TS, nullable=True),
        sa.Column("purchase_count", sa.Integer(), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["service_point_id"], ["service_point.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("service_point_id"),
        sa.CheckConstraint(
            "supply IN ('on', 'off') AND (override IS NULL OR override IN ('on', 'off'))",
            name="control_state_values",
        ),
    )
    op.create_index("ix_control_state_tenant_id", "control_state", ["tenant_id"])
    op.execute(
        "CREATE INDEX control_state_recheck ON control_state (recheck_at) "
        "WHERE recheck_at IS NOT NULL"
    )
    op.create_table(
        "control_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("service_point_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("balance", MONEY, nullable=True),
        sa.Column("detail", sa.String(), nullable=False, server_default=""),
        sa.Column("actor", sa.String(), nullable=False, server_default="policy"),
        sa.Column("notified_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["service_point_id"], ["service_point.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_control_event_tenant_id", "control_event", ["tenant_id"])
    op.create_index("control_event_point", "control_event", ["service_point_id", "at"])
    for table in ("control_state", "control_event"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {TENANT_EXPR}) WITH CHECK (tenant_id = {TENANT_EXPR})"
        )
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON control_state TO {app}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON control_event TO {app}")


def downgrade() -> None:
    op.drop_table("control_event")
    op.drop_table("control_state")
    op.execute("DROP INDEX device_command_channel_open")
    op.drop_constraint("device_command_point", "device_command")
    op.drop_column("device_command", "service_point_id")
    op.drop_column("device_command", "origin")
    for column in ("reported_keep_at", "reported_keep", "desired_keep"):
        op.drop_column("supply_twin", column)
    op.drop_column("device", "close_only")
    op.drop_constraint("service_point_control", "service_point")
    for column in ("emergency_credit", "alarm2", "alarm1"):
        op.drop_column("service_point", column)
    op.drop_constraint("site_notice", "site")
    for column in (
        "alarm_hysteresis",
        "notice_minutes",
        "friendly_holidays",
        "friendly_weekends",
        "friendly_night_end",
        "friendly_night_start",
    ):
        op.drop_column("site", column)
