"""Rating's set-based fast path: each point's rating envelope, a "terms" counter that
invalidates every envelope of a tenant when its tariffs or points' terms change, readings
without per-row foreign-key checks, room for HOT updates of marks and balances.

- ``rating_state.fast_*``: what the Python rating core computed, when it last rated the
  point, about the readings to come (until when the price, the tier block, the fee month,
  the usage window and the tariff version stay as they are, and the channel's limits).
  A reading inside that envelope is rated by one set-based statement per batch
  (``cloud.rating.fast``); anything else goes to the Python core as before.
- ``tenant_counter`` 'terms': bumped by any change to tariffs, tariff versions and the
  terms of service points, accounts and sites; an envelope stamped with an older value is
  void.
- ``reading``: its two foreign keys cost two trigger queries and two row locks per reading
  (half of the database's time per stored reading in the ingest benchmark). The ingest
  only ever writes channel ids from the tenant's registry, row-level security checks the
  tenant, and a channel with readings cannot be deleted (``prepay_channel_keeps_readings``).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

PRICE = sa.Numeric(12, 4)
REGISTER = sa.Numeric(16, 3)
# (table, columns whose change voids envelopes; None: any change)
TERMS = (
    ("tariff", None),
    ("tariff_version", None),
    ("service_point", "tariff_id, utility, max_rate, common_area, account_id, site_id"),
    ("account", "wallet_id"),
    ("site", "timezone"),
)


def upgrade() -> None:
    op.drop_constraint("reading_channel_id_fkey", "reading", type_="foreignkey")
    op.drop_constraint("reading_tenant_id_fkey", "reading", type_="foreignkey")
    op.execute("""
    CREATE FUNCTION prepay_channel_keeps_readings() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM reading WHERE channel_id = OLD.id) THEN
        RAISE EXCEPTION 'channel % has readings and cannot be deleted', OLD.id
          USING ERRCODE = 'foreign_key_violation';
      END IF;
      RETURN OLD;
    END $$
    """)
    op.execute(
        "CREATE TRIGGER channel_keeps_readings BEFORE DELETE ON channel "
        "FOR EACH ROW EXECUTE FUNCTION prepay_channel_keeps_readings()"
    )

    for name, type_ in (
        ("fast_until", sa.DateTime(timezone=True)),
        ("fast_terms", sa.BigInteger()),
        ("fast_price", PRICE),
        ("fast_tou", pg.ARRAY(PRICE)),
        ("fast_block_end", REGISTER),
        ("fast_limits", pg.ARRAY(sa.Numeric())),
        ("fast_wallet", sa.Uuid()),
    ):
        op.add_column("rating_state", sa.Column(name, type_, nullable=True))
    op.add_column(
        "rating_state",
        sa.Column("fast_tiered", sa.Boolean(), nullable=False, server_default="false"),
    )
    # Marks and balances are updated on every batch: leave room on each page so the update
    # stays on the page (HOT) instead of touching every index.
    op.execute("ALTER TABLE rating_state SET (fillfactor = 50)")
    op.execute("ALTER TABLE ledger_account SET (fillfactor = 70)")

    op.execute("""
    CREATE FUNCTION prepay_terms_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE t uuid;
    BEGIN
      t := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
      INSERT INTO tenant_counter (tenant_id, name, value) VALUES (t, 'terms', 1)
        ON CONFLICT (tenant_id, name) DO UPDATE SET value = tenant_counter.value + 1;
      RETURN NULL;
    END $$
    """)
    for table, columns in TERMS:
        events = "INSERT OR UPDATE OR DELETE" if columns is None else f"UPDATE OF {columns}"
        op.execute(
            f"CREATE TRIGGER {table}_terms_changed AFTER {events} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION prepay_terms_changed()"
        )


def downgrade() -> None:
    for table, _ in TERMS:
        op.execute(f"DROP TRIGGER {table}_terms_changed ON {table}")
    op.execute("DROP FUNCTION prepay_terms_changed()")
    op.execute("ALTER TABLE ledger_account RESET (fillfactor)")
    op.execute("ALTER TABLE rating_state RESET (fillfactor)")
    for name in (
        "fast_tiered",
        "fast_wallet",
        "fast_limits",
        "fast_block_end",
        "fast_tou",
        "fast_price",
        "fast_terms",
        "fast_until",
    ):
        op.drop_column("rating_state", name)
    op.execute("DROP TRIGGER channel_keeps_readings ON channel")
    op.execute("DROP FUNCTION prepay_channel_keeps_readings()")
    op.create_foreign_key("reading_tenant_id_fkey", "reading", "tenant", ["tenant_id"], ["id"])
    op.create_foreign_key("reading_channel_id_fkey", "reading", "channel", ["channel_id"], ["id"])
