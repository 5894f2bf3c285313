"""Reconciliation with WeChat Pay (DESIGN §14, issue 18 item 3): one run per merchant and
bill day (the trade bill fetched, its SHA1 checked, matched against our payment orders and
refunds; a wrong hash is refused and tried again later) and the exceptions it found, each
with its resolution (credited, refunded, written off).

Revision ID: 0021
Revises: 0019
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql as pg

revision = "0021"
down_revision = "0019"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(14, 2)
TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
NEW_TABLES = ("recon_run", "recon_exception")
RUN_STATES = ("pending", "matched", "refused", "failed")
KINDS = (
    "theirs_only",
    "ours_only",
    "amount_differs",
    "status_differs",
    "refund_mismatch",
    "malformed",
)
RESOLUTIONS = ("credited", "refunded", "written_off", "cleared")


def _tenant_col() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    op.create_table(
        "recon_run",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("mchid", sa.String(32), nullable=False),  # the receiver: sub_mchid or mchid
        sa.Column("clearing", sa.String(64), nullable=False),  # its clearing channel
        sa.Column("bill_date", sa.Date(), nullable=False),  # WeChat's day (China time)
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_try_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("hash_value", sa.String(64), nullable=True),
        sa.Column("lines", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("paid_total", MONEY, nullable=False, server_default="0"),
        sa.Column("refund_total", MONEY, nullable=False, server_default="0"),
        sa.Column("fee_total", sa.Numeric(16, 5), nullable=False, server_default="0"),
        sa.Column("requested_by", sa.String(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("fetched_at", TS, nullable=True),
        sa.Column("matched_at", TS, nullable=True),
        sa.UniqueConstraint("tenant_id", "mchid", "bill_date", name="recon_run_once"),
        sa.CheckConstraint(_in("state", RUN_STATES), name="recon_run_state"),
    )
    op.create_index("recon_run_due", "recon_run", ["state", "next_try_at"])
    op.create_table(
        "recon_exception",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("run_id", sa.Uuid(), sa.ForeignKey("recon_run.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(80), nullable=False),  # out_trade_no, out_refund_no, line-N
        sa.Column("out_trade_no", sa.String(64), nullable=True),
        sa.Column("out_refund_no", sa.String(64), nullable=True),
        sa.Column("line_no", sa.Integer(), nullable=True),
        sa.Column("ours", MONEY, nullable=True),
        sa.Column("theirs", MONEY, nullable=True),
        # what the clearing account is short of WeChat's figure (theirs - ours, signed)
        sa.Column("clearing_delta", MONEY, nullable=False, server_default="0"),
        sa.Column("detail", pg.JSONB(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("resolution", sa.String(12), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("resolved_by", sa.String(), nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("entry_id", sa.Uuid(), nullable=True),
        sa.UniqueConstraint("run_id", "kind", "ref", name="recon_exception_once"),
        sa.CheckConstraint(_in("kind", KINDS), name="recon_exception_kind"),
        sa.CheckConstraint(
            f"resolution IS NULL OR {_in('resolution', RESOLUTIONS)}",
            name="recon_exception_resolution",
        ),
    )
    op.create_index("recon_exception_run", "recon_exception", ["run_id", "created_at"])
    for table in NEW_TABLES:
        op.create_index(f"ix_{table}_tenant_id", table, ["tenant_id"])
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO {app}")


def downgrade() -> None:
    for table in reversed(NEW_TABLES):
        op.drop_table(table)
