"""verification reports, the registry replica and the kit's reliability tables

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
    """Over 60 lines on purpose: a migration is a flat, ordered list of DDL that reads best top to bottom."""
    create_kit_tables()
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "verification_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(100), nullable=False),
        sa.Column("request_event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("request_type", sa.String(60), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("rules_version", sa.String(60), nullable=False),
        sa.Column("registry_version", sa.Integer, nullable=True),
        sa.Column("contract_signed_on", sa.Date, nullable=False),
        sa.Column("participants", sa.Text, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("proposal", sa.Text, nullable=False),
        sa.Column("created_at", ts, nullable=False),
    )
    op.create_index("ix_verification_reports_case_id", "verification_reports", ["case_id", "id"])
    op.create_table(
        "ov_replica_countries",
        sa.Column("country", sa.String(2), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("memberships", sa.Text, nullable=False),
        sa.Column("partnership_level", sa.Integer, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    op.create_table(
        "ov_replica_country_versions",
        sa.Column("country", sa.String(2), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("recorded_at", ts, nullable=False),
    )
    op.create_table(
        "ov_replica_agreements",
        sa.Column("agreement_id", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("kind", sa.String(60), nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("effective_from", sa.Date, nullable=True),
        sa.Column("effective_to", sa.Date, nullable=True),
        sa.Column("content_counts_as_eligible", sa.Boolean, nullable=False),
        sa.Column("max_content_share", sa.String(40), nullable=True),
        sa.Column("entities_eligible", sa.Boolean, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("confidence", sa.String(30), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    op.create_index("ix_ov_replica_agreements_country", "ov_replica_agreements", ["country"])
    op.create_table(
        "ov_replica_agreement_versions",
        sa.Column("agreement_id", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("recorded_at", ts, nullable=False),
    )
    op.create_table(
        "ov_replica_publications",
        sa.Column("registry_version", sa.Integer, primary_key=True),
        sa.Column("seed_version", sa.String(100), nullable=False),
        sa.Column("countries", sa.Integer, nullable=False),
        sa.Column("agreements", sa.Integer, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("occurred_at", ts, nullable=False),
        sa.Column("recorded_at", ts, nullable=False),
    )


def downgrade() -> None:
    for t in ("ov_replica_publications", "ov_replica_agreement_versions", "ov_replica_agreements", "ov_replica_country_versions",
              "ov_replica_countries", "verification_reports", "audit_log", "dead_letters", "message_failures", "inbox",
              "outbox"):
        op.drop_table(t)
