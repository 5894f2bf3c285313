"""Tariff plans (tiered, TOU, monthly fee), TOU registers, rating marks with usage windows,
live balances with rated-unposted usage, entry kinds.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

REGISTER = sa.Numeric(16, 3)
MONEY = sa.Numeric(14, 2)
REGISTRY_TABLES = ("device", "channel", "binding")
ENTRY_KINDS = (
    "topup",
    "usage",
    "fixed_charge",
    "common_area",
    "reversal",
    "adjustment",
    "refund",
)


def upgrade() -> None:
    op.alter_column("tariff_version", "unit_price", existing_type=sa.Numeric(12, 4), nullable=True)
    op.add_column(
        "tariff_version",
        sa.Column("spec", pg.JSONB(astext_type=sa.Text()), nullable=False, server_default="{}"),
    )
    op.add_column(
        "tariff_version", sa.Column("monthly_fee", MONEY, nullable=False, server_default="0")
    )
    op.create_check_constraint(
        "tariff_version_kind", "tariff_version", "kind IN ('flat', 'tiered', 'tou')"
    )
    op.create_check_constraint(
        "tariff_version_flat_price",
        "tariff_version",
        "kind <> 'flat' OR (unit_price IS NOT NULL AND unit_price >= 0)",
    )

    op.add_column("service_point", sa.Column("max_rate", sa.Numeric(10, 3), nullable=True))
    op.add_column("service_point", sa.Column("floor_area", sa.Numeric(12, 2), nullable=True))
    op.add_column(
        "service_point",
        sa.Column("common_area", sa.Boolean(), nullable=False, server_default=sa.false()),
    )

    op.add_column("reading", sa.Column("tou", pg.ARRAY(REGISTER), nullable=True))

    op.add_column("rating_state", sa.Column("last_tou", pg.ARRAY(REGISTER), nullable=True))
    op.add_column(
        "rating_state",
        sa.Column("charge_billed_total", MONEY, nullable=False, server_default="0"),
    )
    op.execute("UPDATE rating_state SET charge_billed_total = charge_posted_total")
    op.add_column("rating_state", sa.Column("cycle", sa.String(length=7), nullable=True))
    op.add_column(
        "rating_state",
        sa.Column("cycle_consumption", REGISTER, nullable=False, server_default="0"),
    )
    op.add_column(
        "rating_state", sa.Column("window_start", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("rating_state", sa.Column("fee_month", sa.String(length=7), nullable=True))
    op.add_column(
        "rating_state",
        sa.Column("stuck", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.create_check_constraint(
        "rating_state_posted_within_billed",
        "rating_state",
        "charge_posted_total <= charge_billed_total",
    )

    op.add_column(
        "ledger_account", sa.Column("unposted", MONEY, nullable=False, server_default="0")
    )
    kinds = ", ".join(f"'{k}'" for k in ENTRY_KINDS)
    op.create_check_constraint("journal_entry_kind", "journal_entry", f"kind IN ({kinds})")
    op.create_check_constraint(
        "journal_entry_reversal_linked",
        "journal_entry",
        "(kind = 'reversal') = (reverses IS NOT NULL)",
    )

    # Ingest caches each gateway's device → channel → service point map; any change to
    # devices, channels or bindings bumps the tenant's "registry" counter, which the ingest
    # compares (one tiny query) instead of re-reading the whole map for every batch.
    op.execute("""
    CREATE FUNCTION prepay_registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE t uuid;
    BEGIN
      t := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
      INSERT INTO tenant_counter (tenant_id, name, value) VALUES (t, 'registry', 1)
        ON CONFLICT (tenant_id, name) DO UPDATE SET value = tenant_counter.value + 1;
      RETURN NULL;
    END $$
    """)
    for table in REGISTRY_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_registry_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION prepay_registry_changed()"
        )


def downgrade() -> None:
    for table in REGISTRY_TABLES:
        op.execute(f"DROP TRIGGER {table}_registry_changed ON {table}")
    op.execute("DROP FUNCTION prepay_registry_changed()")
    op.drop_constraint("journal_entry_reversal_linked", "journal_entry")
    op.drop_constraint("journal_entry_kind", "journal_entry")
    op.drop_column("ledger_account", "unposted")
    op.drop_constraint("rating_state_posted_within_billed", "rating_state")
    for col in (
        "stuck",
        "fee_month",
        "window_start",
        "cycle_consumption",
        "cycle",
        "charge_billed_total",
        "last_tou",
    ):
        op.drop_column("rating_state", col)
    op.drop_column("reading", "tou")
    for col in ("common_area", "floor_area", "max_rate"):
        op.drop_column("service_point", col)
    op.drop_constraint("tariff_version_flat_price", "tariff_version")
    op.drop_constraint("tariff_version_kind", "tariff_version")
    op.drop_column("tariff_version", "monthly_fee")
    op.drop_column("tariff_version", "spec")
    op.alter_column("tariff_version", "unit_price", existing_type=sa.Numeric(12, 4), nullable=False)
