"""The wire format of an event on a Redis stream: the one place the entry's fields are spelled.

An entry carries the event's JSON in the field `__data__` (FastStream's own field name for a stream entry's body)
and, on internal streams, the producer's signature in `__sig__` (shared/kit/signing.py). The JSON is the payload as
is, never wrapped: any Redis client (another system, `redis-cli XADD <stream> * __data__ '{…}'`) can publish and
read it. Entries that FastStream itself framed in its binary format (`BinaryMessageFormatV1`) are read as well:
the frame is unwrapped and its body is the payload.

Reading a batch, FastStream's parse and decode stages are used as FastStream designs them, with kit functions in
both: `parse_batch` turns the XREADGROUP reply FastStream hands a custom parser into a `StreamMessage` (metadata
only), `decode_batch` turns it into `Entry` objects. The kit parses each entry's payload itself, and later
(shared/kit/batches.py), because FastStream's batch parser would (a) parse every plain JSON entry up to three
times (probing for its binary frame, then for its legacy JSON envelope, then for the body) and re-encode the whole
batch, a cost `make bench` sees per entry; (b) parse with floats, where amounts must be Decimals; and (c) fail the
whole batch on one undecodable entry, where each entry must be handled or dead-lettered on its own.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faststream.message import StreamMessage
from faststream.redis import BinaryMessageFormatV1

DATA = "__data__"
SIGNATURE = "__sig__"
DATA_KEY = DATA.encode()
SIGNATURE_KEY = SIGNATURE.encode()
_FRAMED = BinaryMessageFormatV1.IDENTITY_HEADER
_synthetic_ids = itertools.count(1)


@dataclass
class Entry:
    """One stream entry: its id and its fields as Redis returns them."""

    entry_id: str
    fields: dict[bytes, bytes]


def fields(payload: str | bytes, signature: str | None = None) -> dict[str, str | bytes]:
    """The fields of an entry carrying `payload` (signed when `signature` is given), ready for XADD."""
    out: dict[str, str | bytes] = {DATA: payload}
    if signature is not None:
        out[SIGNATURE] = signature
    return out


def payload(entry_fields: Mapping[bytes, bytes]) -> bytes | None:
    """The event's JSON bytes, unframed; None when the entry has no `__data__` field."""
    raw = entry_fields.get(DATA_KEY)
    if raw is not None and raw.startswith(_FRAMED):
        data, _headers = BinaryMessageFormatV1.parse(raw)
        return data
    return raw


def decoded(entry_fields: Mapping[bytes, bytes]) -> Any:
    """The event of an entry as plain JSON values (for tools and tests; consumers parse strictly)."""
    data = payload(entry_fields)
    if data is None:
        raise KeyError(DATA)
    return json.loads(data)


def readable(entry_fields: Mapping[bytes, bytes]) -> str:
    """The entry as text for a dead letter: its payload, or all its fields when it has no payload."""
    if DATA_KEY not in entry_fields:
        return json.dumps({k.decode(errors="replace"): _text(v) for k, v in entry_fields.items()})
    try:
        return _text(payload(entry_fields))
    except Exception:  # a broken frame: shown as it is
        return _text(entry_fields[DATA_KEY])


def entry_id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", errors="replace")


# --- FastStream's parse and decode stages for a batch subscriber --------------------------------------------


async def parse_batch(raw: Mapping[str, Any]) -> StreamMessage[Any]:
    """FastStream custom parser: the batch's metadata, payloads left alone (see the module docstring)."""
    ids = raw.get("message_ids") or []
    data = raw.get("data") or []
    return StreamMessage(
        raw_message=raw, body=b"", message_id=entry_id(ids[0]) if ids else None,
        correlation_id=_framed_correlation_id(data[0]) if data else None,
    )


async def decode_batch(message: StreamMessage[Any]) -> list[Entry]:
    """FastStream custom decoder: the batch's entries. FastStream's in-memory test broker sends entries without
    ids; they get ids `0-<n>`, unique in the process, so that each can still be told apart."""
    raw = message.raw_message
    data = raw.get("data") or []
    ids = [entry_id(i) for i in raw.get("message_ids") or []]
    if len(ids) != len(data):
        ids = [f"0-{next(_synthetic_ids)}" for _ in data]
    return [Entry(i, d) for i, d in zip(ids, data, strict=True)]


def _framed_correlation_id(first: Mapping[bytes, bytes]) -> str | None:
    raw = first.get(DATA_KEY)
    if not raw or not raw.startswith(_FRAMED):
        return None
    try:
        return BinaryMessageFormatV1.parse(raw)[1].get("correlation_id")
    except Exception:  # a broken frame is the entry's problem, reported when it is decoded
        return None
