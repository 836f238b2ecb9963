"""four-eyes approvals: requests of one operator waiting for a second (safe_procurement.shared.kit.approvals)

Revision ID: 0004_i25_approvals
Revises: 0003_i25_audit_chain
"""

from safe_procurement.shared.kit.approvals import migrate_down, migrate_up

revision = "0004_i25_approvals"
down_revision = "0003_i25_audit_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrate_up()


def downgrade() -> None:
    migrate_down()
