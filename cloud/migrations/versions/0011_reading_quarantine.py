"""Readings kept in quarantine instead of dropped (DESIGN §12): a gateway's readings for a
device or channel the cloud does not know yet, or with a time it will not rate (far in the
future, a negative register). The batch is receipted, so the gateway may delete them; the
installer lists them per gateway, and they become the meter's history once it is
registered.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql as pg

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    op.create_table(
        "reading_quarantine",
        sa.Column("gateway_id", sa.Uuid(), nullable=False),
        sa.Column("device", sa.Text(), nullable=False),
        sa.Column("channel", sa.Integer(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reading", pg.JSONB(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("gateway_id", "device", "channel", "measured_at"),
    )
    op.create_index("ix_reading_quarantine_tenant_id", "reading_quarantine", ["tenant_id"])
    op.execute("ALTER TABLE reading_quarantine ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE reading_quarantine FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON reading_quarantine "
        f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
    )
    op.execute(f"GRANT SELECT, INSERT, DELETE ON reading_quarantine TO {app}")


def downgrade() -> None:
    op.drop_table("reading_quarantine")
