"""redis-server processes a test starts itself on free loopback ports (and stops): the only Redis a test may flush,
kill, fail over or turn into a cluster. Never the shared one on 6379."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
        # the port was free when chosen; whoever answers on it now must be this process, not a server another
        # test started there meanwhile (this test flushes and kills what it started)
        c = self.client()
        try:
            pid = int(c.info("server")["process_id"])
        finally:
            c.close()
        if pid != self.proc.pid:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise RuntimeError(f"port {self.port} is answered by process {pid}, not the redis-server started there")
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


@contextmanager
def started_servers(root: Path) -> Iterator[Servers]:
    """A test's own redis-servers (state below `root`), every one killed when it ends; skips without the binary."""
    require_redis_server()
    servers = Servers(root)
    try:
        yield servers
    finally:
        servers.stop_all()


def _wait(condition: Callable[[], object], *, timeout: float, what: str, logs: Sequence[Path] = ()) -> object:
    """Poll `condition` (Redis errors count as not yet) until it returns something truthy; its value."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except redis.RedisError as e:
            last = e
        time.sleep(0.1)
    tails = "".join(f"\n--- {p}:\n{p.read_text(errors='replace')[-1500:]}" for p in logs if p.exists())
    raise RuntimeError(f"{what}: not within {timeout:.0f} s (last error: {last}){tails}")


class Cluster:
    """A Redis Cluster of `masters` primaries with `replicas` replicas each on free loopback ports, created with
    `redis-cli --cluster create`. No persistence: a node killed is gone; its replica takes over its slots."""

    def __init__(self, servers: Servers, *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        self.servers = servers
        self.nodes: list[Server] = []
        ports = free_ports(masters * (1 + replicas), gap=10_000)  # the cluster bus listens on port + 10000
        for i, port in enumerate(ports):
            self.nodes.append(servers.start(
                f"node{i}", port=port,
                args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                      "--cluster-node-timeout", str(node_timeout_ms),
                      # a replica always may take over, however long it was cut off from its primary
                      "--cluster-replica-validity-factor", "0"]))
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
        self.wait_healthy(primaries=masters, replicas=masters * replicas)

    @property
    def url(self) -> str:
        """REDIS_URL for REDIS_MODE=cluster: every node as a startup node."""
        return "redis://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def alive(self) -> list[Server]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def _view(self, node: Server) -> tuple[str, list[tuple[str, str, bool]]]:
        """(cluster_state, [(ip:port, role, connected)]) as `node` sees the cluster."""
        c = node.client(socket_timeout=2)
        try:
            state = c.execute_command("CLUSTER", "INFO")
            if isinstance(state, bytes):
                state = state.decode()
            info = state if isinstance(state, str) else "\n".join(f"{k}:{v}" for k, v in state.items())
            raw = c.execute_command("CLUSTER", "NODES")
        finally:
            c.close()
        if isinstance(raw, bytes):
            raw = raw.decode()
        if isinstance(raw, dict):  # redis-py may parse it into {addr: {...}}
            rows = [(addr.split("@")[0], "master" if "master" in v["flags"] else "slave",
                     v["connected"] and "fail" not in v["flags"]) for addr, v in raw.items()]
        else:
            rows = []
            for line in raw.splitlines():
                parts = line.split()
                flags = parts[2]
                rows.append((parts[1].split("@")[0], "master" if "master" in flags else "slave",
                             parts[7] == "connected" and "fail" not in flags))
        cluster_state = next(x.split(":", 1)[1].strip() for x in info.splitlines() if x.startswith("cluster_state"))
        return cluster_state, rows

    def wait_healthy(self, *, primaries: int, replicas: int, timeout: float = 60.0) -> None:
        """Every live node sees the cluster ok, with `primaries` connected primaries and `replicas` replicas."""
        def healthy() -> bool:
            for node in self.alive():
                state, rows = self._view(node)
                up = [r for r in rows if r[2]]
                if state != "ok" or sum(r[1] == "master" for r in up) != primaries \
                        or sum(r[1] == "slave" for r in up) != replicas:
                    return False
            return True

        _wait(healthy, timeout=timeout, what=f"cluster with {primaries} primaries and {replicas} replicas",
              logs=[n.dir / "redis.log" for n in self.nodes])

    def primary_of(self, key: str) -> Server:
        """The node serving `key`'s slot now."""
        node = self.alive()[0]
        c = node.client()
        try:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            shards = c.execute_command("CLUSTER", "SLOTS")
        finally:
            c.close()
        for start, end, primary, *_ in shards:
            if int(start) <= slot <= int(end):
                port = int(primary[1])
                return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no node serves slot {slot} of {key}")

    def slots_of(self, primary: Server) -> list[tuple[int, int]]:
        """The slot ranges `primary` serves now."""
        c = self.alive()[0].client()
        try:
            shards = c.execute_command("CLUSTER", "SLOTS")
        finally:
            c.close()
        return [(int(start), int(end)) for start, end, node, *_ in shards if int(node[1]) == primary.port]

    def replica_of(self, primary: Server) -> Server:
        def find() -> Server | None:
            c = primary.client()
            try:
                info = c.info("replication")
            finally:
                c.close()
            ports = {int(v["port"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)}
            return next((n for n in self.nodes if n.port in ports), None)

        return _wait(find, timeout=30, what=f"a replica of {primary.port}")  # type: ignore[return-value]

    def role(self, node: Server) -> str:
        c = node.client()
        try:
            return str(c.info("replication")["role"])
        finally:
            c.close()


class SentinelGroup:
    """A primary, its replica and `sentinels` sentinels (quorum 2) on free loopback ports, no persistence."""

    def __init__(self, servers: Servers, *, name: str = "mymaster", sentinels: int = 3,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 10_000) -> None:
        self.name = name
        self.primary = servers.start("primary")
        self.replica = servers.start("replica", args=["--replicaof", "127.0.0.1", str(self.primary.port)])
        self.sentinels: list[Server] = []
        for i in range(sentinels):
            d = servers.root / f"sentinel{i}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "sentinel.conf").write_text(
                f"sentinel monitor {name} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
                f"sentinel failover-timeout {name} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {name} 1\n")
            self.sentinels.append(servers.start(f"sentinel{i}", sentinel=True))
        # the replica in sync, and every sentinel knows the replica and the other sentinels
        _wait(lambda: self._replica_synced(), timeout=30, what="replica in sync",
              logs=[self.replica.dir / "redis.log"])
        _wait(lambda: all(self._sentinel_ready(s, sentinels) for s in self.sentinels), timeout=60,
              what="sentinels ready", logs=[s.dir / "redis.log" for s in self.sentinels])

    @property
    def url(self) -> str:
        """REDIS_URL for REDIS_MODE=sentinel: every sentinel."""
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + "/0"

    def _replica_synced(self) -> bool:
        c = self.replica.client()
        try:
            info = c.info("replication")
        finally:
            c.close()
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _sentinel_ready(self, sentinel: Server, total: int) -> bool:
        c = sentinel.client()
        try:
            master = c.execute_command("SENTINEL", "MASTER", self.name)
        finally:
            c.close()
        if isinstance(master, list):
            master = dict(zip(master[::2], master[1::2], strict=False))
        fields = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                  for k, v in master.items()}
        return int(fields["num-slaves"]) >= 1 and int(fields["num-other-sentinels"]) >= total - 1

    def current_primary_port(self) -> int:
        c = self.sentinels[0].client()
        try:
            addr = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        finally:
            c.close()
        return int(addr[1])

    def wait_promoted(self, timeout: float = 60.0) -> None:
        """The sentinels switched to the replica, and it answers as a primary."""
        def promoted() -> bool:
            if any(self._port_seen_by(s) != self.replica.port for s in self.sentinels if s.proc and s.proc.poll() is None):
                return False
            c = self.replica.client()
            try:
                return c.info("replication").get("role") == "master"
            finally:
                c.close()

        _wait(promoted, timeout=timeout, what="failover to the replica",
              logs=[s.dir / "redis.log" for s in self.sentinels])

    def _port_seen_by(self, sentinel: Server) -> int:
        c = sentinel.client()
        try:
            addr = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        finally:
            c.close()
        return int(addr[1])
