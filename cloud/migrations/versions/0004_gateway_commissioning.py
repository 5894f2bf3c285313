"""Gateway commissioning: one-time claim codes and gateways' own MQTT credentials; the
config version a gateway reports.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TENANT_EXPR = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    for column in ("config_version", "config_pushed"):
        op.add_column(
            "gateway", sa.Column(column, sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "gateway_claim",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("site_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("gateway_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateway.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code_hash"),
    )
    op.create_index("ix_gateway_claim_tenant_id", "gateway_claim", ["tenant_id"])
    op.create_table(
        "gateway_credential",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("gateway_id", sa.Uuid(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["gateway_id"], ["gateway.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_gateway_credential_tenant_id", "gateway_credential", ["tenant_id"])
    op.create_index("ix_gateway_credential_gateway_id", "gateway_credential", ["gateway_id"])
    # one live credential per gateway
    op.execute(
        "CREATE UNIQUE INDEX gateway_credential_live ON gateway_credential (gateway_id) "
        "WHERE revoked_at IS NULL"
    )
    for table in ("gateway_claim", "gateway_credential"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {TENANT_EXPR}) WITH CHECK (tenant_id = {TENANT_EXPR})"
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO {app}")
        op.execute(f"GRANT SELECT ON {table} TO prepay_router")
        op.execute(
            f"CREATE POLICY router_lookup ON {table} FOR SELECT TO prepay_router USING (true)"
        )

    # An installer's claim code arrives without a tenant: resolve it narrowly.
    op.execute("""
    CREATE FUNCTION prepay_claim_tenant(hash text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS
    $$ SELECT tenant_id FROM gateway_claim WHERE code_hash = hash $$
    """)
    # The broker's password file lists every live gateway credential (hashes only).
    op.execute("""
    CREATE FUNCTION prepay_broker_credentials() RETURNS TABLE (username text, password_hash text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS
    $$ SELECT username, password_hash FROM gateway_credential
       WHERE revoked_at IS NULL ORDER BY username $$
    """)
    for fn in ("prepay_claim_tenant(text)", "prepay_broker_credentials()"):
        op.execute(f"ALTER FUNCTION {fn} OWNER TO prepay_router")
        op.execute(f"REVOKE ALL ON FUNCTION {fn} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {fn} TO {app}")


def downgrade() -> None:
    op.execute("DROP FUNCTION prepay_broker_credentials()")
    op.execute("DROP FUNCTION prepay_claim_tenant(text)")
    op.drop_table("gateway_credential")
    op.drop_table("gateway_claim")
    op.drop_column("gateway", "config_pushed")
    op.drop_column("gateway", "config_version")
