"""Defect 3 of issue 21: a crafted cursor is client input. Every paged route of every service answers 422
"invalid cursor" for a cursor that is not one of its own (a JSON `true`, a 30-digit number, a float, a negative
number, junk), and never a 5xx; a property test feeds arbitrary cursors to each of them."""

from __future__ import annotations

import base64
import json
from typing import Any

import hypothesis
import pytest
import requests
from hypothesis import strategies as st

from safe_procurement.shared.kit.web import decode_cursor, encode_cursor
from tests.integration.test_api_documents import OPERATOR, _served

# service → its paged routes
PAGED = {
    "applications": ["/procurements", "/dead-letters", "/audit"],
    "origin_verification": ["/dead-letters", "/audit"],
    "partner_registry": ["/dead-letters", "/audit"],
    "loan_disbursement": ["/dead-letters", "/audit", "/facilities/PL/ledger", "/loans"],
}


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


# what the adversarial pass reported, and their kin
CRAFTED = [_b64(True), _b64(False), _b64(10**29), _b64(-1), _b64(1.5), _b64("1"), _b64([1]), _b64({"id": 1}),
           _b64(None), _b64(2**63), "%%%", "not-base64", "AAAA", "=" * 8]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5,
)
cursors = st.one_of(json_values.map(_b64), st.text(max_size=60), st.binary(max_size=40).map(
    lambda b: base64.urlsafe_b64encode(b).decode()))


def test_decode_cursor_accepts_only_what_encode_cursor_made():
    assert decode_cursor(encode_cursor(0)) == 0
    assert decode_cursor(encode_cursor(2**63 - 1)) == 2**63 - 1
    assert decode_cursor(None) is None and decode_cursor("") is None
    for bad in CRAFTED:
        with pytest.raises(Exception) as e:
            decode_cursor(bad)
        assert getattr(e.value, "status_code", None) == 422 and e.value.detail == "invalid cursor", bad


@pytest.mark.parametrize("service", list(PAGED))
def test_every_paged_route_answers_422_invalid_cursor_to_crafted_and_arbitrary_cursors(service, tmp_path, prefix,
                                                                                     redis_url):
    tried = 0
    with _served(service, tmp_path, prefix) as base:
        http = requests.Session()
        http.headers.update(OPERATOR)

        def check(path: str, cursor: str) -> None:
            nonlocal tried
            tried += 1
            r = http.get(f"{base}{path}", params={"cursor": cursor}, timeout=10)
            assert r.status_code < 500, (path, cursor, r.status_code, r.text[:300])
            if r.status_code == 200:  # only a cursor this route could have made
                assert cursor == "" or type(decode_cursor(cursor)) is int, (path, cursor)
            else:
                assert r.status_code == 422, (path, cursor, r.status_code, r.text[:300])
                if len(cursor) <= 100:  # a longer one may be refused by the parameter's max_length first
                    assert "invalid cursor" in r.text, (path, cursor, r.text[:300])

        for path in PAGED[service]:
            assert http.get(f"{base}{path}", timeout=10).status_code == 200, path
            for bad in CRAFTED:
                r = http.get(f"{base}{path}", params={"cursor": bad}, timeout=10)
                assert (r.status_code, r.json().get("detail")) == (422, "invalid cursor"), (path, bad, r.text)

            _fuzz(check, path)
    assert tried >= 40 * len(PAGED[service])


def _fuzz(check: Any, path: str) -> None:
    @hypothesis.settings(max_examples=40, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(cursor=cursors)
    def fuzz(cursor: str) -> None:
        check(path, cursor)

    fuzz()
