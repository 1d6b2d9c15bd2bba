"""customer emails: notification templates, orders.customer_locale, emails.reply_to

Revision ID: b3c8e1f0a9d2
Revises: 9943257b30f1
Create Date: 2026-12-01 17:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "b3c8e1f0a9d2"
down_revision: str | None = "9943257b30f1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_templates",
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.String(length=1000), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_notification_templates_merchant_id_merchants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_templates")),
        sa.UniqueConstraint(
            "merchant_id",
            "kind",
            "locale",
            name=op.f("uq_notification_templates_merchant_id_kind_locale"),
        ),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_locale", sa.String(length=16), nullable=True))
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reply_to", sa.String(length=320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("emails", schema=None) as batch_op:
        batch_op.drop_column("reply_to")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("customer_locale")
    op.drop_table("notification_templates")
