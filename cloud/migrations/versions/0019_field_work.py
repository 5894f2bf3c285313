"""Field work (DESIGN §15, issue 19): meter books (表册) and the points on their routes,
the field workers assigned to them, reading cycles with a task per point to read by hand,
and the readings (or anomalies) field workers upload under the phone's own ids.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
NEW_TABLES = (
    "meter_book",
    "meter_book_point",
    "meter_book_worker",
    "reading_cycle",
    "reading_task",
    "field_reading",
)


def _tenant_col() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False)


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    op.create_table(
        "meter_book",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("site_id", sa.Uuid(), sa.ForeignKey("site.id"), nullable=False),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("tenant_id", "code", name="meter_book_code"),
    )
    op.create_table(
        "meter_book_point",
        sa.Column("book_id", sa.Uuid(), sa.ForeignKey("meter_book.id"), primary_key=True),
        sa.Column(
            "service_point_id", sa.Uuid(), sa.ForeignKey("service_point.id"), primary_key=True
        ),
        _tenant_col(),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.UniqueConstraint("service_point_id", name="meter_book_point_once"),
    )
    op.create_table(
        "meter_book_worker",
        sa.Column("book_id", sa.Uuid(), sa.ForeignKey("meter_book.id"), primary_key=True),
        sa.Column("operator_id", sa.Uuid(), sa.ForeignKey("operator.id"), primary_key=True),
        _tenant_col(),
    )
    op.create_table(
        "reading_cycle",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("book_id", sa.Uuid(), sa.ForeignKey("meter_book.id"), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.UniqueConstraint("book_id", "starts_on", name="reading_cycle_once"),
    )
    op.create_table(
        "reading_task",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("cycle_id", sa.Uuid(), sa.ForeignKey("reading_cycle.id"), nullable=False),
        sa.Column("service_point_id", sa.Uuid(), sa.ForeignKey("service_point.id"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("done_at", TS, nullable=True),
        sa.UniqueConstraint("cycle_id", "service_point_id", name="reading_task_once"),
    )
    op.create_table(
        "field_reading",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("operator_id", sa.Uuid(), sa.ForeignKey("operator.id"), nullable=False),
        sa.Column("service_point_id", sa.Uuid(), sa.ForeignKey("service_point.id"), nullable=False),
        sa.Column("channel_id", sa.Uuid(), sa.ForeignKey("channel.id"), nullable=True),
        sa.Column("measured_at", TS, nullable=False),
        sa.Column("total", sa.Numeric(16, 3), nullable=True),
        sa.Column("anomaly", sa.String(20), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("photo", sa.LargeBinary(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("work_order_id", sa.Uuid(), sa.ForeignKey("work_order.id"), nullable=True),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_index("ix_field_reading_point", "field_reading", ["service_point_id", "measured_at"])
    for table in NEW_TABLES:
        op.create_index(f"ix_{table}_tenant_id", table, ["tenant_id"])
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO {app}")
    op.execute(f"GRANT DELETE ON meter_book_point, meter_book_worker TO {app}")


def downgrade() -> None:
    for table in reversed(NEW_TABLES):
        op.drop_table(table)
