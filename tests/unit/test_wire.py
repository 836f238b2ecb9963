"""The wire format of a stream entry (shared/kit/wire.py): plain JSON in `__data__`, FastStream's binary frame read
as well, and FastStream's parse/decode stages turning an XREADGROUP batch into entries."""

from __future__ import annotations

import json

from faststream.redis import BinaryMessageFormatV1

from safe_procurement.shared.kit import wire

EVENT = {"event_id": "e-1", "correlation_id": "case-1", "amount_eur": "950000.00"}


async def framed(event: dict[str, str], correlation_id: str) -> bytes:
    return await BinaryMessageFormatV1.encode(message=json.dumps(event).encode(), reply_to=None, headers=None,
                                              correlation_id=correlation_id)


def test_an_entry_carries_the_payload_as_is_and_the_signature_beside_it() -> None:
    body = json.dumps(EVENT)
    assert wire.fields(body) == {wire.DATA: body}
    assert wire.fields(body, "v1:applications:k1:ab") == {wire.DATA: body, wire.SIGNATURE: "v1:applications:k1:ab"}
    as_read = {k.encode(): v.encode() for k, v in wire.fields(body, "sig").items()}  # as Redis hands it back
    assert wire.payload(as_read) == body.encode()
    assert wire.decoded(as_read) == EVENT


async def test_an_entry_framed_by_faststream_reads_as_its_body() -> None:
    entry = {wire.DATA_KEY: await framed(EVENT, "corr-7")}
    assert entry[wire.DATA_KEY].startswith(BinaryMessageFormatV1.IDENTITY_HEADER)
    assert json.loads(wire.payload(entry) or b"") == EVENT
    assert json.loads(wire.readable(entry)) == EVENT


def test_an_entry_without_a_payload_has_none_and_reads_as_all_its_fields() -> None:
    entry = {b"x": b"y"}
    assert wire.payload(entry) is None
    assert json.loads(wire.readable(entry)) == {"x": "y"}


async def test_a_batch_becomes_its_entries_in_order_with_the_first_frame_s_correlation_id() -> None:
    first = {wire.DATA_KEY: await framed(EVENT, "corr-7")}
    raw = {"type": "bstream", "channel": "s", "message_ids": [b"1-0", b"2-0", b"3-0"],
           "data": [first, {wire.DATA_KEY: b"not json"}, {b"x": b"y"}]}
    message = await wire.parse_batch(raw)
    assert message.correlation_id == "corr-7"
    assert message.message_id == "1-0"
    entries = await wire.decode_batch(message)
    assert [e.entry_id for e in entries] == ["1-0", "2-0", "3-0"]
    assert [e.fields for e in entries] == raw["data"]


async def test_entries_without_ids_get_ids_no_other_batch_of_the_process_has() -> None:
    raw = {"type": "bstream", "channel": "s", "data": [{wire.DATA_KEY: b"{}"}, {wire.DATA_KEY: b"{}"}]}
    first = await wire.decode_batch(await wire.parse_batch(raw))
    second = await wire.decode_batch(await wire.parse_batch(raw))
    ids = [e.entry_id for e in first + second]
    assert len(set(ids)) == 4
    assert all(i.startswith("0-") for i in ids)
