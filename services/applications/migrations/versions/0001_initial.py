"""cases, participants, timeline and the kit's reliability tables

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from safe_procurement.shared.kit.migrations import create_kit_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kit_tables()
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "cases",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("reference", sa.String(100), nullable=False, unique=True),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("lead_member_state", sa.String(2), nullable=False),
        sa.Column("proposal_hash", sa.String(64), nullable=False),
        sa.Column("proposal", sa.Text, nullable=False),
        sa.Column("financing_requested", sa.Boolean, nullable=False),
        sa.Column("verification", sa.Text, nullable=True),
        sa.Column("verification_request_id", sa.String(36), nullable=True),
        sa.Column("loan", sa.Text, nullable=True),
        sa.Column("status_since", ts, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    op.create_index("ix_cases_status_seq", "cases", ["status", "seq"])
    op.create_table(
        "case_participants",
        sa.Column("case_seq", sa.Integer, primary_key=True),
        sa.Column("country", sa.String(2), primary_key=True),
    )
    op.create_index("ix_case_participants_country", "case_participants", ["country", "case_seq"])
    op.create_table(
        "timeline",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(60), nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Column("recorded_at", ts, nullable=False),
        sa.Column("event_id", sa.String(200), nullable=True),
        sa.Column("causation_id", sa.String(36), nullable=True),
        sa.Column("service", sa.String(40), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
    )
    op.create_index("ix_timeline_case", "timeline", ["case_id", "id"])


def downgrade() -> None:
    for t in ("timeline", "case_participants", "cases", "audit_log", "dead_letters", "message_failures", "inbox", "outbox"):
        op.drop_table(t)
