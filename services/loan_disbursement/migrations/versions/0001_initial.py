"""facilities, investment plans, loan decisions, loans, the append-only ledger and the kit's tables

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from safe_procurement.services.loan_disbursement.adapters.types import Money
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
        "facilities",
        sa.Column("member_state", sa.String(2), primary_key=True),
        sa.Column("max_eur", Money(), nullable=False),
        sa.Column("tentative_eur", Money(), nullable=True),
        sa.Column("council_max_eur", Money(), nullable=True),
        sa.Column("pre_financing_eur", Money(), nullable=True),
        sa.Column("suspended", sa.Boolean, nullable=False),
        sa.Column("suspended_reason", sa.Text, nullable=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("confidence", sa.String(20), nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("supports_ukraine", sa.Boolean, nullable=False),
        sa.Column("plan_source", sa.Text, nullable=False),
        sa.Column("plan_version", sa.Integer, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    op.create_table(
        "plan_lines",
        sa.Column("member_state", sa.String(2), sa.ForeignKey("facilities.member_state"), primary_key=True),
        sa.Column("category", sa.String(60), primary_key=True),
        sa.Column("amount_eur", Money(), nullable=False),
    )
    op.create_table(
        "loan_requests",
        sa.Column("case_id", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("reference", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("verification_outcome", sa.String(30), nullable=False),
        sa.Column("requested", sa.Text, nullable=False),
        sa.Column("categories", sa.Text, nullable=False),
        sa.Column("participants", sa.Text, nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("decided_at", ts, nullable=False),
        sa.Column("withdrawn_at", ts, nullable=True),
    )
    op.create_table(
        "loans",
        sa.Column("loan_id", sa.String(36), primary_key=True),
        sa.Column("case_id", sa.String(100), sa.ForeignKey("loan_requests.case_id"), nullable=False),
        sa.Column("member_state", sa.String(2), sa.ForeignKey("facilities.member_state"), nullable=False),
        sa.Column("amount_eur", Money(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("approved_at", ts, nullable=False),
        sa.Column("released_at", ts, nullable=True),
        sa.UniqueConstraint("case_id", "member_state", name="uq_loans_case_member_state"),
        sa.CheckConstraint("status IN ('active', 'released')", name="ck_loans_status"),
    )
    op.create_index("ix_loans_member_state", "loans", ["member_state", "status"])
    op.create_table(
        "plan_draws",
        sa.Column("loan_id", sa.String(36), sa.ForeignKey("loans.loan_id"), primary_key=True),
        sa.Column("category", sa.String(60), primary_key=True),
        sa.Column("member_state", sa.String(2), nullable=False),
        sa.Column("amount_eur", Money(), nullable=False),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("member_state", sa.String(2), sa.ForeignKey("facilities.member_state"), nullable=False),
        sa.Column("case_id", sa.String(100), nullable=True),
        sa.Column("loan_id", sa.String(36), sa.ForeignKey("loans.loan_id"), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("requested_on", sa.Date, nullable=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=True),
        sa.CheckConstraint("kind IN ('reservation', 'release', 'pre_financing', 'instalment')", name="ck_ledger_kind"),
        sa.CheckConstraint("amount > 0", name="ck_ledger_amount_positive"),
    )
    op.create_index("ix_ledger_member_state_kind", "ledger_entries", ["member_state", "kind"])
    op.create_index("ix_ledger_loan", "ledger_entries", ["loan_id"])
    op.create_index("ix_ledger_case", "ledger_entries", ["case_id"])
    op.create_table(
        "case_withdrawals",
        sa.Column("case_id", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("withdrawn_at", ts, nullable=False),
        sa.Column("released_eur", Money(), nullable=False),
    )
    # The ledger is append-only: the database itself refuses to change or remove an entry.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'ledger_entries is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries "
            "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_entries_no_{verb.lower()} BEFORE {verb} ON ledger_entries "
                "BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_entries_append_only ON ledger_entries")
        op.execute("DROP FUNCTION IF EXISTS ledger_entries_append_only()")
    for t in ("case_withdrawals", "ledger_entries", "plan_draws", "loans", "loan_requests", "plan_lines", "facilities",
              "audit_log", "dead_letters", "message_failures", "inbox", "outbox"):
        op.drop_table(t)
