"""Tenancy and ledger rules: app role, forced RLS, grants, append-only journal, balanced entries.

Revision ID: 0002
Revises: 0001
"""

from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Tenant-owned tables at this revision (later revisions secure their own new tables).
TENANT_TABLES = [
    "site",
    "outlet",
    "role",
    "operator",
    "customer",
    "account",
    "tariff",
    "tariff_version",
    "service_point",
    "gateway",
    "device",
    "channel",
    "binding",
    "reading",
    "rating_state",
    "ledger_account",
    "journal_entry",
    "posting",
    "counter_sale",
    "supply_twin",
    "device_command",
    "work_order",
    "audit_event",
    "tenant_counter",
]
APPEND_ONLY = ["journal_entry", "posting", "audit_event"]
TENANT_EXPR = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    op.execute(f"""
    DO $$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{app}') THEN
        CREATE ROLE {app} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
      END IF;
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'prepay_router') THEN
        CREATE ROLE prepay_router NOLOGIN NOSUPERUSER NOBYPASSRLS;
      END IF;
    END $$;
    """)
    op.execute(f"GRANT USAGE ON SCHEMA public TO {app}, prepay_router")
    op.execute(f"GRANT SELECT ON tenant TO {app}")
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (tenant_id = {TENANT_EXPR}) WITH CHECK (tenant_id = {TENANT_EXPR})"
        )
        rights = "SELECT, INSERT" if table in APPEND_ONLY else "SELECT, INSERT, UPDATE, DELETE"
        op.execute(f"GRANT {rights} ON {table} TO {app}")
    op.execute(f"REVOKE UPDATE, DELETE ON reading FROM {app}")

    # The ingest path resolves a gateway's tenant before it can set one: a narrow
    # SECURITY DEFINER lookup owned by a NOLOGIN role that may read only gateway.
    op.execute("GRANT SELECT ON gateway TO prepay_router")
    op.execute("CREATE POLICY router_lookup ON gateway FOR SELECT TO prepay_router USING (true)")
    op.execute("""
    CREATE FUNCTION prepay_gateway_tenant(gateway_code text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS
    $$ SELECT tenant_id FROM gateway WHERE code = gateway_code $$
    """)
    op.execute("ALTER FUNCTION prepay_gateway_tenant(text) OWNER TO prepay_router")
    op.execute("REVOKE ALL ON FUNCTION prepay_gateway_tenant(text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION prepay_gateway_tenant(text) TO {app}")

    # Journal is append-only, for everyone including the owner.
    op.execute("""
    CREATE FUNCTION prepay_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
    END $$
    """)
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION prepay_append_only()"
        )

    # Every journal entry's postings sum to zero with at least two legs, checked at commit.
    op.execute("""
    CREATE FUNCTION prepay_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE total numeric; legs int;
    BEGIN
      SELECT coalesce(sum(amount), 0), count(*) INTO total, legs
        FROM posting WHERE entry_id = NEW.entry_id;
      IF total <> 0 OR legs < 2 THEN
        RAISE EXCEPTION 'journal entry % is unbalanced: % over % postings', NEW.entry_id, total, legs
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      RETURN NULL;
    END $$
    """)
    op.execute("""
    CREATE CONSTRAINT TRIGGER posting_entry_balanced AFTER INSERT ON posting
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION prepay_entry_balanced()
    """)
    op.execute("""
    CREATE FUNCTION prepay_entry_has_postings() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NOT EXISTS (SELECT 1 FROM posting WHERE entry_id = NEW.id) THEN
        RAISE EXCEPTION 'journal entry % has no postings', NEW.id
          USING ERRCODE = 'integrity_constraint_violation';
      END IF;
      RETURN NULL;
    END $$
    """)
    op.execute("""
    CREATE CONSTRAINT TRIGGER journal_entry_has_postings AFTER INSERT ON journal_entry
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION prepay_entry_has_postings()
    """)
    op.execute("ALTER TABLE posting ADD CONSTRAINT posting_nonzero CHECK (amount <> 0)")
    op.execute(
        "ALTER TABLE ledger_account ADD CONSTRAINT ledger_account_side "
        "CHECK (normal_side IN ('debit', 'credit'))"
    )
    op.execute(
        "ALTER TABLE device_command ADD CONSTRAINT device_command_state CHECK "
        "(state IN ('queued', 'sent', 'acked', 'failed', 'expired', 'superseded'))"
    )


def downgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    op.execute("DROP TRIGGER journal_entry_has_postings ON journal_entry")
    op.execute("DROP TRIGGER posting_entry_balanced ON posting")
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
    op.execute("DROP FUNCTION prepay_entry_has_postings()")
    op.execute("DROP FUNCTION prepay_entry_balanced()")
    op.execute("DROP FUNCTION prepay_append_only()")
    op.execute("DROP FUNCTION prepay_gateway_tenant(text)")
    op.execute("DROP POLICY router_lookup ON gateway")
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"REVOKE ALL ON {table} FROM {app}")
    op.execute("REVOKE ALL ON gateway FROM prepay_router")
    op.execute(f"REVOKE ALL ON tenant FROM {app}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {app}, prepay_router")
