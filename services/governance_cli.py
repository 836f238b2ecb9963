"""`safe-procurement audit …`: verify every service's audit chain against the anchors the others kept."""

from __future__ import annotations

from typing import Any

import httpx

ANCHORS_PER_CHECK = 200


async def verify_all(http: httpx.AsyncClient, urls: dict[str, str]) -> list[dict[str, Any]]:
    """For each service: its published heads as kept by the other services, then its `GET /audit/verify` with them."""
    report = []
    for service, base in urls.items():
        anchors: dict[int, str] = {}
        witnesses = []
        for other, other_base in urls.items():
            if other == service:
                continue
            try:
                r = await http.get(f"{other_base}/audit/anchors", params={"service": service, "limit": ANCHORS_PER_CHECK})
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                witnesses.append(other)
                for a in r.json():
                    if anchors.setdefault(a["seq"], a["hash"]) != a["hash"]:
                        # two witnesses disagree: keep both checks by failing on the one the chain does not match
                        anchors[a["seq"]] = a["hash"]
        try:
            r = await http.get(f"{base}/audit/verify", params={"anchor": [f"{s}:{h}" for s, h in sorted(anchors.items())]})
        except httpx.HTTPError as e:
            report.append({"service": service, "ok": False, "error": f"unreachable: {e}", "witnesses": witnesses})
            continue
        if r.status_code != 200:
            report.append({"service": service, "ok": False, "error": f"{r.status_code} {r.text[:200]}",
                           "witnesses": witnesses})
            continue
        report.append({**r.json(), "witnesses": witnesses})
    return report


def verify_table(report: list[dict[str, Any]]) -> str:
    lines = [f"{'service':<22} {'result':<8} {'entries':>8} {'head':>6} {'anchors':>8}  first break"]
    for r in report:
        b = r.get("first_break")
        why = r.get("error") or (f"entry {b['seq']}: {b['problem']} — {b['detail']}" if b else "")
        lines.append(f"{r['service']:<22} {'OK' if r.get('ok') else 'BROKEN':<8} {r.get('entries', 0):>8} "
                     f"{r.get('head_seq', 0):>6} {r.get('anchors_checked', 0):>8}  {why}")
    return "\n".join(lines)


async def whatif(http: httpx.AsyncClient, base: str, rules_path: str | None, registry_at: str | None,
                 since: str | None, *, as_json: bool = False) -> tuple[int, str]:
    """`safe-procurement whatif`: 0 when no verdict would change, 1 when some would, 2 when the replay failed."""
    import json
    from datetime import UTC, date, datetime
    from pathlib import Path

    import yaml

    from safe_procurement.services.origin_verification.service_layer.whatif import table

    body: dict[str, Any] = {}
    if rules_path:
        text = Path(rules_path).read_text(encoding="utf-8")
        doc = json.loads(text) if rules_path.endswith(".json") else yaml.safe_load(text)
        body["rules"] = json.loads(json.dumps(doc, default=str))  # YAML dates become ISO strings
    if registry_at:
        body["registry_at"] = date.fromisoformat(registry_at).isoformat()
    if since:
        t = datetime.fromisoformat(since)
        body["since"] = (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat()
    r = await http.post(f"{base.rstrip('/')}/whatif", json=body)
    if r.status_code != 200:
        return 2, f"what-if failed: {r.status_code} {r.text}"
    report = r.json()
    return (1 if report["changed"] else 0), (json.dumps(report, indent=2) if as_json else table(report))
