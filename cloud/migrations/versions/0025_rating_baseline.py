"""The rating baseline (issue 20, found by `prepay chaos`): the earliest reading a point was
rated from. Readings earlier than it that arrive later (a gateway's batches taken by two
ingest workers out of order) move it back and charge the difference instead of being
dropped as late. NULL for points rated before this: they keep the old behaviour.

Revision ID: 0025
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "rating_state", sa.Column("first_measured_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("rating_state", sa.Column("first_register", sa.Numeric(16, 3), nullable=True))


def downgrade() -> None:
    op.drop_column("rating_state", "first_register")
    op.drop_column("rating_state", "first_measured_at")
