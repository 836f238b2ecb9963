"""Bearer tokens and roles (docs/interface.md "Auth"): operator, auditor, member-state-XX."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPBearer

from safe_procurement.shared.contracts import countries

ROLES = ("operator", "auditor")


@dataclass(frozen=True)
class Principal:
    role: str
    name: str
    # tells two holders of the same role apart (four-eyes: the checker's token must differ from the maker's);
    # a domain-separated digest of the token, never the token
    key: str = ""

    @property
    def can_write(self) -> bool:
        return self.role == "operator"

    @property
    def member_state(self) -> str | None:
        if self.role.startswith("member-state-"):
            return countries.canonical(self.role.removeprefix("member-state-"))
        return None

    def sees(self, participants: list[str] | set[str]) -> bool:
        ms = self.member_state
        return ms is None or ms in {countries.canonical(p) for p in participants}


class TokenError(ValueError):
    pass


class TokenStore:
    """Parsed `SAFE_TOKENS`; lookups compare every token in constant time."""

    def __init__(self, spec: str | None, *, dev: bool) -> None:
        self._tokens: list[tuple[bytes, str]] = []
        if spec:
            for i, pair in enumerate(p.strip() for p in spec.split(",")):
                if not pair:
                    continue
                role, sep, token = pair.partition(":")
                role, token = role.strip(), token.strip()
                if not sep or not token:
                    raise TokenError(f"SAFE_TOKENS entry {i + 1} is not role:token")
                if role not in ROLES and not (
                    role.startswith("member-state-") and countries.is_known(role.removeprefix("member-state-"))
                ):
                    raise TokenError(f"SAFE_TOKENS entry {i + 1}: unknown role {role!r}")
                self._tokens.append((_digest(token), role))
        elif dev:
            self._tokens.append((_digest("dev-operator"), "operator"))
        else:
            raise TokenError("SAFE_TOKENS is required outside SAFE_ENV=dev")

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:  # never show the (hashed) tokens
        return f"TokenStore({len(self._tokens)} tokens)"

    def lookup(self, token: str) -> Principal | None:
        given = _digest(token)
        found: Principal | None = None
        for known, role in self._tokens:
            # compare against every token (no early exit), digests of equal length, so timing says
            # nothing about which token matched or how long the tokens are
            if hmac.compare_digest(known, given):
                found = Principal(role=role, name=role, key=principal_key(token))
        return found


def principal_key(token: str) -> str:
    return hashlib.sha256(b"safe-principal-key:" + token.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


# Documents the scheme in OpenAPI (roles as the security requirement's scopes, as OpenAPI 3.1 allows);
# the check itself is ours so that every failure answers 401 with the same shape.
bearer = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="SAFE_TOKENS role:token; roles operator (read and write), auditor (read), member-state-XX "
    "(read, only cases where XX participates)",
)


def authenticate(request: Request) -> Principal:
    """The caller of `request`, from its bearer token; 401 without a known one."""
    store: TokenStore = request.app.state.runtime.tokens  # the service's Runtime (shared/kit/runtime.py)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    p = store.lookup(token.strip())
    if p is None:
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
    return p


def require_operator(p: Principal) -> Principal:
    if not p.can_write:
        raise HTTPException(403, "operator role required")
    return p


async def principal(request: Request, _: Any = Depends(bearer)) -> Principal:
    return authenticate(request)


async def reader(p: Principal = Depends(principal)) -> Principal:
    return p


async def staff(p: Principal = Security(principal, scopes=["operator", "auditor"])) -> Principal:
    """Operators and auditors: the whole platform, read-only for auditors."""
    if p.member_state is not None:
        raise HTTPException(403, "this endpoint is for operators and auditors")
    return p


async def operator(p: Principal = Security(principal, scopes=["operator"])) -> Principal:
    return require_operator(p)
