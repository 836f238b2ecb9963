"""`python -m tests.bench.batchcost --instructions` reads callgrind's dumps: one per timed loop, main thread only."""

from __future__ import annotations

from pathlib import Path

from tests.bench.batchcost import read_dumps


def _dump(path: Path, label: str | None, total: int) -> None:
    trigger = f"dump {label}" if label else "Program termination"
    path.write_text(f"# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 7\ncmd: python\npart: 1\n\n"
                    f"desc: I1 cache:\ndesc: Timerange: Basic block 0 - 1\ndesc: Trigger: {trigger}\n\n"
                    f"positions: line\nevents: Ir\nsummary: {total}\n\nfn=(1) main\n0 {total}\n\ntotals: {total}\n")


def test_instructions_per_batch_come_from_the_labelled_main_thread_dumps(tmp_path: Path) -> None:
    _dump(tmp_path / "cg.7.1-01", "applications.loan-requested size=1 rounds=30", 156_000_000)
    _dump(tmp_path / "cg.7.2-01", "applications.loan-requested size=50 rounds=5", 283_000_000)
    _dump(tmp_path / "cg.7.1-02", "applications.loan-requested size=1 rounds=30", 999_000_000)  # the checkpointer
    _dump(tmp_path / "cg.7-01", None, 0)  # the dump at exit: nothing was instrumented after the last loop
    assert read_dumps(tmp_path) == {"applications.loan-requested": {1: 5.2, 50: 56.6}}
