"""proposal revisions: every amendment of a case's proposal, numbered, readable afterwards

Revision ID: 0002_i20_proposal_revisions
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_i20_proposal_revisions"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proposal_revisions",
        sa.Column("case_id", sa.String(36), primary_key=True),
        sa.Column("revision", sa.Integer, primary_key=True),
        sa.Column("proposal", sa.Text, nullable=False),
        sa.Column("changed", sa.Text, nullable=False),
        sa.Column("amended_by", sa.String(100), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("proposal_revisions")
