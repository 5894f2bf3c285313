"""The installer's pages and 公摊 (issue 17 items 2, 6, 7):

- ``gateway_claim.revoked_at``/``revoked_by``: a claim code revoked before use is refused
  like a used or expired one.
- ``gateway.heartbeat_at``, ``bus_stats``, ``queue_depth``: the last heartbeat's bus
  statistics (transactions, timeouts, errors, utilisation per bus) and outbox backlog.
- ``common_area_group`` and ``common_area_member``: which points share which common meter,
  by floor area or consumption, allocated monthly by ``prepay worker``
  (``last_month``: the last local month posted).

Revision ID: 0026
Revises: 0021
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql as pg

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
NEW_TABLES = ("common_area_group", "common_area_member")


def _tenant_col() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False)


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    op.add_column("gateway_claim", sa.Column("revoked_at", TS, nullable=True))
    op.add_column("gateway_claim", sa.Column("revoked_by", sa.String(128), nullable=True))
    op.add_column("gateway", sa.Column("heartbeat_at", TS, nullable=True))
    op.add_column("gateway", sa.Column("bus_stats", pg.JSONB(), nullable=True))
    op.add_column("gateway", sa.Column("queue_depth", sa.Integer(), nullable=True))
    op.create_table(
        "common_area_group",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("common_point_id", sa.Uuid(), sa.ForeignKey("service_point.id"), nullable=False),
        sa.Column("basis", sa.String(12), nullable=False),
        sa.Column("monthly", sa.Boolean(), nullable=False, server_default="true"),
        sa.Column("last_month", sa.String(7), nullable=True),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("tenant_id", "common_point_id", name="common_area_one_per_meter"),
        sa.CheckConstraint("basis IN ('area', 'consumption')", name="common_area_basis"),
    )
    op.create_table(
        "common_area_member",
        sa.Column(
            "group_id",
            sa.Uuid(),
            sa.ForeignKey("common_area_group.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "service_point_id", sa.Uuid(), sa.ForeignKey("service_point.id"), primary_key=True
        ),
        _tenant_col(),
    )
    for table in NEW_TABLES:
        op.create_index(f"ix_{table}_tenant_id", table, ["tenant_id"])
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {app}")


def downgrade() -> None:
    for table in reversed(NEW_TABLES):
        op.drop_table(table)
    for column in ("queue_depth", "bus_stats", "heartbeat_at"):
        op.drop_column("gateway", column)
    op.drop_column("gateway_claim", "revoked_by")
    op.drop_column("gateway_claim", "revoked_at")
