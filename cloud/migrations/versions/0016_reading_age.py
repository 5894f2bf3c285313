"""How far back a site takes readings (issue 22, item 7): ``site.reading_max_age_days``
(default 365). The ingest quarantines a reading measured longer ago than that
(``too_old``), or before its channel was bound to the point (``before_installation``),
instead of storing and rating it as if it were recent. The ingest caches each gateway's map
with its site's allowed age and re-reads it when the tenant's "registry" counter moves
(0003, 0014): a change of the allowed age, or a gateway moved to another site, bumps it too.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

AGE_MAX = 3650  # days; cloud.registry.admin_core.READING_AGE_MAX


def upgrade() -> None:
    op.add_column(
        "site",
        sa.Column("reading_max_age_days", sa.Integer(), nullable=False, server_default="365"),
    )
    op.create_check_constraint(
        "site_reading_max_age", "site", f"reading_max_age_days BETWEEN 1 AND {AGE_MAX}"
    )
    # Row-level and only on a change of the column (a statement-level trigger cannot name
    # columns with a transition table): prepay_registry_changed() is 0003's.
    op.execute(
        "CREATE TRIGGER site_registry_reading_age AFTER UPDATE OF reading_max_age_days ON site "
        "FOR EACH ROW WHEN (OLD.reading_max_age_days IS DISTINCT FROM NEW.reading_max_age_days) "
        "EXECUTE FUNCTION prepay_registry_changed()"
    )
    op.execute(
        "CREATE TRIGGER gateway_registry_site AFTER UPDATE OF site_id ON gateway "
        "FOR EACH ROW WHEN (OLD.site_id IS DISTINCT FROM NEW.site_id) "
        "EXECUTE FUNCTION prepay_registry_changed()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER gateway_registry_site ON gateway")
    op.execute("DROP TRIGGER site_registry_reading_age ON site")
    op.drop_constraint("site_reading_max_age", "site")
    op.drop_column("site", "reading_max_age_days")
