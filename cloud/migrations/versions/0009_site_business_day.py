"""A site's business day and local catalogue price (DESIGN §12, §14).

- ``site.business_day_cutoff``: the local time at which a site's business day ends (a sale
  at 23:30 with a 22:00 cut-off belongs to the next day). Counter reversals, daily close
  and handover work per business day.
- ``site.catalogue_price``: the local catalogue flat price of electricity (yuan/kWh), when
  the site records one; ``site.price_margin``: how far above it a tariff may price
  (default 15 %, the rule for electricity supplied by a landlord) before an operator must
  acknowledge it with a reason.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "site",
        sa.Column(
            "business_day_cutoff", sa.Time(), nullable=False, server_default=sa.text("'00:00'")
        ),
    )
    op.add_column("site", sa.Column("catalogue_price", sa.Numeric(12, 4), nullable=True))
    op.add_column(
        "site",
        sa.Column("price_margin", sa.Numeric(5, 4), nullable=False, server_default="0.15"),
    )


def downgrade() -> None:
    op.drop_column("site", "price_margin")
    op.drop_column("site", "catalogue_price")
    op.drop_column("site", "business_day_cutoff")
