"""Usage windows closed set-based; the tenant of row-level security read once per query;
postings found by entry and tenant with one index; room for HOT updates of supply twins.

- ``rating_state.fast_revenue``: the revenue account a point's usage is posted to. With it,
  the fast path (``cloud.rating.fast``) closes hourly usage windows itself: the journal
  entry and its two postings, as the Python core would post them. A rating envelope no
  longer ends at the end of the point's window, so a point's readings stay set-based
  across hours.
- ``tenant_isolation`` policies compare ``tenant_id`` with ``(SELECT …)`` of the session's
  tenant instead of the bare expression. The bare expression (``current_setting`` and a
  uuid parsed from text) was evaluated for every row a query read or wrote, about 1 µs a
  row; as a scalar subquery it is an InitPlan, evaluated once per query, and still an
  index condition. Same rows, same isolation (``tests/integration/test_tenancy.py``).
- ``posting (entry_id, tenant_id)``: the ledger's deferred checks
  (``prepay_entry_balanced``, ``prepay_entry_has_postings``) read an entry's postings by
  ``entry_id`` under row-level security, which adds ``tenant_id = …``. With only
  single-column indexes the planner (on statistics not yet gathered for a growing table,
  and in the checks' generic plans) combined the entry's index with the tenant's in a
  BitmapAnd: every check then read the whole tenant's postings, and posting an entry got
  slower with every entry before it (0.2 ms per check at 6,000 postings: a tenth of the
  database's time in the ingest benchmark after one minute). With both columns in one
  index, it is one lookup.
- ``supply_twin`` ``fillfactor`` 70: a meter's reported supply is refreshed every few
  minutes, and full pages made most refreshes a new tuple with new index entries.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TENANT_EXPR = "NULLIF(current_setting('app.tenant_id', true), '')::uuid"  # as in 0002


def _policies(expr: str) -> None:
    """Every ``tenant_isolation`` policy, on ``tenant_id = expr``."""
    quoted = expr.replace("'", "''")  # inside the format string's literal
    op.execute(f"""
    DO $$ DECLARE t regclass; BEGIN
      FOR t IN SELECT polrelid::regclass FROM pg_policy WHERE polname = 'tenant_isolation' LOOP
        EXECUTE format('ALTER POLICY tenant_isolation ON %s USING (tenant_id = {quoted}) '
                       'WITH CHECK (tenant_id = {quoted})', t);
      END LOOP;
    END $$
    """)


def upgrade() -> None:
    op.add_column("rating_state", sa.Column("fast_revenue", sa.Uuid(), nullable=True))
    op.drop_index("ix_posting_entry_id", table_name="posting")
    op.create_index("ix_posting_entry_id", "posting", ["entry_id", "tenant_id"])
    op.execute("ALTER TABLE supply_twin SET (fillfactor = 70)")
    _policies(f"(SELECT {TENANT_EXPR})")


def downgrade() -> None:
    _policies(TENANT_EXPR)
    op.execute("ALTER TABLE supply_twin RESET (fillfactor)")
    op.drop_index("ix_posting_entry_id", table_name="posting")
    op.create_index("ix_posting_entry_id", "posting", ["entry_id"])
    op.drop_column("rating_state", "fast_revenue")
