"""`safe-procurement`: run the platform and work with it from a terminal.

Global options (--url, --profile, --token, --port-offset, --json, --debug) go before or after the
subcommand. Exit codes: 0 success; 1 a check or scenario failed, or the platform refused the request;
2 usage or input error (bad option, missing or malformed file, no token); 3 the platform is unreachable;
4 not found (unknown case or dead letter); 5 the token was rejected (401/403); 130 interrupted.
Unexpected errors print one line; --debug (or SAFE_DEBUG=1) prints the traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from safe_procurement.services.client import PlatformClient, is_final
from safe_procurement.services.launcher import SERVICES, Launcher, run_up
from safe_procurement.services.profiles import ProfileError, Target, resolve

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


EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND, EXIT_AUTH, EXIT_INTERRUPTED = 1, 2, 3, 4, 5, 130


class CliError(Exception):
    """An error the user can act on: printed as one line, the process exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def version() -> str:
    try:
        return metadata.version("safe-procurement")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _target(args: argparse.Namespace) -> Target:
    try:
        return resolve(urls=args.url, token=args.token, profile=args.profile, port_offset=args.port_offset)
    except ProfileError as e:
        raise CliError(str(e), EXIT_USAGE) from None


def _client(args: argparse.Namespace) -> PlatformClient:
    target = _target(args)
    return PlatformClient(target.urls, target.token, timeout=args.http_timeout)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str), flush=True)


def _progress(args: argparse.Namespace) -> Any:
    """Where live progress goes: stdout for people, stderr when stdout carries --json."""
    return sys.stderr if args.json else sys.stdout


def _check(r: httpx.Response, what: str) -> httpx.Response:
    """Turn an error answer into a CliError with the platform's own message."""
    if r.status_code < 400:
        return r
    try:
        body = r.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = r.text[:300]
    if not isinstance(detail, str):
        detail = json.dumps(detail, default=str)[:1000]
    code = {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND}.get(r.status_code, EXIT_FAILED)
    raise CliError(f"{what}: {r.status_code} {detail}", code)


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CliError(f"{path}: no such file", EXIT_USAGE) from None
    except OSError as e:
        raise CliError(f"{path}: cannot be read ({e.strerror or e})", EXIT_USAGE) from None


def cmd_up(args: argparse.Namespace) -> int:
    replicas = {}
    for spec in args.replicas or []:
        svc, _, n = spec.partition("=")
        if svc not in SERVICES or not n.isdigit():
            raise CliError(f"--replicas takes SERVICE=N with SERVICE one of {', '.join(SERVICES)}", EXIT_USAGE)
        replicas[svc] = int(n)
    services = args.services.split(",") if args.services else list(SERVICES)
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        raise CliError(f"--services: unknown {', '.join(unknown)} (one of {', '.join(SERVICES)})", EXIT_USAGE)
    launcher = Launcher(var_dir=Path(args.var), replicas=replicas, services=services,
                        port_offset=args.port_offset, restart=not args.no_restart, console=not args.no_console)
    token = os.environ.get("SAFE_DEMO_TOKEN", "dev-operator")
    urls = {c.service: c.url for c in launcher.plan() if c.replica == 1}
    after = (lambda _l: demo(urls, token)) if args.demo else None
    return asyncio.run(run_up(launcher, after))


def cmd_submit(args: argparse.Namespace) -> int:
    body = _read_file(args.file)

    async def go() -> int:
        async with _client(args) as client:
            r = _check(await client.submit(body), f"POST /procurements ({args.file})")
            case = r.json()
            if args.watch:
                if not args.json:
                    print(f"case {case['id']} ({case.get('reference')}) submitted", flush=True)
                case = await watch_case(client, case["id"], timeout=args.timeout, out=_progress(args))
            if args.json:
                _print_json(case)
            elif not args.watch:
                print(f"case {case['id']} ({case.get('reference')}) {case.get('status')}")
            return 0
    return asyncio.run(go())


async def _case(client: PlatformClient, case_id: str) -> dict[str, Any]:
    r = await client.http.get(client.url("applications", f"/procurements/{case_id}"))
    if r.status_code in (404, 422):
        raise CliError(f"no case {case_id!r}", EXIT_NOT_FOUND)
    return _check(r, f"GET /procurements/{case_id}").json()  # type: ignore[no-any-return]


def cmd_watch(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _client(args) as client:
            await _case(client, args.case_id)  # an unknown id is an error, not a minute of polling
            case = await watch_case(client, args.case_id, timeout=args.timeout, out=_progress(args))
            if args.json:
                _print_json(case)
        return 0
    return asyncio.run(go())


def cmd_case(args: argparse.Namespace) -> int:
    async def go() -> int:
        async with _client(args) as client:
            case = await _case(client, args.case_id)
            if args.json:
                _print_json(case)
            else:
                print(f"case {case['id']} ({case.get('reference')}) {case['status']}  {_stage_detail(case)}")
        return 0
    return asyncio.run(go())


def cmd_dead_letters(args: argparse.Namespace) -> int:
    if args.action != "list" and args.id is None:
        raise CliError(f"dead-letters {args.action} needs --id (see `dead-letters list`)", EXIT_USAGE)
    if args.action == "discard" and not args.reason:
        raise CliError("dead-letters discard needs --reason (it is kept in the audit trail)", EXIT_USAGE)

    async def go() -> int:
        async with _client(args) as client:
            base = client.url(args.service, "/dead-letters")
            if args.action == "list":
                params = {k: v for k, v in {"status": args.status}.items() if v}
                r = await client.http.get(base, params=params)
            elif args.action == "show":
                r = await client.http.get(f"{base}/{args.id}")
            else:
                r = await client.http.post(f"{base}/{args.id}/{args.action}", json={"reason": args.reason})
            if r.status_code == 404 and args.id is not None:
                raise CliError(f"no dead letter {args.id} in {args.service}", EXIT_NOT_FOUND)
            data = _check(r, f"{args.action} dead letter{'' if args.id is None else f' {args.id}'}").json()
            if args.json:
                _print_json(data)
            elif args.action == "list":
                items = data.get("items", [])
                for d in items:
                    print(f"{d.get('id'):>6}  {d.get('status', ''):<10} {d.get('stream', '')}  "
                          f"{str(d.get('reason', ''))[:80]}")
                print(f"{len(items)} dead letter(s) in {args.service}"
                      + (" (more: use --json for the cursor)" if data.get("next_cursor") else ""))
            else:
                print(json.dumps(data, indent=2, default=str) if args.action == "show"
                      else f"dead letter {args.id}: {data.get('status', args.action)}")
            return 0
    return asyncio.run(go())


def cmd_audit(args: argparse.Namespace) -> int:
    from safe_procurement.services import governance_cli

    async def go() -> int:
        target = _target(args)
        urls = target.urls
        if args.service:
            urls = {args.service: urls[args.service], **{k: v for k, v in urls.items() if k != args.service}}
        async with PlatformClient(urls, target.token, timeout=args.http_timeout) as client:
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
    from safe_procurement.services import governance_cli

    async def go() -> int:
        target = _target(args)
        async with PlatformClient(target.urls, target.token, timeout=max(args.http_timeout, 600)) as client:
            code, out = await governance_cli.whatif(client.http, client.url("origin_verification", ""), args.rules,
                                                    args.registry_at, args.since, as_json=args.json)
        print(out)
        return code
    return asyncio.run(go())


def _ledger_url(args: argparse.Namespace) -> str:
    """The ledger database URL without creating anything: a SQLite file must already exist."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = args.database_url or os.environ.get("LOAN_DISBURSEMENT_DATABASE_URL") \
        or "sqlite+aiosqlite:///./var/loan_disbursement.db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CliError(f"not a database URL: {url!r}", EXIT_USAGE) from None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if not path or path == ":memory:" or not Path(path).is_file():
            raise CliError(f"no ledger database at {path or url!r}: give --database-url or set "
                           f"LOAN_DISBURSEMENT_DATABASE_URL", EXIT_USAGE)
    return url


def cmd_ledger_check(args: argparse.Namespace) -> int:
    from safe_procurement.services.loan_disbursement.config import Settings
    from safe_procurement.services.loan_disbursement.reconcile import run

    settings = Settings(database_url=_ledger_url(args))
    try:
        report = asyncio.run(run(settings))
    except Exception as e:  # the database's own message ("no such table", auth failed...) in one line
        if args.debug:
            raise
        raise CliError(f"ledger check could not read {settings.database_url}: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}", EXIT_USAGE) from None
    if args.json:
        _print_json(report.as_dict())
    else:
        print(report.text())
    return 0 if report.ok else EXIT_FAILED


def cmd_scenario(args: argparse.Namespace) -> int:
    from safe_procurement.services import scenarios as examples
    from safe_procurement.services.testing import scenarios

    if args.action == "list":
        files = examples.files()
        if args.json:
            _print_json([str(p) for p in files])
        else:
            print("\n".join(str(p) for p in files))
        return 0
    paths = [*args.files, *(map(str, examples.files()) if args.examples else [])]
    if not paths:
        raise CliError("scenario run needs files (or --examples for the shipped ones)", EXIT_USAGE)
    progress = sys.stderr

    async def go() -> int:
        results: list[dict[str, Any]] = []
        async with _client(args) as client:
            for i, path in enumerate(paths, 1):
                print(f"[{i}/{len(paths)}] {path} …", file=progress, flush=True)
                try:
                    scenario = scenarios.load(path)
                except scenarios.ScenarioFileError as e:
                    results.append({"file": path, "name": Path(path).stem, "passed": False, "invalid": True,
                                    "problems": [str(e)]})
                    if not args.json:
                        print(f"INVALID {e}", flush=True)
                    continue
                res = await scenarios.run(client, scenario, unique=args.unique, timeout=args.timeout)
                results.append({"file": path, "name": res.name, "passed": res.passed, "invalid": False,
                                "expected": res.expected, "actual": res.actual, "failed_rules": res.failed_rules,
                                "problems": res.problems, "case_id": res.case_id,
                                "seconds": round(res.seconds, 3)})
                if not args.json:
                    print(res.line(), flush=True)
        passed = sum(r["passed"] for r in results)
        invalid = sum(r["invalid"] for r in results)
        if args.json:
            _print_json({"passed": passed, "failed": len(results) - passed - invalid, "invalid": invalid,
                         "results": results})
        else:
            print(f"{passed} passed, {len(results) - passed - invalid} failed, {invalid} invalid")
        return 0 if passed == len(results) else EXIT_FAILED
    return asyncio.run(go())


def _global_options(defaults: bool) -> argparse.ArgumentParser:
    """The options every subcommand accepts, before or after its name. On the subcommands their defaults
    are suppressed, so a value given before the subcommand is not overwritten by the default after it."""
    g = argparse.ArgumentParser(add_help=False)
    d: Any = (lambda v: v) if defaults else (lambda _v: argparse.SUPPRESS)
    opts = g.add_argument_group("global options")
    opts.add_argument("--url", action="append", metavar="URL", default=d(None),
                      help="where the platform runs: SERVICE=URL for one service (repeatable), a template such "
                           "as https://{service}.example.eu or http://host:{port}, or http://host (default "
                           "ports); env SAFE_URL; default the local services on 127.0.0.1")
    opts.add_argument("--profile", default=d(None),
                      help="a named profile (URLs + token) from the config file; env SAFE_PROFILE")
    opts.add_argument("--token", default=d(None),
                      help="bearer token; env SAFE_TOKEN; default dev-operator for a local platform only")
    opts.add_argument("--port-offset", type=int, default=d(0), metavar="N",
                      help="added to every service's default port (local platform, `up`)")
    opts.add_argument("--http-timeout", type=float, default=d(10.0), metavar="SECONDS",
                      help="timeout of one HTTP request (default 10)")
    opts.add_argument("--json", action="store_true", default=d(False),
                      help="machine-readable JSON on stdout (progress goes to stderr)")
    opts.add_argument("--debug", action="store_true", default=d(os.environ.get("SAFE_DEBUG") == "1"),
                      help="show the traceback of an error (env SAFE_DEBUG=1)")
    return g


SUBCOMMANDS: dict[str, argparse.ArgumentParser] = {}  # filled by build_parser (the tests check their help)


Adder = Callable[[str, str], argparse.ArgumentParser]  # (name, help) → that subcommand's parser


def build_parser() -> argparse.ArgumentParser:
    common = _global_options(defaults=False)
    p = argparse.ArgumentParser(prog="safe-procurement", description=__doc__, parents=[_global_options(True)],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        SUBCOMMANDS[name] = sub.add_parser(name, help=help, description=help, parents=[common])
        return SUBCOMMANDS[name]

    for group in (_add_up, _add_case_commands, _add_operations, _add_analysis, _add_scenario):
        group(add)
    return p


def _add_up(add: Adder) -> None:
    up = add("up", "start the four services locally and supervise them (Ctrl-C stops)")
    up.add_argument("--var", default=os.environ.get("SAFE_VAR_DIR", "var"),
                    help="state directory for SQLite files, logs and launcher.json (env SAFE_VAR_DIR)")
    up.add_argument("--replicas", action="append", metavar="SERVICE=N", help="run N replicas of a service")
    up.add_argument("--services", metavar="A,B", help="comma-separated subset of services to start")
    up.add_argument("--no-restart", action="store_true", help="do not restart children that die")
    up.add_argument("--no-console", action="store_true", help="do not start the operator console (port 8000)")
    up.add_argument("--demo", action="store_true", help="submit a demo proposal once ready and show its progress")
    up.set_defaults(fn=cmd_up)


def _add_case_commands(add: Adder) -> None:
    """submit, watch, case: one procurement case."""
    s = add("submit", "submit a proposal file (JSON, the shape in docs/interface.md)")
    s.add_argument("file", help="path of the proposal JSON file")
    s.add_argument("--watch", action="store_true", help="then show the case's progress until it is final")
    s.add_argument("--timeout", type=float, default=60, help="seconds --watch waits for a final status")
    s.set_defaults(fn=cmd_submit)

    w = add("watch", "show a case's progress live until it is final")
    w.add_argument("case_id", help="the case id returned by submit")
    w.add_argument("--timeout", type=float, default=60, help="seconds to wait for a final status")
    w.set_defaults(fn=cmd_watch)

    c = add("case", "show a case's status")
    c.add_argument("case_id", help="the case id returned by submit")
    c.set_defaults(fn=cmd_case)


def _add_operations(add: Adder) -> None:
    """dead-letters, audit: what an operator inspects and repairs."""
    d = add("dead-letters", "list/show/replay/discard the dead letters of a service")
    d.add_argument("action", choices=["list", "show", "replay", "discard"], help="what to do")
    d.add_argument("--service", required=True, choices=list(SERVICES), help="whose dead letters")
    d.add_argument("--id", type=int, help="the dead letter's id (required by show, replay, discard)")
    d.add_argument("--status", choices=["open", "replayed", "discarded"], help="list only: filter by status")
    d.add_argument("--reason", help="replay/discard: why, kept in the audit trail (required by discard)")
    d.set_defaults(fn=cmd_dead_letters)

    au = add("audit", "verify the tamper-evident audit chains, or list audit entries")
    au.add_argument("action", choices=["verify", "list"])
    au.add_argument("--service", choices=list(SERVICES), help="one service (default: all for verify)")
    au.add_argument("--filter-action", dest="filter_action", help="list: only this action")
    au.add_argument("--actor", help="list: only entries by this actor")
    au.add_argument("--case", help="list: only entries of this case (correlation id)")
    au.add_argument("--since", help="list: entries at or after this date/time")
    au.add_argument("--until", help="list: entries before this date/time")
    au.set_defaults(fn=cmd_audit)


def _add_analysis(add: Adder) -> None:
    """whatif, ledger: checks over the stored cases and the loan ledger."""
    wi = add("whatif", "replay stored cases' verification with candidate rules / a registry snapshot")
    wi.add_argument("--rules", help="candidate rulebook (YAML or JSON, the format of safe_rules.yaml)")
    wi.add_argument("--registry-at", dest="registry_at", help="YYYY-MM-DD: the registry as received by that day")
    wi.add_argument("--since", help="only cases decided since this date/time")
    wi.set_defaults(fn=cmd_whatif)

    led = add("ledger", "loan ledger tools (run where the loan_disbursement database is reachable)")
    led.add_argument("action", choices=["check"],
                     help="check: recompute every facility's balances from the ledger and compare (exit 1 on "
                          "a difference)")
    led.add_argument("--database-url", help="the loan_disbursement database (default "
                     "$LOAN_DISBURSEMENT_DATABASE_URL, else ./var/loan_disbursement.db; never created)")
    led.set_defaults(fn=cmd_ledger_check)


def _add_scenario(add: Adder) -> None:
    sc = add("scenario", "run scenario files against a running platform (see services/scenarios/README.md)")
    sc.add_argument("action", choices=["run", "list"], help="run: run files; list: the shipped examples")
    sc.add_argument("files", nargs="*", help="scenario files (JSON, or YAML with .yaml/.yml)")
    sc.add_argument("--examples", action="store_true", help="also run the example scenarios shipped in the package")
    sc.add_argument("--unique", action="store_true", help="suffix references so a scenario can run again")
    sc.add_argument("--timeout", type=float, default=30, help="seconds each scenario may take")
    sc.set_defaults(fn=cmd_scenario)


def _unreachable(e: httpx.TransportError) -> str:
    try:
        where = f"{e.request.url.scheme}://{e.request.url.netloc.decode()}"
    except RuntimeError:
        where = "the platform"
    reason = str(e) or type(e).__name__
    if isinstance(e, httpx.TimeoutException):
        reason = f"no answer in time ({type(e).__name__})"
    return f"cannot reach {where}: {reason} (is the platform running? see --url / --profile)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except CliError as e:
        if args.debug:
            traceback.print_exc()
        print(f"safe-procurement: error: {e}", file=sys.stderr)
        return e.code
    except httpx.TransportError as e:
        if args.debug:
            traceback.print_exc()
        print(f"safe-procurement: error: {_unreachable(e)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        print("safe-procurement: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        else:
            print(f"safe-procurement: error: {type(e).__name__}: {e} (--debug shows the traceback)",
                  file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
