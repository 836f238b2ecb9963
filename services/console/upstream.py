"""Calls to the four services' public APIs with the signed-in user's token; errors become plain messages."""

from __future__ import annotations

from typing import Any

import httpx

SERVICE_TITLES = {
    "applications": "applications",
    "origin_verification": "origin verification",
    "partner_registry": "partner registry",
    "loan_disbursement": "loan disbursement",
}


class UpstreamError(Exception):
    """A service answered with an error (or not at all); `message` is fit to show to the user."""

    def __init__(self, status: int, message: str, service: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.service = service


def plain_message(status: int, body: Any) -> str:
    """The words of an error answer: FastAPI's `detail` (a string, or a list of field errors)."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail:
        return detail
    if isinstance(detail, list) and detail:
        parts = []
        for d in detail:
            if isinstance(d, dict):
                where = d.get("field") or ".".join(str(x) for x in d.get("loc", []) if x != "body")
                parts.append(f"{where}: {d.get('msg', '')}".strip(": ") if where else str(d.get("msg", "")))
            else:
                parts.append(str(d))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {v}" for k, v in detail.items())
    return {401: "the service did not accept your token", 403: "your role may not do this",
            404: "not found (or not visible to you)", 409: "refused: the current state does not allow it"}.get(
        status, f"the service answered {status}")


class Upstream:
    """One shared HTTP connection pool; each call carries the caller's bearer token."""

    def __init__(self, urls: dict[str, str], timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.urls = urls
        self.http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, service: str, method: str, path: str, token: str | None, *,
                      params: dict[str, Any] | None = None, json: Any = None, raw: bool = False) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            r = await self.http.request(method, self.urls[service] + path, params=clean, json=json, headers=headers)
        except httpx.HTTPError:
            raise UpstreamError(502, f"the {SERVICE_TITLES[service]} service is not reachable", service) from None
        if r.status_code >= 400:
            try:
                body: Any = r.json()
            except ValueError:
                body = None
            status = r.status_code if r.status_code < 500 else 502
            raise UpstreamError(status, f"{SERVICE_TITLES[service]}: {plain_message(r.status_code, body)}", service)
        if raw:
            return r
        return r.json()

    async def get(self, service: str, path: str, token: str | None, **params: Any) -> Any:
        return await self.request(service, "GET", path, token, params=params)

    async def post(self, service: str, path: str, token: str, body: Any = None) -> Any:
        return await self.request(service, "POST", path, token, json=body)
