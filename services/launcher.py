"""`safe-procurement up`: the four services as child processes, supervised.

Starts each service (optionally several replicas) with `python -m safe_procurement.services.<name>`, waits until every
`/health/ready` answers, prints the URLs, restarts a child that dies, and stops them all cleanly on
SIGINT/SIGTERM. Writes its children (pids, ports) to `<var>/launcher.json` so tools can find them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SERVICES: dict[str, int] = {
    "applications": 8001,
    "origin_verification": 8002,
    "partner_registry": 8003,
    "loan_disbursement": 8004,
}


# v2: the operator console (a fifth process; it calls the four services' APIs and owns no data)
CONSOLE = "console"
CONSOLE_PORT = 8000


def env_name(service: str) -> str:
    return service.upper()


@dataclass
class Child:
    service: str
    replica: int
    port: int
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    log_path: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.service}#{self.replica}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Launcher:
    var_dir: Path = Path("var")
    replicas: dict[str, int] = field(default_factory=dict)
    services: list[str] = field(default_factory=lambda: list(SERVICES))
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    port_offset: int = 0
    restart: bool = True
    ready_timeout: float = 90.0
    quiet: bool = False
    children: list[Child] = field(default_factory=list)
    _stopping: bool = False
    on_event: Callable[[str], None] | None = None
    console: bool = True

    def say(self, text: str) -> None:
        if self.on_event:
            self.on_event(text)
        elif not self.quiet:
            print(text, flush=True)

    def plan(self) -> list[Child]:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        (self.var_dir / "logs").mkdir(exist_ok=True)
        children = []
        for service in self.services:
            prefix = env_name(service)
            # an explicit <SERVICE>_PORT is the first replica's port; else the default port + --port-offset
            base = int(self.base_env.get(f"{prefix}_PORT") or SERVICES[service] + self.port_offset)
            for r in range(self.replicas.get(service, 1)):
                port = base + 100 * r
                env = dict(self.base_env)
                env.setdefault("SAFE_ENV", "dev")
                env.setdefault("PYTHONUNBUFFERED", "1")
                env[f"{prefix}_PORT"] = str(port)
                env.setdefault(f"{prefix}_DATABASE_URL", f"sqlite+aiosqlite:///{self.var_dir.resolve()}/{service}.db")
                env[f"{prefix}_CONSUMER_NAME"] = f"{service}-{r + 1}"
                children.append(Child(service, r + 1, port, env, log_path=self.var_dir / "logs" / f"{service}-{r + 1}.log"))
        if self.console:
            children.insert(0, self._console_child(children))
        self.children = children
        return children

    def _console_child(self, services: list[Child]) -> Child:
        """The console, pointed at the first replica of each service (CONSOLE_<SERVICE>_URL)."""
        port = CONSOLE_PORT + self.port_offset
        env = dict(self.base_env)
        env.setdefault("SAFE_ENV", "dev")
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["CONSOLE_PORT"] = str(port)
        for child in services:
            if child.replica == 1:
                env[f"CONSOLE_{env_name(child.service)}_URL"] = child.url
        return Child(CONSOLE, 1, port, env, log_path=self.var_dir / "logs" / f"{CONSOLE}-1.log")

    async def _spawn(self, child: Child) -> None:
        assert child.log_path is not None
        log = open(child.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        child.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"safe_procurement.services.{child.service}", env=child.env, stdout=log, stderr=log,
            start_new_session=True,
        )
        log.close()
        child.started_at = time.monotonic()
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "launcher_pid": os.getpid(),
            "children": [
                {"service": c.service, "replica": c.replica, "port": c.port, "url": c.url,
                 "pid": c.proc.pid if c.proc else None, "restarts": c.restarts, "log": str(c.log_path)}
                for c in self.children
            ],
        }
        tmp = self.var_dir / "launcher.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.var_dir / "launcher.json")

    async def wait_ready(self, children: list[Child] | None = None) -> None:
        deadline = time.monotonic() + self.ready_timeout
        pending = list(children or self.children)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending:
                for child in list(pending):
                    if child.proc is not None and child.proc.returncode is not None:
                        raise RuntimeError(f"{child.name} exited with {child.proc.returncode}; see {child.log_path}")
                    try:
                        r = await client.get(f"{child.url}/health/ready")
                        if r.status_code == 200:
                            pending.remove(child)
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    names = ", ".join(c.name for c in pending)
                    raise TimeoutError(f"not ready after {self.ready_timeout}s: {names} (logs in {self.var_dir}/logs)")
                if pending:
                    await asyncio.sleep(0.2)

    async def start(self) -> None:
        self.plan()
        await asyncio.gather(*(self._spawn(c) for c in self.children))
        await self.wait_ready()

    async def supervise(self) -> None:
        """Restart a child that dies (backoff grows if it keeps dying quickly)."""
        while not self._stopping:
            await asyncio.sleep(0.2)
            for child in self.children:
                proc = child.proc
                if self._stopping or proc is None or proc.returncode is None:
                    continue
                if not self.restart:
                    continue
                quick = time.monotonic() - child.started_at < 5
                child.restarts += 1
                self.say(f"! {child.name} exited with code {proc.returncode}; restarting (restart #{child.restarts})")
                if quick:
                    await asyncio.sleep(min(0.5 * child.restarts, 5))
                await self._spawn(child)

    async def stop(self, timeout: float = 20.0) -> None:
        self._stopping = True
        for child in self.children:
            if child.proc is not None and child.proc.returncode is None:
                try:
                    child.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for child in self.children:
            if child.proc is None:
                continue
            try:
                await asyncio.wait_for(child.proc.wait(), timeout=timeout)
            except TimeoutError:
                self.say(f"! {child.name} did not stop in {timeout}s; killing it")
                child.proc.kill()
                await child.proc.wait()

    def urls(self) -> list[str]:
        return [f"  {c.name:<24} {c.url}   " + ("(the operator console: open it in a browser)" if c.service == CONSOLE
                                                    else f"(docs {c.url}/docs)") for c in self.children]


async def run_up(launcher: Launcher, after_ready: Callable[[Launcher], object] | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    launcher.say(f"starting {', '.join(launcher.services)} …")
    try:
        await launcher.start()
    except Exception as e:
        launcher.say(f"x start failed: {e}")
        await launcher.stop(timeout=5)
        return 1
    launcher.say("all services ready:")
    for line in launcher.urls():
        launcher.say(line)
    supervisor = asyncio.create_task(launcher.supervise())
    extra = None
    if after_ready is not None:
        result = after_ready(launcher)
        if asyncio.iscoroutine(result):
            extra = asyncio.create_task(result)
    launcher.say("press Ctrl-C to stop")
    await stop.wait()
    launcher.say("stopping …")
    if extra is not None:
        extra.cancel()
    supervisor.cancel()
    await asyncio.gather(supervisor, return_exceptions=True)
    await launcher.stop()
    launcher.say("stopped")
    return 0
