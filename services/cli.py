"""`safe-procurement`: run the platform and work with it from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from services.client import PlatformClient, is_final
from services.launcher import SERVICES, Launcher, run_up

DEMO = Path(__file__).parent / "demo" / "proposal.json"
STAGES = ["submitted", "verifying", "origin_verified", "loan_requested", "loan_approved"]


def _stage_detail(case: dict[str, Any]) -> str:
    v = case.get("verification") or {}
    loan = case.get("loan") or {}
    status = case["status"]
    if status in ("origin_verified", "origin_rejected", "needs_review") and v:
        shares = ", ".join(f"{ep['name']}: non-eligible {float(ep['non_eligible_share']) * 100:.2f}% (cap {ep['cap']})"
                           for ep in v.get("end_products", []))
        failed = [f["rule"] for f in v.get("findings", []) if f.get("passed") is False]
        return f"{v.get('outcome')} — {shares}" + (f"; failed {', '.join(failed)}" if failed else "")
    if status == "loan_requested":
        return ", ".join(f"{x['member_state']} EUR {x['amount_eur']}" for x in loan.get("requested", []))
    if status == "loan_approved":
        return ", ".join(f"loan {x['loan_id'][:8]} {x['member_state']} EUR {x['amount_eur']}" for x in loan.get("loans", []))
    if status == "loan_rejected":
        return "; ".join(f"{x['member_state']} {x['rule']}: {x['message']}" for x in loan.get("reasons", []))
    return ""


async def watch_case(client: PlatformClient, case_id: str, *, timeout: float = 60.0, out: Any = sys.stdout) -> dict:
    """Live progress: one line per stage as the case reaches it."""
    seen: list[str] = ["submitted"]
    print(f"  \u2713 {'submitted':<16} {0:7.0f} ms", file=out, flush=True)
    started = time.monotonic()
    case: dict[str, Any] = {}
    while time.monotonic() - started < timeout:
        case = await client.case(case_id)
        if not seen or seen[-1] != case["status"]:
            # stages passed between two polls are shown too, so the display never skips a step
            if case["status"] in STAGES and seen and seen[-1] in STAGES:
                for stage in STAGES[STAGES.index(seen[-1]) + 1 : STAGES.index(case["status"])]:
                    print(f"  \u2713 {stage:<16}", file=out, flush=True)
            seen.append(case["status"])
            mark = "\u2713" if case["status"] not in ("origin_rejected", "loan_rejected", "withdrawn") else "\u2717"
            elapsed = (time.monotonic() - started) * 1000
            print(f"  {mark} {case['status']:<16} {elapsed:7.0f} ms  {_stage_detail(case)}", file=out, flush=True)
        if is_final(case) or case["status"] == "needs_review":
            return case
        await asyncio.sleep(0.05)
    print(f"  … still {case.get('status')} after {timeout}s — see GET /procurements/{case_id}/explain", file=out)
    return case


async def demo(urls: dict[str, str], token: str) -> None:
    proposal = json.loads(DEMO.read_text())
    proposal["reference"] = f"DEMO-{time.strftime('%Y%m%d-%H%M%S')}"
    async with PlatformClient(urls, token) as client:
        r = await client.submit(proposal)
        if r.status_code not in (200, 201):
            print(f"demo submission failed: {r.status_code} {r.text}")
            return
        case = r.json()
        print(f"\ndemo procurement {proposal['reference']} ({proposal['title']}) → case {case['id']}", flush=True)
        final = await watch_case(client, case["id"])
        print(f"demo finished in status {final.get('status')}; timeline: "
              f"{urls['applications']}/procurements/{case['id']}/timeline\n", flush=True)


def _urls(args: argparse.Namespace) -> dict[str, str]:
    offset = getattr(args, "port_offset", 0) or 0
    return {s: f"http://127.0.0.1:{p + offset}" for s, p in SERVICES.items()}


def cmd_up(args: argparse.Namespace) -> int:
    replicas = {}
    for spec in args.replicas or []:
        svc, _, n = spec.partition("=")
        if svc not in SERVICES or not n.isdigit():
            print(f"--replicas takes SERVICE=N with SERVICE one of {', '.join(SERVICES)}")
            return 2
        replicas[svc] = int(n)
    launcher = Launcher(var_dir=Path(args.var), replicas=replicas,
                        services=args.services.split(",") if args.services else list(SERVICES),
                        port_offset=args.port_offset, restart=not args.no_restart, console=not args.no_console)
    token = os.environ.get("SAFE_DEMO_TOKEN", "dev-operator")
    after = (lambda _l: demo(_urls(args), token)) if args.demo else None
    return asyncio.run(run_up(launcher, after))


def cmd_submit(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with PlatformClient(_urls(args), args.token) as client:
            r = await client.submit(Path(args.file).read_bytes())
            print(json.dumps(r.json(), indent=2))
            if r.status_code in (200, 201) and args.watch:
                await watch_case(client, r.json()["id"])
            return 0 if r.status_code in (200, 201) else 1
    return asyncio.run(go())


def cmd_watch(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with PlatformClient(_urls(args), args.token) as client:
            await watch_case(client, args.case_id, timeout=args.timeout)
        return 0
    return asyncio.run(go())


def cmd_dead_letters(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with PlatformClient(_urls(args), args.token) as client:
            base = client.url(args.service, "/dead-letters")
            if args.action == "list":
                r = await client.http.get(base, params={k: v for k, v in {"status": args.status}.items() if v})
            elif args.action == "show":
                r = await client.http.get(f"{base}/{args.id}")
            elif args.action == "replay":
                r = await client.http.post(f"{base}/{args.id}/replay", json={"reason": args.reason})
            else:
                r = await client.http.post(f"{base}/{args.id}/discard", json={"reason": args.reason or ""})
            print(json.dumps(r.json(), indent=2, default=str))
            return 0 if r.status_code < 400 else 1
    return asyncio.run(go())


def cmd_audit(args: argparse.Namespace) -> int:
    from services import governance_cli

    async def go() -> int:
        urls = _urls(args)
        if args.service:
            urls = {args.service: urls[args.service], **{k: v for k, v in urls.items() if k != args.service}}
        async with PlatformClient(urls, args.token) as client:
            if args.action == "list":
                params = {k: v for k, v in {"action": args.filter_action, "actor": args.actor, "since": args.since,
                                            "until": args.until, "correlation_id": args.case}.items() if v}
                r = await client.http.get(client.url(args.service or "applications", "/audit"), params=params)
                print(json.dumps(r.json(), indent=2, default=str))
                return 0 if r.status_code < 400 else 1
            report = await governance_cli.verify_all(client.http, urls)
            if args.service:
                report = [r for r in report if r["service"] == args.service]
        print(json.dumps(report, indent=2, default=str) if args.json else governance_cli.verify_table(report))
        return 0 if all(r.get("ok") for r in report) else 1
    return asyncio.run(go())


def cmd_whatif(args: argparse.Namespace) -> int:
    from services import governance_cli

    async def go() -> int:
        async with PlatformClient(_urls(args), args.token, timeout=600) as client:
            code, out = await governance_cli.whatif(client.http, client.url("origin_verification", ""), args.rules,
                                                    args.registry_at, args.since, as_json=args.json)
        print(out)
        return code
    return asyncio.run(go())


def cmd_ledger_check(_args: argparse.Namespace) -> int:
    from services.loan_disbursement.reconcile import main as reconcile_main

    return int(reconcile_main() or 0)


def cmd_scenario(args: argparse.Namespace) -> int:
    from services.testing import scenarios

    async def go() -> int:
        results = []
        async with PlatformClient(_urls(args), args.token) as client:
            for path in args.files:
                results.append(await scenarios.run(client, scenarios.load(path), unique=args.unique,
                                                   timeout=args.timeout))
                print(results[-1].line(), flush=True)
        passed = sum(r.passed for r in results)
        print(f"{passed} passed, {len(results) - passed} failed")
        return 0 if passed == len(results) else 1
    return asyncio.run(go())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="safe-procurement", description=__doc__)
    p.add_argument("--token", default=os.environ.get("SAFE_TOKEN", "dev-operator"), help="bearer token")
    p.add_argument("--port-offset", type=int, default=0, help="added to every service's default port")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the four services and supervise them")
    up.add_argument("--var", default=os.environ.get("SAFE_VAR_DIR", "var"), help="state directory (SQLite, logs)")
    up.add_argument("--replicas", action="append", metavar="SERVICE=N", help="run N replicas of a service")
    up.add_argument("--services", help="comma-separated subset of services")
    up.add_argument("--no-restart", action="store_true", help="do not restart children that die")
    up.add_argument("--no-console", action="store_true", help="do not start the operator console (port 8000)")
    up.add_argument("--demo", action="store_true", help="submit a demo proposal once ready and show its progress")
    up.set_defaults(fn=cmd_up)

    s = sub.add_parser("submit", help="submit a proposal file")
    s.add_argument("file")
    s.add_argument("--watch", action="store_true")
    s.set_defaults(fn=cmd_submit)

    w = sub.add_parser("watch", help="show a case's progress live")
    w.add_argument("case_id")
    w.add_argument("--timeout", type=float, default=60)
    w.set_defaults(fn=cmd_watch)

    d = sub.add_parser("dead-letters", help="list/show/replay/discard dead letters of a service")
    d.add_argument("action", choices=["list", "show", "replay", "discard"])
    d.add_argument("--service", required=True, choices=list(SERVICES))
    d.add_argument("--id", type=int)
    d.add_argument("--status")
    d.add_argument("--reason")
    d.set_defaults(fn=cmd_dead_letters)

    au = sub.add_parser("audit", help="verify the tamper-evident audit chains, or list audit entries")
    au.add_argument("action", choices=["verify", "list"])
    au.add_argument("--service", choices=list(SERVICES), help="one service (default: all for verify)")
    au.add_argument("--json", action="store_true", help="verify: the report as JSON")
    au.add_argument("--filter-action", dest="filter_action", help="list: only this action")
    au.add_argument("--actor")
    au.add_argument("--case", help="list: only entries of this case (correlation id)")
    au.add_argument("--since")
    au.add_argument("--until")
    au.set_defaults(fn=cmd_audit)

    wi = sub.add_parser("whatif", help="replay stored cases' verification with candidate rules / a registry snapshot")
    wi.add_argument("--rules", help="candidate rulebook (YAML or JSON, the format of safe_rules.yaml)")
    wi.add_argument("--registry-at", dest="registry_at", help="YYYY-MM-DD: the registry as received by that day")
    wi.add_argument("--since", help="only cases decided since this date/time")
    wi.add_argument("--json", action="store_true", help="the report as JSON instead of a table")
    wi.set_defaults(fn=cmd_whatif)

    led = sub.add_parser("ledger", help="loan ledger tools")
    led.add_argument("action", choices=["check"])
    led.set_defaults(fn=cmd_ledger_check)

    sc = sub.add_parser("scenario", help="run scenario files against a running platform")
    sc.add_argument("action", choices=["run"])
    sc.add_argument("files", nargs="+")
    sc.add_argument("--unique", action="store_true", help="suffix references so a scenario can run again")
    sc.add_argument("--timeout", type=float, default=30)
    sc.set_defaults(fn=cmd_scenario)

    args = p.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
