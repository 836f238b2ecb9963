"""The console's browser tests: one stack (the four services and the console as processes) and one Chromium
for the whole module. Playwright drives Debian's chromium (infra/scripts/ensure-chromium.sh installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from safe_procurement.services.testing.plugin import Stack, make_stack
from tests.builders import proposal

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
AXE = Path(__file__).parent / "vendor" / "axe-core-4.11.1.min.js"

TOKENS = {"operator": "op-console-t0ken", "auditor": "aud-console-t0ken", "member-state-DK": "dk-console-t0ken",
          "member-state-PL": "pl-console-t0ken"}


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CONSOLE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:  # the project's script installs it where it can (SAFE_INSTALL_MISSING=1, apt-get)
        subprocess.run([str(ROOT / "infra" / "scripts" / "ensure-chromium.sh")], check=False)
        path = chromium_path()
    if path is None:
        pytest.skip("no chromium and it could not be installed (infra/scripts/ensure-chromium.sh)")
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    spec = ",".join(f"{role}:{token}" for role, token in TOKENS.items())
    s = make_stack(tmp_path_factory.mktemp("console-stack"), redis_url=redis_url, extra_env={"SAFE_TOKENS": spec})
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


class Api:
    """The four services' HTTP APIs, as the test's own (non-browser) client."""

    def __init__(self, stack: Stack, token: str = TOKENS["operator"]) -> None:
        self.urls = stack.urls
        self.http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=15)

    def post(self, service: str, path: str, body: Any = None) -> httpx.Response:
        return self.http.post(self.urls[service] + path, json=body)

    def get(self, service: str, path: str, **params: Any) -> Any:
        r = self.http.get(self.urls[service] + path, params=params)
        r.raise_for_status()
        return r.json()

    def submit(self, **changes: Any) -> dict[str, Any]:
        body = proposal(tag="UI", **changes)
        r = self.post("applications", "/procurements", body)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def wait(self, service: str, path: str, predicate: Any, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.get(service, path)
            if predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"{path}: condition not met in {timeout}s; last answer {last}")


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[Api]:
    a = Api(stack)
    yield a
    a.http.close()
