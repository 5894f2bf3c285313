"""The business office (DESIGN §12, §7, §16): buildings and premises, points at a premises
and their removal, customers' ID numbers, the account lifecycle (pending → active →
closed), operators scoped to the tenant, sites or outlets, revocable console sessions,
cross-outlet grants, sale reversals and the grant a sale was made under, cash handovers,
one-time form keys, tariffs per site with the margin acknowledgement, legacy import runs,
and the journal kinds the lifecycle posts (opening balances, write-offs, transfers).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql as pg

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TENANT = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(14, 2)
OLD_KINDS = ("topup", "usage", "fixed_charge", "common_area", "reversal", "adjustment", "refund")
NEW_KINDS = (*OLD_KINDS, "opening", "write_off", "transfer")
NEW_TABLES = (
    "building",
    "premises",
    "operator_session",
    "outlet_grant",
    "cash_handover",
    "form_key",
    "import_run",
)


def _tenant_col() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False)


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", sa.Uuid(), primary_key=True)


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    op.create_table(
        "building",
        _id(),
        _tenant_col(),
        sa.Column("site_id", sa.Uuid(), sa.ForeignKey("site.id"), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.UniqueConstraint("site_id", "name"),
    )
    op.create_table(
        "premises",
        _id(),
        _tenant_col(),
        sa.Column("site_id", sa.Uuid(), sa.ForeignKey("site.id"), nullable=False),
        sa.Column("building_id", sa.Uuid(), sa.ForeignKey("building.id"), nullable=False),
        sa.Column("floor", sa.String(), nullable=False),
        sa.Column("number", sa.String(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False, server_default="shop"),
        sa.Column("floor_area", sa.Numeric(12, 2), nullable=True),
        sa.UniqueConstraint("building_id", "number"),
        sa.CheckConstraint("kind IN ('shop', 'flat', 'office', 'unit')", name="premises_kind"),
        sa.CheckConstraint("floor_area IS NULL OR floor_area > 0", name="premises_area"),
    )
    op.add_column(
        "service_point",
        sa.Column("premises_id", sa.Uuid(), sa.ForeignKey("premises.id"), nullable=True),
    )
    op.add_column("service_point", sa.Column("removed_at", TS, nullable=True))
    op.create_index("ix_service_point_premises_id", "service_point", ["premises_id"])

    op.add_column("customer", sa.Column("id_number", sa.String(), nullable=True))
    op.add_column(
        "customer", sa.Column("created_at", TS, nullable=False, server_default=sa.func.now())
    )
    op.add_column(
        "account", sa.Column("status", sa.String(8), nullable=False, server_default="active")
    )
    op.add_column(
        "account", sa.Column("opened_at", TS, nullable=False, server_default=sa.func.now())
    )
    op.add_column("account", sa.Column("closed_at", TS, nullable=True))
    op.create_check_constraint(
        "account_status", "account", "status IN ('pending', 'active', 'closed')"
    )
    op.create_index("ix_account_customer_id", "account", ["customer_id"])
    op.create_index("ix_customer_phone", "customer", ["tenant_id", "phone"])

    op.add_column(
        "operator", sa.Column("scope", sa.String(8), nullable=False, server_default="tenant")
    )
    op.add_column(
        "operator",
        sa.Column("scope_ids", pg.ARRAY(sa.Uuid()), nullable=False, server_default="{}"),
    )
    op.add_column("operator", sa.Column("password_changed_at", TS, nullable=True))
    op.create_check_constraint(
        "operator_scope", "operator", "scope IN ('tenant', 'site', 'outlet')"
    )
    op.create_table(
        "operator_session",
        _id(),
        _tenant_col(),
        sa.Column("operator_id", sa.Uuid(), sa.ForeignKey("operator.id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("address", sa.String(), nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
    )
    op.create_index("ix_operator_session_operator", "operator_session", ["operator_id"])
    op.create_table(
        "outlet_grant",
        _id(),
        _tenant_col(),
        sa.Column("operator_id", sa.Uuid(), sa.ForeignKey("operator.id"), nullable=False),
        sa.Column("outlet_id", sa.Uuid(), sa.ForeignKey("outlet.id"), nullable=False),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("ends_at", TS, nullable=False),
        sa.Column("reason", sa.String(), nullable=False, server_default=""),
        sa.Column("granted_by", sa.String(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revoked_by", sa.String(), nullable=True),
        sa.CheckConstraint("ends_at > starts_at", name="outlet_grant_period"),
    )
    op.create_index("ix_outlet_grant_operator", "outlet_grant", ["operator_id", "outlet_id"])

    op.add_column(
        "counter_sale",
        sa.Column("grant_id", sa.Uuid(), sa.ForeignKey("outlet_grant.id"), nullable=True),
    )
    op.add_column("counter_sale", sa.Column("business_day", sa.Date(), nullable=True))
    op.add_column("counter_sale", sa.Column("reversed_at", TS, nullable=True))
    op.add_column("counter_sale", sa.Column("reversed_by", sa.String(), nullable=True))
    op.add_column("counter_sale", sa.Column("reversal_reason", sa.String(), nullable=True))
    op.add_column(
        "counter_sale",
        sa.Column("reversal_entry_id", sa.Uuid(), sa.ForeignKey("journal_entry.id"), nullable=True),
    )
    op.create_check_constraint(
        "counter_sale_method", "counter_sale", "method IN ('cash', 'card', 'transfer')"
    )
    op.create_index("ix_counter_sale_account", "counter_sale", ["account_id", "created_at"])
    op.create_index("ix_counter_sale_operator_day", "counter_sale", ["operator_id", "business_day"])
    op.create_table(
        "cash_handover",
        _id(),
        _tenant_col(),
        sa.Column("operator_id", sa.Uuid(), sa.ForeignKey("operator.id"), nullable=False),
        sa.Column("business_day", sa.Date(), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("handed_at", TS, nullable=False),
        sa.Column("received_by", sa.String(), nullable=False),
        sa.UniqueConstraint("tenant_id", "operator_id", "business_day"),
    )
    op.create_table(
        "form_key",
        _tenant_col(),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("operator_id", sa.Uuid(), sa.ForeignKey("operator.id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("result", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "key"),
    )
    op.add_column(
        "tariff", sa.Column("site_id", sa.Uuid(), sa.ForeignKey("site.id"), nullable=True)
    )
    op.add_column(
        "tariff", sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    op.add_column(
        "tariff_version", sa.Column("created_by", sa.String(), nullable=False, server_default="")
    )
    op.add_column("tariff_version", sa.Column("created_at", TS, nullable=True))
    op.add_column("tariff_version", sa.Column("margin_reason", sa.String(), nullable=True))
    op.create_table(
        "import_run",
        _id(),
        _tenant_col(),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("filename", sa.String(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("report", pg.JSONB(), nullable=False, server_default="[]"),
    )

    op.drop_constraint("journal_entry_kind", "journal_entry")
    kinds = ", ".join(f"'{k}'" for k in NEW_KINDS)
    op.create_check_constraint("journal_entry_kind", "journal_entry", f"kind IN ({kinds})")

    for table in NEW_TABLES:
        if table != "form_key":
            op.create_index(f"ix_{table}_tenant_id", table, ["tenant_id"])
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
        )
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON {table} TO {app}")
    op.execute(f"GRANT DELETE ON form_key, premises, building TO {app}")


def downgrade() -> None:
    op.drop_constraint("journal_entry_kind", "journal_entry")
    kinds = ", ".join(f"'{k}'" for k in OLD_KINDS)
    op.create_check_constraint("journal_entry_kind", "journal_entry", f"kind IN ({kinds})")
    op.drop_table("import_run")
    for column in ("margin_reason", "created_at", "created_by"):
        op.drop_column("tariff_version", column)
    op.drop_column("tariff", "active")
    op.drop_column("tariff", "site_id")
    op.drop_table("form_key")
    op.drop_table("cash_handover")
    op.drop_constraint("counter_sale_method", "counter_sale")
    op.drop_index("ix_counter_sale_operator_day", "counter_sale")
    op.drop_index("ix_counter_sale_account", "counter_sale")
    for column in (
        "reversal_entry_id",
        "reversal_reason",
        "reversed_by",
        "reversed_at",
        "business_day",
        "grant_id",
    ):
        op.drop_column("counter_sale", column)
    op.drop_table("outlet_grant")
    op.drop_table("operator_session")
    op.drop_constraint("operator_scope", "operator")
    for column in ("password_changed_at", "scope_ids", "scope"):
        op.drop_column("operator", column)
    op.drop_index("ix_customer_phone", "customer")
    op.drop_index("ix_account_customer_id", "account")
    op.drop_constraint("account_status", "account")
    for column in ("closed_at", "opened_at", "status"):
        op.drop_column("account", column)
    op.drop_column("customer", "created_at")
    op.drop_column("customer", "id_number")
    op.drop_index("ix_service_point_premises_id", "service_point")
    op.drop_column("service_point", "removed_at")
    op.drop_column("service_point", "premises_id")
    op.drop_table("premises")
    op.drop_table("building")
