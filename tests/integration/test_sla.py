"""SLA clocks on the applications service, with an injected clock: the case list and explain show time in status
and the breach; /metrics counts cases over their target per status."""

from __future__ import annotations

from datetime import timedelta

from safe_procurement.services.applications.config import Settings
from safe_procurement.services.applications.main import build_app
from safe_procurement.services.testing.inprocess import running
from safe_procurement.services.testing.waiting import wait_for
from safe_procurement.shared.kit.tables import utcnow
from tests import dbs
from tests.builders import proposal
from tests.integration.helpers import FAST


def over_sla(metrics: str, status: str) -> float | None:
    for line in metrics.splitlines():
        if line.startswith("safe_cases_over_sla{") and f'status="{status}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_case_past_its_status_target_is_shown_in_breach_and_counted(tmp_path, prefix, redis_url):
    app = build_app(Settings(database_url=dbs.url(tmp_path, "apps"), stream_prefix=prefix, consumer_name="t1",
                             sla_targets="verifying=5m,needs_review=5wd", **FAST))
    async with running(app) as (client, rt):
        case_id = (await client.post("/procurements", json=proposal())).json()["id"]

        async def verifying() -> bool:
            return (await client.get(f"/procurements/{case_id}")).json()["status"] == "verifying"
        await wait_for(verifying, message="verifying")  # no origin verification runs: the case waits there

        since = (await client.get(f"/procurements/{case_id}/explain")).json()["sla"]["since"]
        rt.clock = lambda: utcnow() + timedelta(minutes=4)
        item = (await client.get("/procurements", params={"status": "verifying"})).json()["items"][0]
        assert item["sla"]["target"] == "5m" and item["sla"]["breached"] is False
        assert item["sla"]["seconds_in_status"] >= 240
        assert over_sla((await client.get("/metrics")).text, "verifying") == 0.0

        rt.clock = lambda: utcnow() + timedelta(minutes=6)
        item = (await client.get("/procurements", params={"status": "verifying"})).json()["items"][0]
        assert item["sla"]["breached"] is True and item["sla"]["over_by_seconds"] > 0
        explained = (await client.get(f"/procurements/{case_id}/explain")).json()["sla"]
        assert explained["breached"] is True and explained["since"] == since
        metrics = (await client.get("/metrics")).text
        assert over_sla(metrics, "verifying") == 1.0 and over_sla(metrics, "needs_review") == 0.0
