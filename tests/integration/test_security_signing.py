"""Defect 2 of issue 21: internal events are authenticated end to end (shared/kit/signing.py).

Before: `XADD applications.loan-requested` with a made-up LoanRequested reserved EUR 950 000 on a facility.
Now: a forged (unsigned), altered, wrongly signed or replayed-onto-another-stream internal event is dead-lettered
with the reason (kind `signature`) and moves no money; the relay signs what a service publishes; keys rotate
without downtime (old and new accepted while the signer moves to the new)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest

from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from safe_procurement.shared.kit import signing, wire
from tests.builders import loan_requested, proposal
from tests.integration.helpers import read_all, signed_xadd, xadd
from tests.integration.test_auth_matrix import EVENT_KEYS, build, headers

OLD = "applications:k1:old-applications-key-0123456789abcdef"
NEW = "applications:k2:new-applications-key-0123456789abcdef"
OTHERS = "loan_disbursement:k1:loan-disbursement-key-0123456789abcdef," \
         "origin_verification:k1:origin-verification-key-0123456789abcdef"
DK_AND_SE = {"participants": ["DK", "SE"], "tag": "FORGED"}  # the "altered" request rewrites these participants


# --- the keyring --------------------------------------------------------------------------------------------


def test_a_signature_binds_the_payload_the_stream_and_the_producer():
    producer = signing.Keyring(EVENT_KEYS, service="applications", dev=False)
    consumer = signing.Keyring(EVENT_KEYS, service="loan_disbursement", dev=False)
    data = loan_requested(("DK", "950000.00"), **DK_AND_SE).model_dump_json()
    sig = producer.sign(streams.LOAN_REQUESTED, data).encode()
    consumer.verify(streams.LOAN_REQUESTED, {wire.DATA_KEY: data.encode(), wire.SIGNATURE_KEY: sig})
    cases = {
        "unsigned entry": {wire.DATA_KEY: data.encode()},
        "does not match": {wire.DATA_KEY: data.replace("950000.00", "950001.00").encode(), wire.SIGNATURE_KEY: sig},
        "malformed": {wire.DATA_KEY: data.encode(), wire.SIGNATURE_KEY: b"garbage"},
        "unknown key": {wire.DATA_KEY: data.encode(), wire.SIGNATURE_KEY: sig.replace(b":k1:", b":k9:")},
    }
    for reason, fields in cases.items():
        with pytest.raises(signing.SignatureError, match=reason):
            consumer.verify(streams.LOAN_REQUESTED, fields)
    # the same entry on another stream of the same producer does not verify
    with pytest.raises(signing.SignatureError, match="does not match"):
        consumer.verify(streams.PROCUREMENT_WITHDRAWN, {wire.DATA_KEY: data.encode(), wire.SIGNATURE_KEY: sig})
    # a service may not sign another producer's events (origin verification forging a loan request)
    forger = signing.Keyring(EVENT_KEYS, service="origin_verification", dev=False)
    with pytest.raises(signing.SignatureError, match="does not publish"):
        consumer.verify(streams.LOAN_REQUESTED, {wire.DATA_KEY: data.encode(),
                                                 wire.SIGNATURE_KEY: forger.sign(streams.LOAN_REQUESTED, data).encode()})
    # the external intake stays unsigned: it is validated like HTTP
    consumer.verify(streams.SUBMIT_PROCUREMENT, {wire.DATA_KEY: b"{}"})


def test_keys_are_required_outside_dev_long_enough_and_never_shown():
    with pytest.raises(signing.KeyringError, match="required"):
        signing.Keyring(None, service="applications", dev=False)
    with pytest.raises(signing.KeyringError, match="shorter"):
        signing.Keyring("applications:k1:short", service="applications", dev=False)
    with pytest.raises(signing.KeyringError, match="service:key_id:secret"):
        signing.Keyring("applications-k1-" + "x" * 40, service="applications", dev=False)
    with pytest.raises(signing.KeyringError, match="no key"):
        signing.Keyring(OTHERS, service="applications", dev=False)
    ring = signing.Keyring(OLD, service="applications", dev=False)
    assert "old-applications-key" not in repr(ring)
    dev = signing.Keyring(None, service="applications", dev=True)
    assert not dev.verifying and dev.sign("x.y", "{}").startswith("v1:applications:dev:")


def test_rotation_accepts_old_and_new_while_signers_move_to_the_new():
    data = '{"a": 1}'
    old_signer = signing.Keyring(f"{OLD},{NEW}", service="applications", dev=False)
    new_signer = signing.Keyring(f"{NEW},{OLD}", service="applications", dev=False)
    explicit = signing.Keyring(f"{OLD},{NEW}", service="applications", key_id="k2", dev=False)
    assert (old_signer.key_id, new_signer.key_id, explicit.key_id) == ("k1", "k2", "k2")
    during = signing.Keyring(f"{OLD},{NEW},{OTHERS}", service="loan_disbursement", dev=False)
    after = signing.Keyring(f"{NEW},{OTHERS}", service="loan_disbursement", dev=False)
    for signer in (old_signer, new_signer):
        during.verify(streams.LOAN_REQUESTED, {wire.DATA_KEY: data.encode(),
                                               wire.SIGNATURE_KEY: signer.sign(streams.LOAN_REQUESTED, data).encode()})
    after.verify(streams.LOAN_REQUESTED, {wire.DATA_KEY: data.encode(),
                                          wire.SIGNATURE_KEY: new_signer.sign(streams.LOAN_REQUESTED, data).encode()})
    with pytest.raises(signing.SignatureError, match="unknown key"):
        after.verify(streams.LOAN_REQUESTED, {wire.DATA_KEY: data.encode(),
                                              wire.SIGNATURE_KEY: old_signer.sign(streams.LOAN_REQUESTED, data).encode()})


# --- a running service --------------------------------------------------------------------------------------


async def _letters(client: Any) -> list[dict[str, Any]]:
    return (await client.get("/dead-letters?limit=500", headers=headers("operator"))).json()["items"]


async def _dead_letter_of(client: Any, reference: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return next((d for d in await _letters(client) if reference in json.dumps(d["payload"])), None)

    return await wait_for(probe, message=f"the dead letter of {reference}")


async def test_forged_altered_or_wrongly_signed_loan_requests_are_dead_lettered_and_move_no_money(
    tmp_path, prefix, redis_client
):
    app = build("loan_disbursement", tmp_path, prefix)
    async with running(app) as (client, _rt):
        client.headers.pop("Authorization", None)
        before = (await client.get("/facilities/DK", headers=headers("operator"))).json()
        forged = loan_requested(("DK", "950000.00"), **DK_AND_SE)
        await xadd(redis_client, prefix, streams.LOAN_REQUESTED, forged)  # what the adversarial pass did
        altered = loan_requested(("DK", "950000.00"), **DK_AND_SE)
        signer = signing.Keyring(EVENT_KEYS, service="applications", dev=False)
        good = altered.model_dump_json()
        await redis_client.xadd(f"{prefix}{streams.LOAN_REQUESTED}", {
            wire.DATA: good.replace('"participants":["DK","SE"]', '"participants":["DK","FI"]'),
            wire.SIGNATURE: signer.sign(streams.LOAN_REQUESTED, good)})
        impostor = loan_requested(("DK", "950000.00"), **DK_AND_SE)
        wrong = signing.Keyring(EVENT_KEYS, service="origin_verification", dev=False)
        data = impostor.model_dump_json()
        await redis_client.xadd(f"{prefix}{streams.LOAN_REQUESTED}",
                                {wire.DATA: data, wire.SIGNATURE: wrong.sign(streams.LOAN_REQUESTED, data)})
        expected = {forged.reference: "signature: unsigned entry on an internal stream",
                    altered.reference: "signature: signature does not match the payload",
                    impostor.reference: "signature: signed by origin_verification, which does not publish on "
                                        f"{streams.LOAN_REQUESTED}"}
        for reference, error in expected.items():
            letter = await _dead_letter_of(client, reference)
            assert (letter["error_kind"], letter["error"]) == ("signature", error)
        # and a genuine one still goes through, so the refusals above are the signatures' doing
        genuine = loan_requested(("DK", "1000.00"), **DK_AND_SE)
        await signed_xadd(redis_client, prefix, streams.LOAN_REQUESTED, genuine, EVENT_KEYS)

        async def decided() -> bool:
            r = await client.get(f"/loan-requests/{genuine.case_id}", headers=headers("operator"))
            return r.status_code == 200

        await wait_for(decided, message="the genuine loan request decided")
        after = (await client.get("/facilities/DK", headers=headers("operator"))).json()
        assert Decimal(after["approved_eur"]) - Decimal(before["approved_eur"]) == Decimal("1000.00")
        for bad in (forged, altered, impostor):
            assert (await client.get(f"/loan-requests/{bad.case_id}", headers=headers("operator"))).status_code == 404
        assert (await client.get("/ledger/check", headers=headers("operator"))).json()["ok"] is True


async def test_the_relay_signs_what_a_service_publishes_and_a_replay_is_signed_by_the_replaying_service(
    tmp_path, prefix, redis_client
):
    app = build("applications", tmp_path, prefix)
    async with running(app) as (client, _rt):
        client.headers.pop("Authorization", None)
        r = await client.post("/procurements", json=proposal(financing=[]), headers=headers("operator"))
        assert r.status_code == 201

        async def published() -> list[Any] | None:
            entries = await redis_client.xrange(f"{prefix}{streams.PROCUREMENT_SUBMITTED}")
            return entries or None

        (_id, fields), = await wait_for(published, message="ProcurementSubmitted on its stream")
        consumer = signing.Keyring(EVENT_KEYS, service="origin_verification", dev=False)
        consumer.verify(streams.PROCUREMENT_SUBMITTED, fields)
        assert fields[wire.SIGNATURE_KEY].startswith(b"v1:applications:k1:")
        # an internal event applications consumes, forged: dead-lettered; the operator's replay is signed by
        # applications itself (audited), so it is accepted and handled
        fake = {"event_type": "LoanApproved", "event_id": str(uuid.uuid4()), "correlation_id": r.json()["id"]}
        await xadd(redis_client, prefix, streams.LOAN_APPROVED, fake)

        async def letter() -> dict[str, Any] | None:
            return next((d for d in await _letters(client) if d["stream"] == streams.LOAN_APPROVED), None)

        dl = await wait_for(letter, message="the forged LoanApproved dead-lettered")
        assert dl["error_kind"] == "signature"
        replayed = await client.post(f"/dead-letters/{dl['id']}/replay", json={}, headers=headers("operator"))
        assert replayed.status_code == 200
        entries = await read_all(redis_client, prefix, streams.LOAN_APPROVED)
        assert len(entries) == 2
        last = (await redis_client.xrange(f"{prefix}{streams.LOAN_APPROVED}"))[-1][1]
        assert last[wire.SIGNATURE_KEY].startswith(b"v1:applications:k1:")
