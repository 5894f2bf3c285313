"""The balance a counter sale left in the wallet, kept with the sale so a receipt printed
again later shows what the first one showed (the live balance moves with usage).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("counter_sale", sa.Column("balance_after", sa.Numeric(14, 2), nullable=True))


def downgrade() -> None:
    op.drop_column("counter_sale", "balance_after")
