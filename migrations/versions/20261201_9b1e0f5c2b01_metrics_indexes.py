"""indexes for the metrics' scrape-time gauges (issue 9, ops)

Revision ID: 9b1e0f5c2b01
Revises: 8a1e0f5c2b01
Create Date: 2026-12-01 23:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "9b1e0f5c2b01"
down_revision: str | None = "8a1e0f5c2b01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tracking_polls_next", "tracking_polls", ["next_poll_at"], unique=False)
    op.create_index(
        "ix_exception_cases_kind", "exception_cases", ["resolved_at", "kind"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_exception_cases_kind", table_name="exception_cases")
    op.drop_index("ix_tracking_polls_next", table_name="tracking_polls")
