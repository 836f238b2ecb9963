"""/metrics by Prometheus conventions: running totals are counters named `_total`, HTTP requests are counted
and timed per route template and status, the process metrics are there, and the stream gauges stay."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.contracts import streams
from tests.builders import proposal
from tests.integration.helpers import xadd
from tests.integration.test_observability import applications


async def test_counters_http_metrics_process_metrics_and_stream_gauges(tmp_path, prefix, redis_client):
    async with running(applications(tmp_path, prefix)) as (client, _rt):
        case = (await client.post("/procurements", json=proposal())).json()["id"]
        assert (await client.get(f"/procurements/{case}")).status_code == 200
        assert (await client.get("/procurements/not-a-case-id")).status_code in (404, 422)
        await xadd(redis_client, prefix, streams.SUBMIT_PROCUREMENT, proposal())

        async def scrape() -> dict | None:
            r = await client.get("/metrics", headers={"Authorization": ""})
            families = {f.name: f for f in text_string_to_metric_families(r.text)}
            done = [s.value for s in families["safe_messages_processed"].samples
                    if s.name == "safe_messages_processed_total" and s.labels["stream"] == streams.SUBMIT_PROCUREMENT]
            return families if done == [1.0] else None

        families = await wait_for(scrape, message="the stream entry counted")
        for name in ("safe_messages_processed", "safe_messages_failed", "safe_messages_duplicates",
                     "safe_message_batches", "http_requests"):
            assert families[name].type == "counter", name
            assert all(s.name in (f"{name}_total", f"{name}_created") for s in families[name].samples), name
        requests = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
                    for s in families["http_requests"].samples if s.name == "http_requests_total"}
        assert requests[("POST", "/procurements", "201")] == 1
        assert requests[("GET", "/procurements/{case_id}", "200")] == 1
        # the raw path never becomes a label (one series per route template)
        assert not any(case in route or "not-a-case-id" in route for _m, route, _s in requests)
        duration = families["http_request_duration_seconds"]
        assert duration.type == "histogram"
        counts = [s for s in duration.samples if s.name == "http_request_duration_seconds_count"
                  and s.labels["route"] == "/procurements" and s.labels["status"] == "201"]
        assert counts and counts[0].value == 1
        assert "process_resident_memory_bytes" in families and "process_cpu_seconds" in families
        assert "python_info" in families
        for gauge in ("safe_stream_pending", "safe_stream_lag", "safe_stream_oldest_pending_age_seconds"):
            assert families[gauge].type == "gauge"
