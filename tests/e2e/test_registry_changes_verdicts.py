"""A new participation agreement changes the verdict for contracts signed on or after its effective date,
and not for those signed before — across the registry, its replica in origin verification, and applications."""

from __future__ import annotations

import pytest

from tests.builders import proposal

pytestmark = pytest.mark.e2e


def japanese_content(signed_on: str) -> dict:
    """40 % of the component cost from Japan: over the 35 % cap unless an agreement counts it eligible."""
    body = proposal(tag="JP", contract_signed_on=signed_on)
    body.pop("financing")
    body["end_products"][0]["components"] = [
        {"name": "optics", "origin_country": "JP", "cost_eur": "400000.00", "supplier": "s", "evidence_ref": "e1"},
        {"name": "casing", "origin_country": "PL", "cost_eur": "600000.00", "supplier": "s", "evidence_ref": "e2"},
    ]
    return body


async def _verdict(client, body) -> dict:
    r = await client.submit(body)
    assert r.status_code == 201, r.text
    case = await client.wait_for_status(r.json()["id"], {"origin_verified", "origin_rejected", "needs_review"},
                                        timeout=60)
    return case


async def test_an_agreement_changes_the_verdict_from_its_effective_date_and_reverification_shows_it(safe_stack):
    async with safe_stack.client() as client:
        before_any = await _verdict(client, japanese_content("2026-11-02"))
        assert before_any["verification"]["outcome"] == "ineligible"

        # the replica must catch up even if verification is down while the registry changes
        old = safe_stack.kill("origin_verification")
        r = await client.post_agreement({
            "country": "JP", "kind": "safe_participation", "effective_from": "2026-11-01",
            "content_counts_as_eligible": True, "max_content_share": "0.50", "entities_eligible": False,
            "source": "test: hypothetical agreement",
        })
        assert r.status_code == 201, r.text
        safe_stack.wait_restarted("origin_verification", old)

        day_before = await _verdict(client, japanese_content("2026-10-31"))
        day_of = await _verdict(client, japanese_content("2026-11-01"))
        assert day_before["verification"]["outcome"] == "ineligible"
        assert "R-ORIG-1" in {f["rule"] for f in day_before["verification"]["findings"] if f["passed"] is False}
        assert day_of["verification"]["outcome"] == "eligible", day_of["verification"]

        # the case decided before the agreement was recorded is re-verified on an operator's request
        r = await client.http.post(client.url("applications", f"/procurements/{before_any['id']}/reverify"),
                                   json={"reason": "JP agreement recorded"})
        assert r.status_code == 200, r.text
        again = await client.wait_for_status(before_any["id"], {"origin_verified"}, timeout=60)
        assert again["verification"]["outcome"] == "eligible"
        types = [t["type"] for t in await client.timeline(before_any["id"])]
        assert types.count("OriginVerificationCompleted") == 2 and "ReverificationRequested" in types
