"""The tenant app's people and what they may see (DESIGN §13): users known by WeChat
openid or phone, their sessions, the accounts they bound, the subscribe messages they
accepted, customers' notification preferences, and a site's top-up limits and quick
amounts.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql as pg

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(14, 2)
TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
NEW_TABLES = (
    "app_user",
    "app_session",
    "account_binding",
    "subscribe_acceptance",
    "notify_preference",
)


def _tenant_col() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False)


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    op.add_column("site", sa.Column("topup_min", MONEY, nullable=False, server_default="10.00"))
    op.add_column("site", sa.Column("topup_max", MONEY, nullable=False, server_default="5000.00"))
    op.add_column(
        "site",
        sa.Column(
            "quick_amounts", pg.ARRAY(MONEY), nullable=False, server_default="{30,50,100,200}"
        ),
    )
    op.create_table(
        "app_user",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("appid", sa.String(), nullable=True),
        sa.Column("openid", sa.String(), nullable=True),
        sa.Column("phone", sa.String(), nullable=True),
        sa.Column("language", sa.String(), nullable=False, server_default="zh_CN"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_login_at", TS, nullable=True),
    )
    op.create_index(
        "app_user_openid",
        "app_user",
        ["tenant_id", "appid", "openid"],
        unique=True,
        postgresql_where=sa.text("openid IS NOT NULL"),
    )
    op.create_index(
        "app_user_phone",
        "app_user",
        ["tenant_id", "phone"],
        unique=True,
        postgresql_where=sa.text("phone IS NOT NULL"),
    )
    op.create_table(
        "app_session",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("user_id", sa.Uuid(), sa.ForeignKey("app_user.id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
    )
    op.create_index("ix_app_session_user", "app_session", ["user_id"])
    op.create_table(
        "account_binding",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_col(),
        sa.Column("user_id", sa.Uuid(), sa.ForeignKey("app_user.id"), nullable=False),
        sa.Column("account_id", sa.Uuid(), sa.ForeignKey("account.id"), nullable=False),
        sa.Column("bound_at", TS, nullable=False),
        sa.Column("unbound_at", TS, nullable=True),
        sa.Column("unbound_by", sa.String(), nullable=True),
    )
    op.create_index(
        "account_binding_live",
        "account_binding",
        ["user_id", "account_id"],
        unique=True,
        postgresql_where=sa.text("unbound_at IS NULL"),
    )
    op.create_index("ix_account_binding_account", "account_binding", ["account_id"])
    op.create_table(
        "subscribe_acceptance",
        _tenant_col(),
        sa.Column(
            "user_id", sa.Uuid(), sa.ForeignKey("app_user.id"), primary_key=True, nullable=False
        ),
        sa.Column("template_id", sa.String(), primary_key=True, nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("remaining >= 0", name="subscribe_remaining"),
    )
    op.create_table(
        "notify_preference",
        _tenant_col(),
        sa.Column(
            "customer_id",
            sa.Uuid(),
            sa.ForeignKey("customer.id"),
            primary_key=True,
            nullable=False,
        ),
        sa.Column("channels", pg.ARRAY(sa.Text()), nullable=False, server_default="{sms}"),
        sa.Column("language", sa.String(), nullable=False, server_default="zh_CN"),
        sa.Column("muted", pg.ARRAY(sa.Text()), nullable=False, server_default="{}"),
        sa.Column("updated_at", TS, nullable=False),
    )
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
    for column in ("quick_amounts", "topup_max", "topup_min"):
        op.drop_column("site", column)
