"""A small typed HTTP client for the platform (used by the CLI, the demo, the harness and the tests)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from safe_procurement.services.launcher import SERVICES

FINAL = {"origin_rejected", "loan_approved", "loan_rejected", "withdrawn"}


def is_final(case: dict[str, Any]) -> bool:
    status = case.get("status")
    if status in FINAL:
        return True
    return status == "origin_verified" and not case.get("proposal", {}).get("financing")


class _RetryingTransport(httpx.AsyncBaseTransport):
    """Retries a request whose connection broke before an answer (e.g. a keep-alive connection the
    server closed at the same moment). Safe here: reads are idempotent and so is POST /procurements,
    keyed by its reference."""

    def __init__(self, inner: httpx.AsyncBaseTransport, attempts: int = 3) -> None:
        self.inner = inner
        self.attempts = attempts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(1, self.attempts + 1):
            try:
                return await self.inner.handle_async_request(request)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
                if attempt == self.attempts:
                    raise
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.inner.aclose()


class PlatformClient:
    """HTTP access to the four services; `base_urls` maps service name → URL."""

    def __init__(self, base_urls: dict[str, str] | None = None, token: str = "dev-operator", timeout: float = 10.0):
        self.base_urls = base_urls or {s: f"http://127.0.0.1:{p}" for s, p in SERVICES.items()}
        self.http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                                      transport=_RetryingTransport(httpx.AsyncHTTPTransport(retries=2)))

    async def __aenter__(self) -> PlatformClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    def url(self, service: str, path: str) -> str:
        return self.base_urls[service].rstrip("/") + path

    async def submit(self, proposal: dict[str, Any] | str | bytes) -> httpx.Response:
        content = proposal if isinstance(proposal, str | bytes) else None
        if content is not None:
            return await self.http.post(self.url("applications", "/procurements"), content=content,
                                        headers={"content-type": "application/json"})
        return await self.http.post(self.url("applications", "/procurements"), json=proposal)

    async def case(self, case_id: str) -> dict[str, Any]:
        r = await self.http.get(self.url("applications", f"/procurements/{case_id}"))
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    async def case_by_reference(self, reference: str) -> dict[str, Any] | None:
        r = await self.http.get(self.url("applications", f"/procurements/by-reference/{reference}"))
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    async def timeline(self, case_id: str) -> list[dict[str, Any]]:
        r = await self.http.get(self.url("applications", f"/procurements/{case_id}/timeline"))
        r.raise_for_status()
        return r.json()["items"]  # type: ignore[no-any-return]

    async def wait_for_status(
        self, case_id: str, statuses: set[str] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Wait until the case reaches one of `statuses` (default: any final status).
        On timeout the error shows the case's timeline."""
        deadline = time.monotonic() + timeout
        case: dict[str, Any] = {}
        while time.monotonic() < deadline:
            case = await self.case(case_id)
            if (statuses and case["status"] in statuses) or (not statuses and is_final(case)):
                return case
            await asyncio.sleep(0.05)
        lines = "\n".join(f"  {t['at']} {t['type']}: {t['summary']}" for t in await self.timeline(case_id))
        want = ", ".join(sorted(statuses)) if statuses else "a final status"
        raise TimeoutError(f"case {case_id} is {case.get('status')!r}, not {want}, after {timeout}s. Timeline:\n{lines}")

    async def dead_letters(self, service: str, **params: Any) -> list[dict[str, Any]]:
        r = await self.http.get(self.url(service, "/dead-letters"), params={k: v for k, v in params.items() if v})
        r.raise_for_status()
        return r.json()["items"]  # type: ignore[no-any-return]

    async def post_agreement(self, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(self.url("partner_registry", "/agreements"), json=body)

    async def facility(self, member_state: str) -> httpx.Response:
        return await self.http.get(self.url("loan_disbursement", f"/facilities/{member_state}"))
