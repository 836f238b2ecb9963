"""`python -m safe_procurement.services.loan_disbursement.reconcile [--json]`: recompute every facility's balances from the
ledger, compare them with the approved loans, print the report. Exit 0: no difference; 1: differences;
2: the database could not be read. Uses the service's settings (LOAN_DISBURSEMENT_DATABASE_URL…)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from safe_procurement.services.loan_disbursement.adapters.ledger import reconcile
from safe_procurement.services.loan_disbursement.config import Settings
from safe_procurement.services.loan_disbursement.domain.reconcile import Report
from safe_procurement.shared.kit import db

__all__ = ["main", "reconcile", "run"]


async def run(settings: Settings) -> Report:
    engine = db.make_engine(settings.database_url, pool_size=1)
    try:
        async with db.transaction(db.session_factory(engine)) as session:
            return await reconcile(session, pre_financing_share=settings.pre_financing_share)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m safe_procurement.services.loan_disbursement.reconcile", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    # known args only: `safe-procurement ledger-check` calls main() with its own argv still in sys.argv
    args, _rest = parser.parse_known_args(argv)
    try:
        report = asyncio.run(run(settings or Settings()))
    except Exception as e:
        print(f"ledger check failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
