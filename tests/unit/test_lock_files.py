"""The lock files pin every dependency pyproject.toml declares, at a version its specifier allows, and every
runtime dependency has an upper bound; the image installs from the runtime lock."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)")


def pins(lock: str) -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (ROOT / lock).read_text().splitlines():
        m = PIN.match(line)
        if m:
            found[canonicalize_name(m.group(1))] = Version(m.group(2))
    return found


def applies(req: Requirement) -> bool:
    return req.marker is None or req.marker.evaluate({"extra": ""})


RUNTIME = [Requirement(r) for r in PROJECT["dependencies"]]
DEV = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"]]


@pytest.mark.parametrize(("lock", "reqs"), [("requirements.lock", RUNTIME), ("requirements-dev.lock", RUNTIME + DEV)])
def test_every_declared_dependency_is_pinned_within_its_specifier(lock: str, reqs: list[Requirement]) -> None:
    pinned = pins(lock)
    for req in reqs:
        if not applies(req):
            continue
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is declared in pyproject.toml but not pinned in {lock}: run `make lock`"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {req.name}=={pinned[name]}, outside {req.specifier}: run `make lock`"
        )


def test_every_dependency_has_an_upper_bound() -> None:
    for req in RUNTIME + DEV:
        assert any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), f"{req} has no upper bound"


def test_the_image_installs_from_the_runtime_lock() -> None:
    dockerfile = (ROOT / "infra/docker/service.Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    assert re.search(r"COPY [^\n]*requirements\.lock", dockerfile)
