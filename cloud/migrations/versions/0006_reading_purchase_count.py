"""The meter's purchase count in its readings (meter-controlled points: the next recharge
carries the next count; the meter refuses a repeated or skipped one).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reading", sa.Column("purchase_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("reading", "purchase_count")
