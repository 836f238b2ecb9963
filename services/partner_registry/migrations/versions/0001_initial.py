"""country and agreement versions, the registry counter, and the kit's reliability tables

Revision ID: 0001
Revises:
"""

from datetime import UTC, datetime

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
        "country_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("registry_version", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("memberships", sa.Text, nullable=False),
        sa.Column("partnership_level", sa.Integer, nullable=True),
        sa.Column("partnership", sa.Text, nullable=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("confidence", sa.String(20), nullable=False),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.Column("recorded_by", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("recorded_at", ts, nullable=False),
        sa.UniqueConstraint("country", "version", name="uq_country_version"),
    )
    op.create_index("ix_country_versions_registry", "country_versions", ["registry_version"])
    op.create_table(
        "agreement_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agreement_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("registry_version", sa.Integer, nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("effective_from", sa.Date, nullable=True),
        sa.Column("effective_to", sa.Date, nullable=True),
        sa.Column("content_counts_as_eligible", sa.Boolean, nullable=False),
        sa.Column("max_content_share", sa.String(40), nullable=True),
        sa.Column("entities_eligible", sa.Boolean, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("confidence", sa.String(20), nullable=False),
        sa.Column("unconfirmed", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.Column("supersedes", sa.Text, nullable=True),
        sa.Column("recorded_by", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("recorded_at", ts, nullable=False),
        sa.UniqueConstraint("agreement_id", "version", name="uq_agreement_version"),
    )
    op.create_index("ix_agreement_versions_country", "agreement_versions", ["country", "agreement_id", "version"])
    meta = op.create_table(
        "registry_meta",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("registry_version", sa.Integer, nullable=False),
        sa.Column("seed_version", sa.String(100), nullable=False),
        sa.Column("countries", sa.Integer, nullable=False),
        sa.Column("agreements", sa.Integer, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    # the single counter row exists from the start, so every writer can lock it (SELECT … FOR UPDATE)
    op.bulk_insert(meta, [{"id": 1, "registry_version": 0, "seed_version": "", "countries": 0, "agreements": 0,
                           "updated_at": datetime.now(UTC)}])


def downgrade() -> None:
    for t in ("registry_meta", "agreement_versions", "country_versions", "audit_log", "dead_letters",
              "message_failures", "inbox", "outbox"):
        op.drop_table(t)
