"""running totals of the ledger, kept by triggers: per facility Σ of each kind of entry; per plan line Σ of
what active loans drew from it (backfilled from the existing rows)

A loan decision reads these few rows instead of aggregating the whole ledger, so it costs the same however
many cases were ever approved. The database maintains them itself, in the transaction that writes each
ledger entry / plan draw / loan status, so no code path can forget one: the ledger stays the source of truth
and the reconciliation checks that every total still equals the sum it stands for.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from safe_procurement.services.loan_disbursement.adapters.types import Money

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# ledger entry kind → the facility column holding its running total
TOTALS = {
    "reservation": "reserved_eur",
    "release": "released_eur",
    "pre_financing": "pre_financing_paid_eur",
    "instalment": "instalments_paid_eur",
}

# + amount to the (member_state, category) total, creating the row the first time (upsert; same text on both)
_ADD = ("INSERT INTO plan_draw_totals (member_state, category, drawn_eur) {rows} "
        "ON CONFLICT (member_state, category) DO UPDATE SET drawn_eur = plan_draw_totals.drawn_eur + excluded.drawn_eur")
_ACTIVE = "(SELECT status FROM loans WHERE loan_id = {loan}) = 'active'"
# a loan that becomes active adds its draws; one that stops being active (released) takes them back
_LOAN_STATUS = _ADD.format(rows=(
    "SELECT d.member_state, d.category, CASE WHEN NEW.status = 'active' THEN d.amount_eur ELSE -d.amount_eur END "
    "FROM plan_draws d WHERE d.loan_id = NEW.loan_id"))
_STATUS_CHANGED = "(OLD.status = 'active') IS NOT (NEW.status = 'active')"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # First the columns: on PostgreSQL this takes the facilities table lock, so every writer (they all lock a
    # facility row first, or check a foreign key to one) waits for this migration to commit; the backfill
    # below then sees a ledger no one is writing to, and every later write goes through the triggers.
    for column in TOTALS.values():
        op.add_column("facilities", sa.Column(column, Money(), nullable=False, server_default="0"))
    op.create_table(
        "plan_draw_totals",
        sa.Column("member_state", sa.String(2), primary_key=True),
        sa.Column("category", sa.String(60), primary_key=True),
        sa.Column("drawn_eur", Money(), nullable=False, server_default="0"),
    )
    if postgres:
        _postgres_triggers()
    else:
        _sqlite_triggers()
    # backfill from what is already there
    for kind, column in TOTALS.items():
        op.execute(
            f"UPDATE facilities SET {column} = COALESCE((SELECT SUM(e.amount) FROM ledger_entries e "
            f"WHERE e.member_state = facilities.member_state AND e.kind = '{kind}'), 0)"
        )
    op.execute(
        "INSERT INTO plan_draw_totals (member_state, category, drawn_eur) "
        "SELECT d.member_state, d.category, SUM(d.amount_eur) FROM plan_draws d "
        "JOIN loans l ON l.loan_id = d.loan_id WHERE l.status = 'active' GROUP BY d.member_state, d.category"
    )


def _sqlite_triggers() -> None:
    # ledger_entries is append-only (0001 refuses UPDATE and DELETE): an insert is the only change to follow
    for kind, column in TOTALS.items():
        op.execute(
            f"CREATE TRIGGER ledger_entries_total_{kind} AFTER INSERT ON ledger_entries WHEN NEW.kind = '{kind}' "
            f"BEGIN UPDATE facilities SET {column} = {column} + NEW.amount "
            "WHERE member_state = NEW.member_state; END"
        )
    new_rows = "SELECT NEW.member_state, NEW.category, NEW.amount_eur WHERE " + _ACTIVE.format(loan="NEW.loan_id")
    old_rows = "SELECT OLD.member_state, OLD.category, -OLD.amount_eur WHERE " + _ACTIVE.format(loan="OLD.loan_id")
    op.execute(f"CREATE TRIGGER plan_draws_total_insert AFTER INSERT ON plan_draws BEGIN {_ADD.format(rows=new_rows)}; END")
    op.execute(f"CREATE TRIGGER plan_draws_total_delete AFTER DELETE ON plan_draws BEGIN {_ADD.format(rows=old_rows)}; END")
    op.execute(
        "CREATE TRIGGER plan_draws_total_update AFTER UPDATE ON plan_draws "
        f"BEGIN {_ADD.format(rows=old_rows)}; {_ADD.format(rows=new_rows)}; END"
    )
    op.execute(
        f"CREATE TRIGGER loans_plan_draw_total AFTER UPDATE OF status ON loans WHEN {_STATUS_CHANGED} "
        f"BEGIN {_LOAN_STATUS}; END"
    )


def _postgres_triggers() -> None:
    ifs = " ".join(
        f"{'IF' if i == 0 else 'ELSIF'} NEW.kind = '{kind}' THEN UPDATE facilities SET {column} = {column} + NEW.amount "
        "WHERE member_state = NEW.member_state;"
        for i, (kind, column) in enumerate(TOTALS.items())
    )
    op.execute(
        "CREATE FUNCTION ledger_entries_totals() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {ifs} END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_totals AFTER INSERT ON ledger_entries "
        "FOR EACH ROW EXECUTE FUNCTION ledger_entries_totals()"
    )
    op.execute(
        "CREATE FUNCTION plan_draws_totals() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP IN ('UPDATE', 'DELETE') THEN "
        f"  {_ADD.format(rows='SELECT OLD.member_state, OLD.category, -OLD.amount_eur WHERE ' + _ACTIVE.format(loan='OLD.loan_id'))}; "
        "END IF; "
        "IF TG_OP IN ('INSERT', 'UPDATE') THEN "
        f"  {_ADD.format(rows='SELECT NEW.member_state, NEW.category, NEW.amount_eur WHERE ' + _ACTIVE.format(loan='NEW.loan_id'))}; "
        "END IF; "
        "RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER plan_draws_totals AFTER INSERT OR UPDATE OR DELETE ON plan_draws "
        "FOR EACH ROW EXECUTE FUNCTION plan_draws_totals()"
    )
    op.execute(
        "CREATE FUNCTION loans_plan_draw_totals() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {_LOAN_STATUS}; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER loans_plan_draw_totals AFTER UPDATE OF status ON loans FOR EACH ROW "
        f"WHEN ({_STATUS_CHANGED.replace('IS NOT', 'IS DISTINCT FROM')}) EXECUTE FUNCTION loans_plan_draw_totals()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, table in (("ledger_entries_totals", "ledger_entries"), ("plan_draws_totals", "plan_draws"),
                               ("loans_plan_draw_totals", "loans")):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {trigger}()")
    else:
        for trigger in [*(f"ledger_entries_total_{k}" for k in TOTALS), "plan_draws_total_insert",
                        "plan_draws_total_delete", "plan_draws_total_update", "loans_plan_draw_total"]:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    op.drop_table("plan_draw_totals")
    for column in TOTALS.values():
        op.drop_column("facilities", column)
