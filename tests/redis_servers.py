"""redis-server processes a test starts itself on free loopback ports (and stops): the only Redis a test may flush,
kill, fail over or turn into a cluster. Never the shared one on 6379."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range is not needed here: redis-server binds at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int, *, gap: int = 0) -> list[int]:
    """`n` free ports; with `gap`, each port + gap is free too (a cluster node's bus port is port + 10000)."""
    out: list[int] = []
    while len(out) < n:
        p = free_port()
        if p in out or (gap and p + gap > 65535):
            continue
        if gap:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p + gap))
                except OSError:
                    continue
        out.append(p)
    return out


def require_redis_server() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("no redis-server/redis-cli binary on PATH (infra/scripts/ensure-redis.sh installs them)")


def wait_ping(port: int, timeout: float = 15.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5).ping():
                return
        except redis.RedisError:
            time.sleep(0.05)
    detail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"redis-server on {port} did not answer PING: {detail}")


@dataclass
class Server:
    """One redis-server process. `persistent=False`: no AOF, no RDB — a restart comes back empty."""

    port: int
    dir: Path
    args: Sequence[str] = ()
    persistent: bool = False
    sentinel: bool = False
    proc: subprocess.Popen[bytes] | None = None
    conf: Path | None = field(default=None)

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1, **kw)  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Server:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "redis.log"
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                       else ["--appendonly", "no"])
        if self.sentinel:
            # a sentinel rewrites its config file: it must have one of its own
            self.conf = self.dir / "sentinel.conf"
            if not self.conf.exists():
                self.conf.write_text("")
            cmd = ["redis-server", str(self.conf), "--sentinel", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", str(self.dir), *self.args]
        else:
            cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                   "--save", "", *persistence, *self.args]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
        wait_ping(self.port, log=log)
        return self

    def kill(self) -> None:
        """SIGKILL: what is not persisted (or replicated) is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()


class Servers:
    """Every server a test started; all killed at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.all: list[Server] = []

    def start(self, name: str, **kw: object) -> Server:
        port = kw.pop("port", None) or free_port()
        server = Server(port=int(port), dir=self.root / name, **kw)  # type: ignore[arg-type]
        self.all.append(server)
        return server.start()

    def stop_all(self) -> None:
        for s in self.all:
            s.kill()
