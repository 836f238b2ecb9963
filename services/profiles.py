"""Where the CLI finds a deployment: `--url`, `--token`, environment variables and named profiles.

Resolution, first match wins: command-line options, then `SAFE_URL` / `SAFE_TOKEN`, then the profile
(`--profile NAME`, `SAFE_PROFILE`, or the file's `default_profile`), then the local development platform
(the four services on 127.0.0.1 at their default ports plus `--port-offset`, token `dev-operator`).

Profiles live in a TOML file: `$SAFE_CONFIG`, else `$XDG_CONFIG_HOME/safe-procurement/config.toml`
(`~/.config/safe-procurement/config.toml`)::

    default_profile = "staging"

    [profiles.staging]
    url = "https://{service}.staging.safe.example.eu"   # or "http://host" (default ports), see parse_urls
    token_env = "SAFE_STAGING_TOKEN"                    # read the token from this variable (or: token = "…")

    [profiles.staging.urls]                             # optional per-service overrides
    loan_disbursement = "https://ledger.staging.safe.example.eu"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from safe_procurement.services.launcher import SERVICES

DEV_TOKEN = "dev-operator"


class ProfileError(ValueError):
    """A URL, token or profile that cannot be used (the CLI shows the message and exits 2)."""


@dataclass(frozen=True)
class Target:
    urls: dict[str, str]
    token: str
    profile: str | None = None

    @property
    def local(self) -> bool:
        return all(urlsplit(u).hostname in ("127.0.0.1", "localhost", "::1") for u in self.urls.values())


def config_path() -> Path:
    if os.environ.get("SAFE_CONFIG"):
        return Path(os.environ["SAFE_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "safe-procurement" / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ProfileError(f"{path}: not valid TOML ({e})") from None


def _template(url: str, offset: int) -> dict[str, str]:
    if "{service}" in url or "{port}" in url:
        return {s: url.format(service=s, port=p + offset) for s, p in SERVICES.items()}
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProfileError(f"--url {url!r}: expected http(s)://host, a template with {{service}}/{{port}}, "
                           f"or SERVICE=URL")
    if parts.port is not None or parts.path.strip("/"):
        raise ProfileError(f"--url {url!r} names one port or path, but there are four services: give "
                           f"SERVICE=URL for each, or a template such as http://host:{{port}}")
    return {s: f"{parts.scheme}://{parts.netloc}:{p + offset}" for s, p in SERVICES.items()}


def parse_urls(values: list[str], offset: int = 0, base: dict[str, str] | None = None) -> dict[str, str]:
    """`values`: `SERVICE=URL` (one service), a template with `{service}`/`{port}` (every service), or a
    bare `http(s)://host` (every service on that host at its default port + offset). Later values win."""
    urls = dict(base or {})
    for value in values:
        name, sep, rest = value.partition("=")
        if sep and name in SERVICES:
            if not urlsplit(rest).scheme.startswith("http"):
                raise ProfileError(f"--url {value!r}: {rest!r} is not an http(s) URL")
            urls[name] = rest.rstrip("/")
        elif sep and "://" not in name:
            raise ProfileError(f"--url {value!r}: unknown service {name!r} (one of {', '.join(SERVICES)})")
        else:
            urls.update(_template(value.rstrip("/"), offset))
    return urls


def resolve(*, urls: list[str] | None = None, token: str | None = None, profile: str | None = None,
            port_offset: int = 0, environ: dict[str, str] | None = None, config: dict[str, Any] | None = None
            ) -> Target:
    env = os.environ if environ is None else environ
    cfg = load_config() if config is None else config
    name = profile or env.get("SAFE_PROFILE") or cfg.get("default_profile")
    prof: dict[str, Any] = {}
    if name:
        profiles = cfg.get("profiles", {})
        if name not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ProfileError(f"no profile {name!r} in {config_path()} (profiles: {known})")
        prof = profiles[name]
    resolved = {s: f"http://127.0.0.1:{p + port_offset}" for s, p in SERVICES.items()}
    if prof.get("url"):
        resolved = parse_urls([prof["url"]], port_offset, resolved)
    if prof.get("urls"):
        resolved = parse_urls([f"{k}={v}" for k, v in prof["urls"].items()], port_offset, resolved)
    if env.get("SAFE_URL"):
        resolved = parse_urls(env["SAFE_URL"].split(), port_offset, resolved)
    if urls:
        resolved = parse_urls(urls, port_offset, resolved)
    tok = token or env.get("SAFE_TOKEN")
    if not tok and prof.get("token_env"):
        tok = env.get(prof["token_env"])
        if not tok:
            raise ProfileError(f"profile {name!r} reads its token from ${prof['token_env']}, which is not set")
    tok = tok or prof.get("token")
    target = Target(resolved, tok or DEV_TOKEN, name)
    if not tok and not target.local:
        raise ProfileError("no token for a remote platform: pass --token, set SAFE_TOKEN, or use a profile "
                           "with `token_env`")
    return target
