"""Console sessions: kept in the console process (the token never leaves the server after sign-in).

The browser holds only a random session id in an HttpOnly, SameSite=Strict cookie (Secure over TLS); each
session has its own CSRF token, which every form carries and every POST must present. A console restart
signs everyone out."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from safe_procurement.shared.kit.auth import Principal

COOKIE = "safe_console"
PRE_COOKIE = "safe_console_signin"  # double-submit CSRF token of the sign-in form (no session yet)


@dataclass
class Session:
    token: str
    principal: Principal
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_seen: float = field(default_factory=time.monotonic)
    flash: list[str] = field(default_factory=list)

    def csrf_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf.encode(), str(given).encode())


class SessionStore:
    def __init__(self, idle_seconds: float, clock=time.monotonic) -> None:  # noqa: ANN001
        self.idle = idle_seconds
        self.clock = clock
        self._sessions: dict[str, Session] = {}

    def create(self, token: str, principal: Principal) -> tuple[str, Session]:
        self._expire()
        sid = secrets.token_urlsafe(32)
        s = Session(token=token, principal=principal, last_seen=self.clock())
        self._sessions[sid] = s
        return sid, s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self._sessions.get(sid)
        if s is None:
            return None
        now = self.clock()
        if now - s.last_seen > self.idle:
            self._sessions.pop(sid, None)
            return None
        s.last_seen = now
        return s

    def drop(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def _expire(self) -> None:
        now = self.clock()
        for sid in [k for k, s in self._sessions.items() if now - s.last_seen > self.idle]:
            del self._sessions[sid]

    def __len__(self) -> int:
        return len(self._sessions)
