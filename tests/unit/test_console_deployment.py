"""The console as a fifth process: in docker compose, in the launcher (`safe-procurement up`, `make run`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safe_procurement.services.console.config import ConsoleSettings
from safe_procurement.services.launcher import CONSOLE, CONSOLE_PORT, SERVICES, Launcher
from safe_procurement.shared.kit.auth import TokenStore
from tests.unit.test_deployment_files import DOCKERFILE, ROOT, compose_services, container_ports, environment


def test_compose_runs_the_console_on_8000_pointed_at_the_four_services(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = compose_services()["console"]
    assert svc["build"]["args"] == {"SERVICE": "console", "PORT": str(CONSOLE_PORT)}
    assert (ROOT / svc["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert (str(CONSOLE_PORT), CONSOLE_PORT) in container_ports(svc)
    assert f"127.0.0.1:{CONSOLE_PORT}/health/ready" in " ".join(svc["healthcheck"]["test"])
    assert {s: d["condition"] for s, d in svc["depends_on"].items()} == {s: "service_healthy" for s in SERVICES}
    for var in [v for v in os.environ if v.startswith("CONSOLE_") or v in ("SAFE_TOKENS", "SAFE_ENV")]:
        monkeypatch.delenv(var)
    for var, value in environment(svc).items():
        monkeypatch.setenv(var, value)
    s = ConsoleSettings()
    assert (s.host, s.port, s.safe_env) == ("0.0.0.0", CONSOLE_PORT, "production")
    TokenStore(s.safe_tokens, dev=s.is_dev)  # the default tokens parse: the console starts
    assert s.service_urls() == {name: f"http://{name}:{port}" for name, port in SERVICES.items()}
    assert environment(svc)["SAFE_TOKENS"] == environment(compose_services()["applications"])["SAFE_TOKENS"]


def test_the_launcher_starts_the_console_first_pointed_at_its_own_children(tmp_path: Path) -> None:
    launcher = Launcher(var_dir=tmp_path, port_offset=500, replicas={"applications": 2}, base_env={})
    children = launcher.plan()
    console = children[0]
    assert (console.service, console.port) == (CONSOLE, CONSOLE_PORT + 500)
    assert console.env["CONSOLE_PORT"] == str(CONSOLE_PORT + 500)
    assert {k: v for k, v in console.env.items() if k.endswith("_URL")} == {
        f"CONSOLE_{s.upper()}_URL": f"http://127.0.0.1:{p + 500}" for s, p in SERVICES.items()}
    assert "console" in launcher.urls()[0]  # printed first
    assert all(c.service != CONSOLE for c in Launcher(var_dir=tmp_path, console=False, base_env={}).plan())
