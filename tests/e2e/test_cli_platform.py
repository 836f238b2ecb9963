"""The CLI against a running platform (the launcher's processes), as an operator uses it: --url, --json,
the scenario runner with a broken file among good ones, unknown ids, the ledger check."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from safe_procurement.services import scenarios as examples
from tests.builders import proposal

pytestmark = pytest.mark.e2e


async def cli(stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    urls = [f"--url={s}={u}" for s, u in stack.urls.items()]
    full_env = {**os.environ, "SAFE_CONFIG": "/nonexistent", **(env or {})}
    for var in ("SAFE_URL", "SAFE_PROFILE", "SAFE_TOKEN"):
        full_env.pop(var, None)
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "safe_procurement.services.cli", *args, *urls],
                                   capture_output=True, text=True, env=full_env, timeout=180)


async def test_submit_watch_json_then_case_and_an_unknown_case(safe_stack, tmp_path):
    body = proposal(tag="CLI")
    f = tmp_path / "p.json"
    f.write_text(json.dumps(body))
    r = await cli(safe_stack, "submit", str(f), "--watch", "--json")
    assert r.returncode == 0, r.stderr
    case = json.loads(r.stdout)  # stdout is the JSON alone; the live progress went to stderr
    assert case["status"] == "loan_approved" and case["reference"] == body["reference"]
    assert "loan_approved" in r.stderr and "origin_verified" in r.stderr
    r = await cli(safe_stack, "--json", "case", case["id"])
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == case["id"]
    r = await cli(safe_stack, "watch", "00000000-0000-0000-0000-000000000000")
    assert r.returncode == 4 and "no case" in r.stderr and "Traceback" not in r.stderr
    r = await cli(safe_stack, "case", case["id"], "--token", "wrong-token")
    assert r.returncode == 5 and "401" in r.stderr


async def test_the_scenario_runner_names_a_broken_file_and_runs_the_rest(safe_stack, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"expected_outcome": ["eligible"], "proposal": ')
    good = [str(p) for p in examples.files()[:2]]
    r = await cli(safe_stack, "scenario", "run", good[0], str(broken), good[1], "--unique", "--json",
                  "--timeout", "60")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    assert (report["passed"], report["failed"], report["invalid"]) == (2, 0, 1), report
    assert [x["file"] for x in report["results"]] == [good[0], str(broken), good[1]]
    assert report["results"][1]["problems"][0].startswith(f"{broken}: not valid JSON")
    assert "[2/3]" in r.stderr  # live progress
    r = await cli(safe_stack, "scenario", "run", str(broken))
    assert r.returncode == 1 and r.stdout.startswith(f"INVALID {broken}: not valid JSON")


async def test_dead_letters_list_human_and_json(safe_stack):
    r = await cli(safe_stack, "dead-letters", "list", "--service", "applications")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].endswith("dead letter(s) in applications")
    r = await cli(safe_stack, "dead-letters", "list", "--service", "applications", "--json")
    assert "items" in json.loads(r.stdout)
    r = await cli(safe_stack, "dead-letters", "show", "--service", "applications", "--id", "999999999")
    assert r.returncode == 4 and "no dead letter 999999999" in r.stderr


async def test_ledger_check_reads_the_running_platforms_ledger(safe_stack):
    url = safe_stack.env.get("LOAN_DISBURSEMENT_DATABASE_URL") or \
        f"sqlite+aiosqlite:///{safe_stack.var_dir.resolve()}/loan_disbursement.db"
    r = await cli(safe_stack, "ledger", "check", "--json", env={"LOAN_DISBURSEMENT_DATABASE_URL": url})
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["ok"] is True
