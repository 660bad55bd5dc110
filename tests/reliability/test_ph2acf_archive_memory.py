"""Found by the 10-minute soak: ph2acf-bridge grew by ~4.5 MB per calibration run (105 -> 200 MB in 30 runs)
because the run archive kept every whole run document in memory, each with the conditions snapshot of the
whole stand (1,000 CAEN channels, twice). The archive now keeps only what it needs to list and find runs."""

from __future__ import annotations

import gc
import time
import tracemalloc

from ph2acf_bridge.store import RunStore


def run_document(i: int) -> dict:
    channels = {f"M{c:04d}_lv": {"state": "ON", "vmon": 12.0 + c / 1000, "imon": 1.5, "ts": time.time()}
                for c in range(1000)}  # fmt: skip
    conditions = {"start": {"caen": {"channels": channels}}, "end": {"caen": {"channels": channels}}}
    return {"uid": f"stand-{i:04d}", "run": i, "calibration": "pixelalive", "operator": "soak", "outcome": "done",
            "start_ts": 1000.0 + i, "stop_ts": 1010.0 + i, "modules": [], "summary": {"totals": {"chips": 4}},
            "conditions": conditions}  # fmt: skip


def test_archiving_many_runs_does_not_pile_up_their_documents_in_memory(tmp_path):
    store = RunStore(tmp_path / "archive", tmp_path / "spool", None)
    store.save(run_document(0), None, None)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(1, 21):
        store.save(run_document(i), None, None)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 500_000, f"{grown / 1e6:.1f} MB kept for 20 runs"
    shown = store.show(7)  # the whole document is still there, read from the archive
    assert len(shown["conditions"]["end"]["caen"]["channels"]) == 1000 and shown["stored"] == "archive"
    assert [r["run"] for r in store.runs(3)] == [20, 19, 18] and store.runs(1)[0]["chips"] == 4
    assert RunStore(tmp_path / "archive", tmp_path / "spool", None).show(20)["uid"] == "stand-0020"  # after restart
