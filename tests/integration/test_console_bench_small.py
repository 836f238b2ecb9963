"""The console's page bench in miniature: it runs and reports every page (no speed is asserted: the machine
is shared; `python -m tests.bench.console_pages --cases 100000` is the 200 ms check)."""

from __future__ import annotations

from tests.bench import console_pages


async def test_the_console_page_bench_reports_every_page(tmp_path, redis_url):
    report = await console_pages.measure(cases=3000, repeat=2, workdir=tmp_path)
    pages = report["pages"]
    assert len(pages) == 14 and all(v["median_ms"] > 0 for v in pages.values())
    assert pages["operator /cases"]["status"] == 200 and pages["operator /cases"]["rows"] == 50
    assert pages["operator /cases (second page)"]["rows"] == 50
    assert pages["operator /cases?q=<reference prefix>"]["rows"] >= 1
    # the Member State sees only its own: the case of another state is not found
    assert {pages["member-state-DK /cases/<id>"]["status"], pages["operator /cases/<id>"]["status"]} <= {200, 404}
    assert pages["operator /cases/<id>"]["status"] == 200
