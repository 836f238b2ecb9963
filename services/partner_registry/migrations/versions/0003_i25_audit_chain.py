"""the tamper-evident audit chain: seq, prev_hash and hash on audit_log (existing entries chained in id order),
and audit_anchors, the chain heads of the other services kept here

Revision ID: 0003_i25_audit_chain
Revises: 0001
"""

from safe_procurement.shared.kit.audit_chain import migrate_down, migrate_up

revision = "0003_i25_audit_chain"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    migrate_up()


def downgrade() -> None:
    migrate_down()
