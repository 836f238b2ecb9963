"""pytest plugin shipped with the package: `safe_stack` starts the real services as processes.

    def test_my_system_submits(safe_stack):
        async with safe_stack.client() as client:
            r = await client.submit(my_proposal)
            case = await client.wait_for_status(r.json()["id"])

Each stack gets its own ports, state directory (fresh SQLite databases, or PostgreSQL when
`SAFE_STACK_PG_URL` names an admin URL), and stream prefix on the given Redis (`REDIS_URL`); its streams
are deleted when it stops. The fixtures are synchronous; an `async def` test needs pytest-asyncio and
either `asyncio_mode = "auto"` under `[tool.pytest.ini_options]` or `@pytest.mark.asyncio` on the test.
When Redis or the ports cannot be used, the fixture fails with one line saying which."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from safe_procurement.services.client import PlatformClient
from safe_procurement.services.launcher import CONSOLE_PORT, SERVICES, env_name
from safe_procurement.shared.kit import wire


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands out to outgoing connections (Linux; 32768 by default elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_offset() -> int:
    # Below the ephemeral range: a port checked free there could be taken by any outgoing connection (to Redis,
    # PostgreSQL, a service) before the service binds it ("address already in use" at start).
    highest = max(SERVICES.values()) + 100 * 2
    top = max(10_500, _ephemeral_floor() - highest)
    for _ in range(50):
        offset = random.randrange(10_000, top, 500)
        ports = [p + offset + 100 * r for p in SERVICES.values() for r in range(3)] + [CONSOLE_PORT + offset]
        ok = True
        for port in ports:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return offset
    raise RuntimeError("no free port range found")


class StackError(RuntimeError):
    """The stack cannot start: Redis unreachable, a port in use, the launcher exited (one-line cause)."""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Stack:
    """A running platform: the launcher process and its four (or more) service processes."""

    var_dir: Path
    prefix: str
    port_offset: int
    redis_url: str
    env: dict[str, str]
    replicas: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    console: bool = True  # the operator console as a fifth process (the launcher's default)

    @property
    def urls(self) -> dict[str, str]:
        return {s: f"http://127.0.0.1:{p + self.port_offset}" for s, p in SERVICES.items()}

    @property
    def console_url(self) -> str:
        """The operator console of this stack (started by the launcher beside the four services)."""
        return f"http://127.0.0.1:{CONSOLE_PORT + self.port_offset}"

    def client(self, token: str = "dev-operator") -> PlatformClient:
        return PlatformClient(self.urls, token)

    def preflight(self) -> None:
        """Fail early with the cause: Redis not answering, or one of the stack's ports taken."""
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        except redis.RedisError as e:
            raise StackError(f"Redis unreachable at {self.redis_url}: {e} (set REDIS_URL)") from None
        finally:
            client.close()
        for svc, port in SERVICES.items():
            for r in range(self.replicas.get(svc, 1)):
                if not _port_free(port + self.port_offset + 100 * r):
                    raise StackError(f"port {port + self.port_offset + 100 * r} on 127.0.0.1 is in use "
                                     f"({svc}#{r + 1})")

    def start(self, timeout: float = 90.0) -> Stack:
        self.preflight()
        args = [sys.executable, "-m", "safe_procurement.services.cli", "--port-offset", str(self.port_offset), "up",
                "--var", str(self.var_dir)]
        for svc, n in self.replicas.items():
            args += ["--replicas", f"{svc}={n}"]
        if not self.console:
            args.append("--no-console")
        self.var_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.var_dir / "launcher.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                lines = [x for x in self.launcher_log().splitlines() if x.strip()]
                raise StackError(f"launcher exited {self.proc.returncode}: {lines[-1] if lines else 'no output'} "
                                 f"(logs in {self.var_dir})")
            if "all services ready" in self.launcher_log():
                return self
            time.sleep(0.2)
        self.stop(timeout=10)
        raise StackError(f"stack not ready in {timeout}s (logs in {self.var_dir})")

    def launcher_log(self) -> str:
        path = self.var_dir / "launcher.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def children(self) -> list[dict[str, Any]]:
        return json.loads((self.var_dir / "launcher.json").read_text())["children"]  # type: ignore[no-any-return]

    def pid(self, service: str, replica: int = 1) -> int:
        for c in self.children():
            if c["service"] == service and c["replica"] == replica:
                return int(c["pid"])
        raise KeyError(f"{service}#{replica}")

    def kill(self, service: str, replica: int = 1, sig: int = signal.SIGKILL) -> int:
        """Signal one service process (SIGKILL by default); the launcher restarts it."""
        pid = self.pid(service, replica)
        os.kill(pid, sig)
        return pid

    def wait_restarted(self, service: str, old_pid: int, replica: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = self.pid(service, replica)
            except (KeyError, json.JSONDecodeError, FileNotFoundError):
                pid = old_pid
            if pid != old_pid:
                port = SERVICES[service] + self.port_offset + 100 * (replica - 1)
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"{service}#{replica} not back after {timeout}s")

    def stop(self, timeout: float = 30.0) -> int | None:
        try:
            return self._stop_processes(timeout)
        finally:
            self.delete_streams()

    def delete_streams(self) -> int:
        """Delete every key under the stack's prefix (streams, locks) from Redis; returns how many."""
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2)
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            return int(client.delete(*keys)) if keys else 0
        except redis.RedisError:
            return 0  # Redis gone: nothing to clean up there
        finally:
            client.close()

    def _stop_processes(self, timeout: float) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            for c in self.children():
                try:
                    os.kill(int(c["pid"]), signal.SIGKILL)
                except (ProcessLookupError, TypeError):
                    pass
            return self.proc.wait()

    def stream(self, name: str) -> str:
        return f"{self.prefix}{name}"

    async def inject(self, stream: str, payload: Any) -> str:
        """Put a message on one of the platform's streams (a pydantic event, a dict, or raw text/bytes),
        exactly as another service or an external system would: `XADD <stream> * __data__ <payload>`."""
        import redis.asyncio as aioredis

        if hasattr(payload, "model_dump_json"):
            data: Any = payload.model_dump_json()
        elif isinstance(payload, dict | list):
            data = json.dumps(payload)
        else:
            data = payload
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            entry = await client.xadd(self.stream(stream), {wire.DATA: data})
        finally:
            await client.aclose()
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    async def dead_letters(self, service: str, **filters: Any) -> list[dict[str, Any]]:
        """The dead letters of one service (filters: status, stream, correlation_id)."""
        async with self.client() as client:
            return await client.dead_letters(service, **filters)


def make_stack(var_dir: Path, *, redis_url: str | None = None, replicas: dict[str, int] | None = None,
               database_urls: dict[str, str] | None = None, extra_env: dict[str, str] | None = None,
               console: bool = True) -> Stack:
    env = dict(os.environ)
    env.update({
        "REDIS_URL": redis_url or os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
        "SAFE_ENV": "dev",
        "SAFE_STREAM_PREFIX": f"e2e{uuid.uuid4().hex[:8]}:",
        # tests want recovery within seconds, not the production 15 s idle time
        **{f"{env_name(s)}_CLAIM_IDLE_MS": "3000" for s in SERVICES},
    })
    env.pop("SAFE_TOKENS", None)
    for svc in SERVICES:  # the stack chooses its own free ports (a developer's <SERVICE>_PORT would clash)
        env.pop(f"{env_name(svc)}_PORT", None)
    for svc, url in (database_urls or {}).items():
        env[f"{env_name(svc)}_DATABASE_URL"] = url
    env.update(extra_env or {})
    return Stack(var_dir=var_dir, prefix=env["SAFE_STREAM_PREFIX"], port_offset=_free_offset(),
                 redis_url=env["REDIS_URL"], env=env, replicas=replicas or {}, console=console)


@pytest.fixture(scope="session")
def safe_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The platform's four services as real processes for the whole test session."""
    try:
        stack = make_stack(tmp_path_factory.mktemp("safe-stack")).start()
    except StackError as e:
        pytest.fail(f"safe_stack: {e}", pytrace=False)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def safe_stack_factory(tmp_path: Path) -> Iterator[Any]:
    """Build more stacks (replicas, PostgreSQL, chaos); each is stopped at the end of the test."""
    stacks: list[Stack] = []

    def factory(**kwargs: Any) -> Stack:
        stack = make_stack(tmp_path / f"stack{len(stacks)}", **kwargs)
        stacks.append(stack)
        try:
            return stack.start()
        except StackError as e:
            pytest.fail(f"safe_stack_factory: {e}", pytrace=False)

    yield factory
    for s in stacks:
        s.stop()
