"""Limits on input: body size (with and without Content-Length), list sizes, string lengths, decimals —
each answered with a clear 4xx, quickly, and the service stays healthy."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from safe_procurement.services.applications.config import Settings
from safe_procurement.services.applications.main import build_app
from safe_procurement.services.testing.inprocess import running
from safe_procurement.shared.contracts import proposal as limits
from tests import dbs
from tests.builders import proposal
from tests.integration.helpers import FAST

LIMIT = 4 * 1024 * 1024


@pytest.fixture
def app(tmp_path, prefix, redis_url):
    return build_app(Settings(database_url=dbs.url(tmp_path, "apps"), stream_prefix=prefix,
                              consumer_name="t1", max_body_bytes=LIMIT, **FAST))


def fields(r) -> dict[str, str]:
    assert r.status_code == 422, r.text[:500]
    return {e["field"]: e["msg"] for e in r.json()["detail"]}


async def healthy(client) -> None:
    assert (await client.get("/health/live")).status_code == 200
    r = await client.post("/procurements", json=proposal())
    assert r.status_code == 201, r.text


async def test_a_body_over_the_limit_is_refused_with_413_with_or_without_content_length(app):
    async with running(app) as (client, _rt):
        big = json.dumps(proposal(title="x" * (LIMIT + 10))).encode()
        r = await client.post("/procurements", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "larger than" in r.json()["detail"]

        sent = 0

        async def chunks() -> AsyncIterator[bytes]:  # chunked transfer: no Content-Length
            nonlocal sent
            for _ in range(64):
                sent += 256 * 1024
                yield b" " * (256 * 1024)

        r = await client.post("/procurements", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "larger than" in r.json()["detail"]
        assert sent <= LIMIT + 2 * 256 * 1024  # reading stopped at the limit, not at the end of the body
        # the same limit holds on every route with a body, e.g. the kit's dead-letter discard
        r = await client.post("/dead-letters/1/discard", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = await client.post("/procurements", content=b"{}", headers={"content-length": "abc",
                                                                        "content-type": "application/json"})
        assert r.status_code in (400, 413)
        await healthy(client)
        assert (await client.get("/procurements")).json()["items"][0]["status"] in ("submitted", "verifying")


async def test_too_many_components_and_end_products_are_refused_with_a_clear_422(app):
    async with running(app) as (client, _rt):
        component = {"name": "c", "origin_country": "PL", "cost_eur": "1.00"}
        body = proposal()
        body["end_products"][0]["components"] = [component] * (limits.MAX_COMPONENTS_PER_END_PRODUCT + 1)
        started = time.monotonic()
        r = await client.post("/procurements", json=body)
        assert time.monotonic() - started < 10
        msgs = fields(r)
        assert "at most 20000" in msgs["end_products.0.components"]

        body = proposal()
        body["end_products"] = body["end_products"] * (limits.MAX_END_PRODUCTS + 1)
        assert "at most 1000" in fields(await client.post("/procurements", json=body))["end_products"]

        # many end products, each within its own cap, but too many components in total
        per = limits.MAX_COMPONENTS_TOTAL // 4 + 1
        body = proposal()
        body["end_products"] = [{"name": f"p{i}", "category": "artillery", "components": [component] * per}
                                for i in range(4)]
        msgs = fields(await client.post("/procurements", json=body))
        assert any("components in total" in m for m in msgs.values())
        await healthy(client)


async def test_long_strings_and_oversized_or_over_precise_amounts_are_refused_with_a_clear_422(app):
    async with running(app) as (client, _rt):
        msgs = fields(await client.post("/procurements", json=proposal(title="t" * 10_000)))
        assert "at most 300 characters" in msgs["title"]
        msgs = fields(await client.post("/procurements", json=proposal(reference="R" * 101)))
        assert "at most 100 characters" in msgs["reference"]

        body = proposal()
        body["end_products"][0]["components"][0]["cost_eur"] = "1" * 30
        body["contract_value_eur"] = "1" * 30
        body["financing"][0]["amount_eur"] = "0.001"
        msgs = fields(await client.post("/procurements", json=body))
        assert "must not exceed" in msgs["end_products.0.components.0.cost_eur"]
        assert "must not exceed" in msgs["contract_value_eur"]
        assert "at most 2 decimal places" in msgs["financing.0.amount_eur"]

        # as JSON numbers too (never parsed through a float), and numbers that would be slow or infinite
        raw = json.dumps(proposal()).replace('"500000.00"', "1" * 30)
        msgs = fields(await client.post("/procurements", content=raw, headers={"content-type": "application/json"}))
        assert "must not exceed" in msgs["end_products.0.components.0.cost_eur"]
        for weird in ("1e999999999", "NaN", "-1", "9" * 5000, "0." + "0" * 5000 + "1"):
            body = proposal()
            body["end_products"][0]["components"][0]["cost_eur"] = weird
            started = time.monotonic()
            r = await client.post("/procurements", json=body)
            assert time.monotonic() - started < 2
            assert "end_products.0.components.0.cost_eur" in fields(r), weird

        # a share outside 0..1 and an unknown country
        body = proposal(subcontractors=[{"name": "s", "established_in": "ZZ", "share_of_contract_value": "1.5"}])
        msgs = fields(await client.post("/procurements", json=body))
        assert {"subcontractors.0.established_in", "subcontractors.0.share_of_contract_value"} <= set(msgs)

        # deeply nested JSON is refused, not a crash
        deep = "[" * 100_000 + "]" * 100_000
        r = await client.post("/procurements", content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 422
        r = await client.post("/dead-letters/1/discard", content=deep, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422)

        # long query strings on the lists are refused too
        assert (await client.get("/procurements", params={"cursor": "c" * 1000})).status_code == 422
        assert (await client.get("/dead-letters", params={"stream": "s" * 1000})).status_code == 422
        assert (await client.get("/audit", params={"action": "a" * 1000})).status_code == 422

        assert (await client.get("/procurements")).json()["items"] == []  # nothing of it was stored
        await healthy(client)


async def test_nul_characters_anywhere_are_refused_with_422_and_nothing_is_stored(app):
    """PostgreSQL text cannot hold NUL: refused up front on every service, whatever the database."""
    async with running(app) as (client, rt):
        r = await client.post("/procurements", json=proposal(title="shells\u0000"))
        assert r.status_code == 422 and "NUL" in r.text
        r = await client.get("/procurements/by-reference/x%00y")
        assert r.status_code == 422
        r = await client.get("/procurements", params={"status": "sub\x00mitted"})
        assert r.status_code == 422
        assert (await client.get("/procurements")).json()["items"] == []
        await healthy(client)
        assert (await client.post("/procurements", json=proposal())).status_code == 201
