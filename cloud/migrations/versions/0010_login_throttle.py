"""Login throttling: failed logins counted per login (property group + username) and per
client address, in the database so that every API process agrees.

Platform-level, like ``tenant``: attempts for property groups that do not exist must be
counted too, and a login is not tenant-owned data. One row per key (a fixed 60 s window
and a lock), so an attacker's rows are bounded by the keys an address may try before the
address itself is locked; rows idle for a day are pruned as failures are written.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import context, op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app = context.config.attributes.get("app_role", "prepay_app")
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("login_throttle_idle", "login_throttle", ["window_start"])
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON login_throttle TO {app}")


def downgrade() -> None:
    op.drop_table("login_throttle")
