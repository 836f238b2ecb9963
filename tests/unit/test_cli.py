"""The CLI without a platform: options anywhere, help, --version, profiles, and one-line errors with exit codes."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from safe_procurement.services import cli
from safe_procurement.services.launcher import SERVICES
from safe_procurement.services.profiles import DEV_TOKEN, ProfileError, parse_urls, resolve


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: its own process, its real exit code and streams."""
    import os

    full_env = {**os.environ, "SAFE_CONFIG": "/nonexistent/config.toml", **(env or {})}
    for var in ("SAFE_URL", "SAFE_TOKEN", "SAFE_PROFILE", "SAFE_DEBUG", "LOAN_DISBURSEMENT_DATABASE_URL"):
        if var not in (env or {}):
            full_env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "safe_procurement.services.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_version_is_the_package_version():
    from importlib import metadata

    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"safe-procurement {metadata.version('safe-procurement')}"


def _undocumented(help_text: str) -> list[str]:
    """Argument lines of an argparse help text with no description (on the line or the one after)."""
    lines = help_text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        if not line.startswith("  ") or line.startswith("   ") or line.strip().startswith("{"):
            continue
        described = "  " in line.strip()
        follows = i + 1 < len(lines) and lines[i + 1].startswith(" " * 8)
        if not described and not follows:
            missing.append(line.strip())
    return missing


def test_every_argument_of_every_subcommand_has_help():
    parser = cli.build_parser()
    assert set(cli.SUBCOMMANDS) >= {"up", "submit", "watch", "case", "dead-letters", "ledger", "scenario"}
    top = parser.format_help()
    missing = _undocumented(top)
    for name, sub in cli.SUBCOMMANDS.items():
        assert f"    {name} " in top, f"{name} has no help line"
        missing += [f"{name}: {m}" for m in _undocumented(sub.format_help())]
    assert not missing, missing
    # the check itself sees an undocumented argument
    bare = argparse.ArgumentParser(prog="x")
    bare.add_argument("--bare")
    assert _undocumented(bare.format_help()) == ["--bare BARE"]


@pytest.mark.parametrize("argv", [
    ["--port-offset", "7", "--json", "watch", "abc"],
    ["watch", "abc", "--port-offset", "7", "--json"],
    ["--json", "watch", "--port-offset", "7", "abc"],
])
def test_global_options_are_accepted_before_and_after_the_subcommand(argv):
    args = cli.build_parser().parse_args(argv)
    assert (args.port_offset, args.json, args.case_id) == (7, True, "abc")


def test_a_global_option_given_before_the_subcommand_is_not_reset_by_its_default():
    args = cli.build_parser().parse_args(["--token", "t1", "--url", "http://h", "case", "x"])
    assert args.token == "t1" and args.url == ["http://h"]


def test_urls_from_a_host_a_template_and_per_service():
    host = parse_urls(["http://safe.internal"])
    assert host == {s: f"http://safe.internal:{p}" for s, p in SERVICES.items()}
    tpl = parse_urls(["https://{service}.example.eu", "loan_disbursement=https://ledger.example.eu/"])
    assert tpl["applications"] == "https://applications.example.eu"
    assert tpl["loan_disbursement"] == "https://ledger.example.eu"
    assert parse_urls(["http://h:{port}"], offset=10)["partner_registry"] == "http://h:8013"
    for bad in ["http://h:9000", "nosuch=http://h", "ftp://h", "applications=h"]:
        with pytest.raises(ProfileError):
            parse_urls([bad])


def test_profiles_environment_and_options_in_order(tmp_path):
    config = {"default_profile": "staging", "profiles": {
        "staging": {"url": "https://{service}.staging.eu", "token_env": "STAGING_TOKEN",
                    "urls": {"applications": "https://apps.staging.eu"}},
        "local": {"url": "http://127.0.0.1:{port}"}}}
    t = resolve(config=config, environ={"STAGING_TOKEN": "s3cret"})
    assert t.profile == "staging" and t.token == "s3cret"
    assert t.urls["applications"] == "https://apps.staging.eu"
    assert t.urls["partner_registry"] == "https://partner_registry.staging.eu"
    # the environment beats the profile, options beat the environment
    t = resolve(config=config, environ={"STAGING_TOKEN": "s", "SAFE_TOKEN": "env", "SAFE_URL": "http://x"})
    assert t.token == "env" and t.urls["applications"] == "http://x:8001"
    t = resolve(config=config, environ={"SAFE_TOKEN": "env"}, token="opt", urls=["applications=http://o"])
    assert t.token == "opt" and t.urls["applications"] == "http://o"
    with pytest.raises(ProfileError, match="STAGING_TOKEN"):
        resolve(config=config, environ={})
    with pytest.raises(ProfileError, match="no profile 'prod'"):
        resolve(config=config, environ={}, profile="prod")
    assert resolve(config=config, environ={}, profile="local").token == DEV_TOKEN
    # no config at all: the local platform with the development token
    t = resolve(config={}, environ={}, port_offset=100)
    assert t.local and t.token == DEV_TOKEN and t.urls["applications"] == "http://127.0.0.1:8101"
    with pytest.raises(ProfileError, match="no token for a remote platform"):
        resolve(config={}, environ={}, urls=["https://safe.example.eu"])


def test_a_profile_file_is_read_from_safe_config(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[profiles.p]\nurl = "http://127.0.0.1:{port}"\ntoken = "tok"\n')
    port = free_port()
    r = run_cli("case", "abc", "--profile", "p", "--url", f"applications=http://127.0.0.1:{port}",
                env={"SAFE_CONFIG": str(cfg)})
    assert r.returncode == cli.EXIT_UNREACHABLE, r.stderr
    assert f"cannot reach http://127.0.0.1:{port}" in r.stderr


def test_connection_refused_is_one_line_and_exit_3_with_the_traceback_only_under_debug():
    port = free_port()
    r = run_cli("watch", "some-case", "--url", f"applications=http://127.0.0.1:{port}")
    assert r.returncode == 3
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert r.stderr.startswith(f"safe-procurement: error: cannot reach http://127.0.0.1:{port}")
    assert "Traceback" not in r.stderr
    r = run_cli("--debug", "watch", "some-case", "--url", f"applications=http://127.0.0.1:{port}")
    assert r.returncode == 3 and "Traceback" in r.stderr


def test_a_missing_file_is_named(tmp_path):
    r = run_cli("submit", str(tmp_path / "nope.json"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"safe-procurement: error: {tmp_path / 'nope.json'}: no such file"


def test_a_remote_url_without_a_token_is_refused_before_any_request():
    r = run_cli("case", "abc", "--url", "https://safe.example.invalid")
    assert r.returncode == 2 and "no token for a remote platform" in r.stderr


@pytest.mark.parametrize("action", ["show", "replay", "discard"])
def test_dead_letter_actions_on_one_letter_require_an_id(action):
    r = run_cli("dead-letters", action, "--service", "applications", "--reason", "x")
    assert r.returncode == 2
    assert f"dead-letters {action} needs --id" in r.stderr


def test_ledger_check_never_creates_a_database_and_names_the_missing_one(tmp_path):
    r = run_cli("ledger", "check", "--json", cwd=tmp_path)
    assert r.returncode == 2
    assert "no ledger database at './var/loan_disbursement.db'" in r.stderr
    assert list(tmp_path.iterdir()) == []  # no var/, no empty SQLite file
    db = tmp_path / "other.db"
    r = run_cli("ledger", "check", "--database-url", f"sqlite+aiosqlite:///{db}", cwd=tmp_path)
    assert r.returncode == 2 and not db.exists()


def test_ledger_check_on_an_unmigrated_database_is_one_line(tmp_path):
    import sqlite3

    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    r = run_cli("ledger", "check", "--json", env={"LOAN_DISBURSEMENT_DATABASE_URL": f"sqlite+aiosqlite:///{db}"})
    assert r.returncode == 2
    assert "ledger check could not read" in r.stderr and "no such table" in r.stderr
    assert "Traceback" not in r.stderr


def test_scenario_files_are_validated_one_by_one_and_named(tmp_path):
    from safe_procurement.services.testing import scenarios

    bad_json = tmp_path / "broken.json"
    bad_json.write_text('{"expected_outcome": ["eligible"], "proposal": {')
    no_outcome = tmp_path / "no-outcome.yaml"
    no_outcome.write_text("proposal: {}\n")
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    for path, words in [(bad_json, "not valid JSON (line 1"), (no_outcome, "`expected_outcome` must be"),
                        (listed, "a scenario is an object, not list"), (tmp_path / "gone.json", "no such file")]:
        with pytest.raises(scenarios.ScenarioFileError) as e:
            scenarios.load(path)
        assert str(e.value).startswith(f"{path}: ") and words in str(e.value)


def test_the_example_scenarios_ship_in_the_package_and_are_valid():
    from safe_procurement.services import scenarios as examples
    from safe_procurement.services.testing import scenarios

    files = examples.files()
    assert len(files) >= 10
    for f in files:
        scenarios.load(f)
    r = run_cli("scenario", "list", "--json")
    assert r.returncode == 0 and len(__import__("json").loads(r.stdout)) == len(files)
