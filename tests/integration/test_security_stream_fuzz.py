"""A fuzz of the stream intake and of every internal stream (issue 21, "no 5xx from any input"): for each service,
hypothesis generates payloads for every stream it consumes — arbitrary JSON, junk text, and the stream's event
with its fields set to arbitrary values — signed as the producer would sign them (so they reach validation and
the handlers), plus a share unsigned. Every entry must be consumed: handled, or dead-lettered with the reason as
`validation` or `signature` — never a handler crash — and the service stays live; the ledger stays balanced."""

from __future__ import annotations

import json
import uuid
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.kit import signing, wire
from tests.integration.test_auth_matrix import EVENT_KEYS, SERVICES, build, headers

PER_STREAM = 24

scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.text(max_size=12) \
    | st.sampled_from(["", "PL", "2026-09-01", "1.00", "-1", "NaN", "1e9", "ammunition_and_missiles", "eligible"])
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _payloads(model: Any, n: int) -> list[str | bytes]:
    fields = list(model.model_fields)
    event_type = model.model_fields.get("event_type")
    base: dict[str, Any] = {"event_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())}
    if event_type is not None and event_type.default is not None:
        base["event_type"] = event_type.default
    shaped = st.dictionaries(st.sampled_from(fields), json_values, max_size=len(fields)).map(
        lambda d: json.dumps({**base, **d, "event_id": str(uuid.uuid4())}))
    anything = st.one_of(shaped, shaped, json_values.map(json.dumps), st.text(max_size=40),
                         st.binary(max_size=40))
    out: list[str | bytes] = []

    @hypothesis.settings(max_examples=n, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(anything)
    def collect(payload: str | bytes) -> None:
        out.append(payload)

    collect()
    return out[:n]


@pytest.mark.parametrize("service", list(SERVICES))
async def test_arbitrary_entries_on_every_consumed_stream_are_handled_or_dead_lettered_never_crash(
    service, tmp_path, prefix, redis_client
):
    app = build(service, tmp_path, prefix, max_attempts=2)
    async with running(app) as (client, rt):
        client.headers.pop("Authorization", None)
        if not rt.messaging.subscriptions:  # the partner registry reads no stream: nothing to fuzz
            assert service == "partner_registry"
            return
        sent = 0
        for sub in rt.messaging.subscriptions.values():
            keyring = signing.Keyring(EVENT_KEYS, service=signing.producer_of(sub.stream), dev=False) \
                if sub.stream not in signing.UNSIGNED else None
            for i, payload in enumerate(_payloads(sub.model, PER_STREAM)):
                entry: dict[str, Any] = {wire.DATA: payload}
                if keyring is not None and i % 6:  # one in six goes unsigned
                    entry[wire.SIGNATURE] = keyring.sign(sub.stream, payload)
                await redis_client.xadd(f"{prefix}{sub.stream}", entry)
                sent += 1

        async def drained() -> bool:
            health = await rt.messaging.stream_health()
            return all(h["pending"] == 0 and h["lag"] == 0 for h in health.values())

        await wait_for(drained, timeout=120, message=f"{service} consumed all {sent} fuzzed entries")
        letters = (await client.get("/dead-letters?limit=500", headers=headers("operator"))).json()["items"]
        kinds = {d["error_kind"] for d in letters}
        crashes = [(d["stream"], d["error"][:200]) for d in letters if d["error_kind"] not in ("validation", "signature")]
        assert not crashes, crashes
        assert kinds and sent >= PER_STREAM * len(rt.messaging.subscriptions)
        assert (await client.get("/health/live")).status_code == 200
        if service == "loan_disbursement":
            assert (await client.get("/ledger/check", headers=headers("operator"))).json()["ok"] is True
        print(f"{service}: {sent} fuzzed entries, {len(letters)} dead-lettered, 0 crashes")
