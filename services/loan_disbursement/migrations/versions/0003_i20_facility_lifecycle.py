"""facility lifecycle (L-8): status, the agreement's date and reference, every change kept; pre-financing cleared
against loans (L-9); the assumptions of each loan decision

Both new tables are append-only like the ledger (the database refuses UPDATE and DELETE).

`status` stays NULL on existing rows: the service fills it from the seed file when it starts (reference data,
not code), and audits it.

Revision ID: 0003_i20_facility_lifecycle
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from safe_procurement.services.loan_disbursement.adapters.types import Money
from safe_procurement.shared.kit.tables import TS

revision = "0003_i20_facility_lifecycle"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("status", sa.String(length=20)),
    ("status_before_suspension", sa.String(length=20)),
    ("status_changed_on", sa.Date()),
    ("status_reference", sa.String()),
    ("agreement_signed_on", sa.Date()),
    ("agreement_reference", sa.String()),
)

_APPEND_ONLY = ("facility_status_changes", "pre_financing_clearings")


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("facilities", sa.Column(name, type_, nullable=True))
    op.add_column("loan_requests", sa.Column("assumptions", sa.Text(), nullable=False, server_default="[]"))
    op.create_table(
        "facility_status_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("member_state", sa.String(2), sa.ForeignKey("facilities.member_state"), nullable=False),
        sa.Column("from_status", sa.String(20), nullable=True),
        sa.Column("to_status", sa.String(20), nullable=False),
        sa.Column("effective_on", sa.Date, nullable=True),
        sa.Column("reference", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_facility_status_changes_ms", "facility_status_changes", ["member_state", "id"])
    op.create_table(
        "pre_financing_clearings",
        sa.Column("ledger_entry_id", sa.Integer, sa.ForeignKey("ledger_entries.id"), primary_key=True),
        sa.Column("member_state", sa.String(2), sa.ForeignKey("facilities.member_state"), nullable=False),
        sa.Column("loan_id", sa.String(36), sa.ForeignKey("loans.loan_id"), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_clearing_amount_positive"),
    )
    op.create_index("ix_pre_financing_clearings_loan", "pre_financing_clearings", ["loan_id"])
    op.create_index("ix_pre_financing_clearings_ms", "pre_financing_clearings", ["member_state"])
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in _APPEND_ONLY:
        if postgres:
            op.execute(f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                       f"BEGIN RAISE EXCEPTION '{table} is append-only'; END $$")
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()")
        else:
            for verb in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in _APPEND_ONLY:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
        op.drop_table(table)
    op.drop_column("loan_requests", "assumptions")
    for name, _type in reversed(_COLUMNS):
        op.drop_column("facilities", name)
