"""WeChat Pay for the tenant app (DESIGN §7, §13; issue 15): a property group's merchant
settings (service-provider or direct mode, secrets encrypted at rest), payment orders with
their database-generated ``out_trade_no``, refunds with a stable ``out_refund_no``, the
exceptions finance must look at (a notification that does not match its order), and the
one-time SMS codes of the H5 page's phone login.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql as pg

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(14, 2)
TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
NEW_TABLES = ("merchant", "payment_order", "payment_refund", "payment_exception", "login_code")
ORDER_STATES = ("created", "paid", "closed")
REFUND_STATES = ("requested", "processing", "success", "closed", "abnormal", "failed")


def _tenant_col(**kw: bool) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False, **kw)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    op.create_table(
        "merchant",
        _tenant_col(primary_key=True),
        sa.Column("mode", sa.String(8), nullable=False),  # partner | direct
        sa.Column("mchid", sa.String(32), nullable=False),  # sp_mchid in partner mode
        sa.Column("sub_mchid", sa.String(32), nullable=True),
        sa.Column("appid", sa.String(32), nullable=False),  # sp_appid in partner mode
        sa.Column("sub_appid", sa.String(32), nullable=True),
        sa.Column("cert_serial_no", sa.String(64), nullable=False),
        sa.Column("private_key", sa.Text(), nullable=False),  # encrypted (Fernet)
        sa.Column("apiv3_key", sa.Text(), nullable=False),  # encrypted
        sa.Column("app_secret", sa.Text(), nullable=True),  # encrypted; code2session
        sa.Column("public_key", sa.Text(), nullable=True),  # WeChat Pay public key (PEM)
        sa.Column("public_key_id", sa.String(64), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(), nullable=False),
        sa.CheckConstraint("mode IN ('partner', 'direct')", name="merchant_mode"),
        sa.CheckConstraint(
            "(mode = 'partner') = (sub_mchid IS NOT NULL)", name="merchant_sub_mchid"
        ),
        sa.CheckConstraint(
            "(public_key IS NULL) = (public_key_id IS NULL)", name="merchant_public_key"
        ),
    )
    # out_trade_no's serial: one sequence for every group, so an order number names one
    # order on the whole platform (finance HQ, reconciliation, support)
    op.execute("CREATE SEQUENCE payment_order_serial")
    op.execute(f"GRANT USAGE ON SEQUENCE payment_order_serial TO {app}")
    op.create_table(
        "payment_order",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("out_trade_no", sa.String(32), nullable=False),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("account.id"), nullable=False),
        sa.Column("user_id", sa.Uuid(), sa.ForeignKey("app_user.id"), nullable=False),
        sa.Column("site_id", sa.Uuid(), sa.ForeignKey("site.id"), nullable=True),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("amount_fen", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("mchid", sa.String(32), nullable=False),
        sa.Column("sub_mchid", sa.String(32), nullable=True),
        sa.Column("appid", sa.String(32), nullable=False),
        sa.Column("sub_appid", sa.String(32), nullable=True),
        sa.Column("openid", sa.String(), nullable=True),
        sa.Column("prepay_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(8), nullable=False, server_default="created"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("queried_at", TS, nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("paid_at", TS, nullable=True),
        sa.Column("transaction_id", sa.String(32), nullable=True),
        sa.Column("credited_via", sa.String(8), nullable=True),  # notify | query
        sa.Column("entry_id", sa.Uuid(), nullable=True),
        sa.Column("refunded", MONEY, nullable=False, server_default="0"),
        sa.UniqueConstraint("tenant_id", "out_trade_no", name="payment_order_no"),
        sa.CheckConstraint("amount > 0 AND amount_fen = amount * 100", name="payment_amount"),
        sa.CheckConstraint(_in("status", ORDER_STATES), name="payment_order_status"),
        sa.CheckConstraint("refunded >= 0 AND refunded <= amount", name="payment_refunded"),
    )
    op.create_index(
        "payment_order_unsettled",
        "payment_order",
        ["tenant_id", "created_at"],
        postgresql_where=sa.text("status = 'created'"),
    )
    op.create_index("payment_order_account", "payment_order", ["account_id", "created_at"])
    op.create_table(
        "payment_refund",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("order_id", sa.Uuid(), sa.ForeignKey("payment_order.id"), nullable=False),
        sa.Column("out_refund_no", sa.String(64), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False, server_default="requested"),
        sa.Column("refund_id", sa.String(32), nullable=True),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("requested_by", sa.String(), nullable=False),
        sa.Column("settled_at", TS, nullable=True),
        sa.Column("entry_id", sa.Uuid(), nullable=True),  # wallet → refunds payable
        sa.Column("paid_entry_id", sa.Uuid(), nullable=True),  # refunds payable → clearing
        sa.Column("answer", pg.JSONB(), nullable=True),  # WeChat's last answer
        sa.UniqueConstraint("tenant_id", "out_refund_no", name="payment_refund_no"),
        sa.CheckConstraint("amount > 0", name="payment_refund_amount"),
        sa.CheckConstraint(_in("status", REFUND_STATES), name="payment_refund_status"),
    )
    op.create_index("payment_refund_order", "payment_refund", ["order_id"])
    op.create_table(
        "payment_exception",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("out_trade_no", sa.String(64), nullable=False),
        sa.Column("detail", pg.JSONB(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_by", sa.String(), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.UniqueConstraint("tenant_id", "kind", "out_trade_no", name="payment_exception_once"),
    )
    op.create_table(
        "login_code",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("used_at", TS, nullable=True),
    )
    op.create_index("login_code_phone", "login_code", ["tenant_id", "phone", "created_at"])
    for table in NEW_TABLES:
        if table != "merchant":  # (its tenant_id is its primary key)
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
    op.execute("DROP SEQUENCE payment_order_serial")
