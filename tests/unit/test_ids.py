"""Time-ordered ids (UUID version 7) for cases, events and loans."""

from __future__ import annotations

import time
import uuid

from safe_procurement.shared import contracts
from safe_procurement.shared.contracts.ids import new_id, uuid7


def test_uuid7_is_a_version_7_rfc_uuid_carrying_its_creation_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    u = uuid7()
    after = time.time_ns() // 1_000_000
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert before <= u.int >> 80 <= after
    assert uuid.UUID(str(u)) == u


def test_ids_made_later_sort_later_and_never_repeat() -> None:
    first = [new_id() for _ in range(1000)]
    time.sleep(0.002)  # time passing is the subject: the next ids come from a later millisecond
    second = [new_id() for _ in range(1000)]
    assert max(first) < min(second)  # text order is time order across milliseconds
    assert len(set(first + second)) == 2000
    assert all(uuid.UUID(i).version == 7 for i in first + second)


def test_events_get_time_ordered_ids() -> None:
    ev = contracts.ProcurementWithdrawn(correlation_id="c", case_id="c", reason="r")
    assert ev.event_id.version == 7
