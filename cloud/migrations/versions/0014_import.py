"""The registry counter bumped once per statement, not once per row (legacy import).

Ingest caches each gateway's device → channel → point map and re-reads it when the
tenant's "registry" counter moves (0003). The counter was bumped by a row-level trigger on
device, channel and binding: a legacy import writing 10,000 meters in one transaction
updated the same tenant_counter row 30,000 times, and every update walked the chain of
versions the earlier ones left (none can be pruned while the transaction runs) — 70 s of
a 100 s import. Statement-level triggers with transition tables bump each touched tenant's
counter once per statement; the counter still moves on every change, which is all the
ingest compares.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

REGISTRY_TABLES = ("device", "channel", "binding")
EVENTS = (("insert", "INSERT", "NEW"), ("update", "UPDATE", "NEW"), ("delete", "DELETE", "OLD"))


def upgrade() -> None:
    op.execute("""
    CREATE FUNCTION prepay_registry_changed_rows() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO tenant_counter (tenant_id, name, value)
        SELECT DISTINCT tenant_id, 'registry', 1 FROM changed
        ON CONFLICT (tenant_id, name) DO UPDATE SET value = tenant_counter.value + 1;
      RETURN NULL;
    END $$
    """)
    for table in REGISTRY_TABLES:
        op.execute(f"DROP TRIGGER {table}_registry_changed ON {table}")
        for name, event, side in EVENTS:
            op.execute(
                f"CREATE TRIGGER {table}_registry_{name} AFTER {event} ON {table} "
                f"REFERENCING {side} TABLE AS changed "
                "FOR EACH STATEMENT EXECUTE FUNCTION prepay_registry_changed_rows()"
            )


def downgrade() -> None:
    for table in REGISTRY_TABLES:
        for name, _, _ in EVENTS:
            op.execute(f"DROP TRIGGER {table}_registry_{name} ON {table}")
        op.execute(
            f"CREATE TRIGGER {table}_registry_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION prepay_registry_changed()"
        )
    op.execute("DROP FUNCTION prepay_registry_changed_rows()")
