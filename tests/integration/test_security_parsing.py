"""Defect 5 of issue 21: strict parsing, the same over HTTP and over the stream, one error shape.

Before: amounts "1_000", " 5 ", "1.0e2" accepted (echoed as "1.0E+2"); booleans from "yes"/"1"/"no"; a date-time
where a date is due; duplicate JSON keys (last wins); any Content-Type; NUL refused over HTTP but accepted over the
stream; withdraw/reverify/replay/discard answered 400 with another body for bad JSON and accepted unknown fields
and NaN; blank reasons accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import strict
from tests.builders import proposal
from tests.integration.helpers import xadd
from tests.integration.test_auth_matrix import build, headers

JSON = {"content-type": "application/json"}


def _shape(r: Any) -> list[dict[str, Any]]:
    """The one error shape: {"detail": [{"loc", "field", "msg", "type"}, …]}."""
    body = r.json()
    assert isinstance(body["detail"], list) and body["detail"], body
    for item in body["detail"]:
        assert set(item) == {"loc", "field", "msg", "type"}, item
    return body["detail"]  # type: ignore[no-any-return]


def _bad_proposals() -> dict[str, tuple[str, Any]]:
    """name → (raw JSON body, the field the 422 must name)."""
    out: dict[str, tuple[str, Any]] = {}
    for name, amount in (("underscore", "1_000"), ("spaces", " 5 "), ("exponent string", "1.0e2"),
                         ("NaN string", "NaN"), ("boolean amount", True)):
        body = proposal(financing=[])
        body["end_products"][0]["components"][0]["cost_eur"] = amount
        out[name] = (json.dumps(body), "end_products.0.components.0.cost_eur")
    body = proposal(financing=[])
    raw = json.dumps(body).replace('"cost_eur": "500000.00"', '"cost_eur": 1.0e2')
    assert "1.0e2" in raw
    out["exponent number"] = (raw, "body")
    for flag in ("yes", "1", "no", 1):
        body = proposal(financing=[])
        body["contractor"]["screening_and_guarantees"] = flag
        out[f"boolean {flag!r}"] = (json.dumps(body), "contractor.screening_and_guarantees")
    body = proposal(financing=[])
    body["contract_signed_on"] = "2026-09-01T00:00:00"
    out["date-time for a date"] = (json.dumps(body), "contract_signed_on")
    body = proposal(financing=[])
    raw = json.dumps(body)
    out["duplicate key"] = ('{"reference": "DUP-1", ' + raw[1:], "body")
    out["NaN number"] = (raw.replace('"title": ', '"contract_value_eur": NaN, "title": ', 1), "body")
    return out


def test_the_strict_reader_refuses_what_json_loads_lets_through():
    for raw, kind in (('{"a": 1, "a": 2}', "duplicate_key"), ('{"a": NaN}', "non_finite_number"),
                      ('{"a": Infinity}', "non_finite_number"), ('{"a": 1e3}', "number_format"),
                      ('{"a": "x\\u0000"}', "nul_character"), ('{"a": ', "json_invalid")):
        with pytest.raises(strict.StrictJsonError) as e:
            strict.loads(raw)
        assert e.value.kind == kind, raw
    assert strict.loads('{"a": 1.10, "b": [1, "2"]}') == {"a": strict.Decimal("1.10"), "b": [1, "2"]}


async def test_loose_values_are_refused_over_http_with_the_field_named_and_nothing_stored(tmp_path, prefix):
    app = build("applications", tmp_path, prefix)
    async with running(app) as (client, _rt):
        client.headers.pop("Authorization", None)
        for name, (raw, field) in _bad_proposals().items():
            r = await client.post("/procurements", content=raw.encode(), headers={**JSON, **headers("operator")})
            assert r.status_code == 422, (name, r.status_code, r.text[:300])
            assert field in {d["field"] for d in _shape(r)}, (name, r.json())
        listed = await client.get("/procurements", headers=headers("operator"))
        assert listed.json()["items"] == []
        # a JSON body under another content type: 415, same shape
        r = await client.post("/procurements", content=json.dumps(proposal(financing=[])).encode(),
                              headers={"content-type": "text/plain", **headers("operator")})
        assert r.status_code == 415 and _shape(r)[0]["type"] == "unsupported_media_type"


async def test_the_same_values_are_dead_lettered_over_the_intake_stream(tmp_path, prefix, redis_client):
    app = build("applications", tmp_path, prefix)
    async with running(app) as (client, _rt):
        client.headers.pop("Authorization", None)
        cases = _bad_proposals()
        body = proposal(financing=[], title="a\u0000b")  # refused over HTTP before; accepted over the stream
        cases["NUL in a title"] = (json.dumps(body), "body")
        for raw, _field in cases.values():
            await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, raw)

        async def all_dead() -> list[Any] | None:
            items = (await client.get("/dead-letters?limit=500", headers=headers("operator"))).json()["items"]
            return items if len(items) >= len(cases) else None

        letters = await wait_for(all_dead, message="every loose proposal dead-lettered")
        assert {d["error_kind"] for d in letters} == {"validation"}
        assert (await client.get("/procurements", headers=headers("operator"))).json()["items"] == []


async def test_action_bodies_refuse_bad_json_unknown_fields_nan_and_blank_reasons_in_the_one_shape(
    tmp_path, prefix, redis_client
):
    app = build("applications", tmp_path, prefix)
    async with running(app) as (client, _rt):
        client.headers.pop("Authorization", None)
        case = (await client.post("/procurements", json=proposal(financing=[]), headers=headers("operator"))).json()
        bad = proposal(financing=[])
        bad["participants"] = ["PL", "ZZ"]
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, bad)

        async def letter() -> int | None:
            items = (await client.get("/dead-letters", headers=headers("operator"))).json()["items"]
            return items[0]["id"] if items else None

        dl = await wait_for(letter, message="a dead letter")
        routes = [f"/procurements/{case['id']}/withdraw", f"/procurements/{case['id']}/reverify",
                  f"/dead-letters/{dl}/replay", f"/dead-letters/{dl}/discard"]
        bodies = {"bad JSON": b"{not json", "unknown field": b'{"reason": "r", "force": true}',
                  "NaN": b'{"reason": "r", "payload": NaN}', "blank reason": b'{"reason": "   "}',
                  "duplicate key": b'{"reason": "r", "reason": "s"}'}
        for path in routes:
            for name, raw in bodies.items():
                r = await client.post(path, content=raw, headers={**JSON, **headers("operator")})
                assert r.status_code == 422, (path, name, r.status_code, r.text[:300])
                _shape(r)
            r = await client.post(path, content=b'{"reason": "r"}',
                                  headers={"content-type": "application/x-www-form-urlencoded", **headers("operator")})
            assert r.status_code == 415, (path, r.status_code)
        # nothing happened
        assert (await client.get(f"/dead-letters/{dl}", headers=headers("operator"))).json()["status"] == "open"
        got = (await client.get(f"/procurements/{case['id']}", headers=headers("operator"))).json()
        assert got["status"] != "withdrawn"


async def test_loan_bodies_refuse_loose_amounts_booleans_and_dates(tmp_path, prefix):
    app = build("loan_disbursement", tmp_path, prefix)
    async with running(app) as (client, _rt):
        client.headers.pop("Authorization", None)
        cases = [
            ("/facilities/DK/pre-financing", {"amount_eur": "1_000", "requested_on": "2027-01-01"}, "amount_eur"),
            ("/facilities/DK/pre-financing", {"amount_eur": " 5 ", "requested_on": "2027-01-01"}, "amount_eur"),
            ("/facilities/DK/pre-financing", {"amount_eur": "1.0e2", "requested_on": "2027-01-01"}, "amount_eur"),
            ("/facilities/DK/pre-financing", {"amount_eur": "10.00", "requested_on": "2027-01-01T00:00:00"},
             "requested_on"),
        ]
        for path, body, field in cases:
            r = await client.post(path, json=body, headers=headers("operator"))
            assert r.status_code == 422 and field in {d["field"] for d in _shape(r)}, (body, r.text[:300])
        for flag in ("yes", "1", "no"):
            r = await client.put("/facilities/DK", json={"suspended": flag, "reason": "r"}, headers=headers("operator"))
            assert r.status_code == 422 and "suspended" in {d["field"] for d in _shape(r)}, (flag, r.text[:300])
        r = await client.put("/facilities/DK", content=b'{"suspended": true, "reason": "   "}',
                             headers={**JSON, **headers("operator")})
        assert r.status_code == 422
        facility = (await client.get("/facilities/DK", headers=headers("operator"))).json()
        assert facility["suspended"] is False and facility["pre_financing_paid_eur"] == "0.00"
