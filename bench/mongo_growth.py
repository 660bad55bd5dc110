"""How much MongoDB grows per calibration run and per burn-in, as the code stores them.

No MongoDB server runs on this machine, so this measures what the stores HAND to MongoDB: the documents as
BSON (``bson.encode`` of what lands in the mongomock stand-in) and the GridFS files (their bytes plus 255 KiB
chunking: one ``fs.chunks`` document per chunk, ~60 B each of overhead). A real MongoDB compresses both with
snappy in WiredTiger and adds indexes (``runs``: _id, run, start_ts), so its disk use is somewhat lower for
documents and about the same for ROOT/Parquet files (already compressed).

* calibration run: a 10-module stand (one CROC quad module each, 40 chips), an SCurve run from the simulator
  (ROOT file, summary, per-channel arrays: inline under 1 MB, else GridFS), the conditions snapshots of the
  stand at start and end, and the run's conditions.parquet for a 15-minute window at the quiet regime
  (bench/archive_growth.py), built from rows of the shape trackerdcs.export writes;
* burn-in: the burn-in document (10 steps), 5 IV scans of 10 modules with 40 points each, and its
  conditions.parquet for 24 h at the quiet regime.

    .venv/bin/python bench/mongo_growth.py     -> bench/results/mongo_growth.json
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import bson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from burnin.store import BurninStore, mongo_factory  # noqa: E402
from ph2acf_bridge.store import MongoStore, RunStore  # noqa: E402
from ph2acf_bridge.summary import summarise  # noqa: E402
from ph2acf_sim.detector import example_xml, parse_chips  # noqa: E402
from ph2acf_sim.histograms import write_results  # noqa: E402

from trackerdcs.export import Row, parquet_bytes  # noqa: E402

MODULES = 10
CHUNK = 255 * 1024


def quiet_rows(modules: int, seconds: int, rng: random.Random):
    """What the export of a run window yields at the quiet regime: every series on its 30 s heartbeat."""
    for s in range(0, seconds, 30):
        t = 1_790_000_000_000 + s * 1000
        for m in range(modules):
            tags = f"module=module_{m}"
            for f, v in (("lv_vmon", 10.5), ("lv_imon", 2.1), ("hv_vmon", 300.0), ("hv_imon", 1.5)):
                yield Row(t, "caen_module", tags, f, v + rng.gauss(0, 0.001), None)
            yield Row(t, "caen_module", tags, "state", None, "HV_ON")
            for kind, v in (("lv", 10.5), ("hv", 300.0)):
                ctags = f"channel={kind}_{m},kind={kind},module=module_{m}"
                for f, x in (("vmon", v), ("imon", 1.0), ("v0set", v), ("i0set", 3.0), ("status", 1.0),
                             ("slot", 0.0), ("ch", float(m)), ("on", 1.0)):  # fmt: skip
                    yield Row(
                        t, "caen_channel", ctags, f, x + (rng.gauss(0, 0.001) if f in ("vmon", "imon") else 0), None
                    )
                yield Row(t, "caen_channel", ctags, "state", None, "ON")
        for f in ("bath_temp", "external_temp", "heating_power", "setpoint"):
            yield Row(t, "julabo", "", f, -20 + rng.gauss(0, 0.01), None)
        yield Row(t, "julabo", "", "state", None, "RUNNING")
        for sensor in ("box", "room"):
            for k in range(3):  # sensors every 10 s
                yield Row(
                    t + k * 10_000, "environment", f"sensor={sensor}", "temperature", 21 + rng.gauss(0, 0.1), None
                )
                yield Row(t + k * 10_000, "environment", f"sensor={sensor}", "humidity", 3 + rng.gauss(0, 0.1), None)
        yield Row(t, "interlock", "", "active_count", 0.0, None)
        yield Row(t, "interlock", "", "state", None, "OK")


def gridfs_bytes(db, bucket: str) -> tuple[int, int]:
    files = list(db[f"{bucket}.files"].find())
    data = sum(f["length"] for f in files)
    chunks = db[f"{bucket}.chunks"].count_documents({})
    return data, chunks


def stand_snapshot(modules: int) -> dict:
    channels = {}
    for m in range(modules):
        for kind, v in (("lv", 10.5), ("hv", 300.0)):
            channels[f"{kind}_{m}"] = {
                "state": "ON", "on": True, "vmon": v, "imon": 1.0, "v0set": v, "i0set": 3.0, "status": 1,
                "module": f"module_{m}", "kind": kind, "ts": time.time(),
            }  # fmt: skip
    return {"caen": {"channels": channels}, "julabo": {"bath_temp": -20.0, "state": "RUNNING"},
            "env": {"box": {"temperature": 21.0, "humidity": 3.0}}}  # fmt: skip


def calibration_run(tmp: Path) -> dict:
    rng = random.Random(1)
    ids = parse_chips(example_xml("it", hybrids=MODULES, chips=4))
    path = tmp / "Run000002_SCurve.root"
    write_results(path, "it", "scurve", 2, ids)
    summary = summarise(path)
    cond, rows = parquet_bytes(quiet_rows(MODULES, 15 * 60, rng))
    mongo = MongoStore.from_uri("mongomock://", "growth")
    store = RunStore(tmp / "archive", tmp / "spool", mongo)
    snap = stand_snapshot(MODULES)
    doc = {"uid": "growth-1", "run": 2, "calibration": "scurve", "operator": "op", "outcome": "done",
           "start_ts": time.time() - 900, "stop_ts": time.time(), "modules": [f"module_{m}" for m in range(MODULES)],
           "summary": summary.document(), "conditions": {"start": snap, "end": snap},
           "conditions_file": {"format": "parquet", "rows": rows, "bytes": len(cond)}}  # fmt: skip
    assert store.save(doc, path, summary.channels, cond) == "mongo"
    db = mongo._db()
    stored = db["runs"].find_one({"_id": "growth-1"})
    results = gridfs_bytes(db, "results")
    conditions_without = {k: v for k, v in stored.items() if k != "channels"}
    return {
        "chips": len(ids),
        "document_bson_bytes": len(bson.encode(stored)),
        "of_which_inline_channel_arrays_bytes": len(bson.encode(stored)) - len(bson.encode(conditions_without)),
        "gridfs_files_bytes": results[0],
        "gridfs_chunk_documents": results[1],
        "root_file_bytes": path.stat().st_size,
        "conditions_parquet_bytes": len(cond),
        "conditions_rows": rows,
        "total_bytes": len(bson.encode(stored)) + results[0] + 60 * results[1],
    }


def burnin(tmp: Path) -> dict:
    rng = random.Random(2)
    store = BurninStore(tmp / "b-archive", tmp / "b-spool", mongo_factory("mongomock://"), "growth")
    steps = [{"index": i, "name": f"step {i}", "kind": k, "start": 1000.0 * i, "end": 1000.0 * i + 900,
              "outcome": "done", "detail": "", "tries": 1}
             for i, k in enumerate(["chiller", "lv_on", "iv_scan", "hv_on", "calibration", "wait", "iv_scan",
                                    "chiller", "iv_scan", "off"])]  # fmt: skip
    doc = {"uid": "b-1", "stand": "teststand", "recipe": {"name": "cold-warm", "text": "x" * 2000, "steps": 10},
           "modules": [f"module_{m}" for m in range(MODULES)], "operator": "op", "comment": "", "state": "DONE",
           "abort_reason": None, "steps": steps, "iv_scans": [], "calibrations": [], "ts": time.time(),
           "conditions": {"julabo": {"bath_temp": -20.0}, "env": {}, "interlock": {"state": "OK"}}}  # fmt: skip
    assert store.save("burnins", "b-1", doc, Path("b-1") / "burnin.json") == "mongo"
    iv_bytes = 0
    for n in range(5):
        scan = {"step": n, "ts": time.time(), "stand": "teststand", "bath_temp": -20.0, "modules": {
            f"module_{m}": {"module": f"module_{m}", "outcome": "done", "reason": "", "compliance_ua": 10.0,
                            "points": [{"set_v": -10.0 * k, "vmon": -10.0 * k + rng.gauss(0, 0.1),
                                        "imon": -0.01 * k + rng.gauss(0, 0.001), "ts": time.time(), "t": 5.0 * k,
                                        "temperature": 21.0} for k in range(40)]}
            for m in range(MODULES)}}  # fmt: skip
        store.save_iv_scan(f"b-1/{n}/0", scan, Path("b-1") / "iv" / f"{n:04d}-0.json")
    db = store._db()
    for d in db["iv_scans"].find():
        iv_bytes += len(bson.encode(d))
    cond, rows = parquet_bytes(quiet_rows(MODULES, 24 * 3600, rng))
    assert store.save_file(Path("b-1") / "conditions.parquet", cond) == "mongo"
    files = gridfs_bytes(db, "burnin_files")
    burnin_doc = len(bson.encode(db["burnins"].find_one({"_id": "b-1"})))
    return {
        "burnin_document_bson_bytes": burnin_doc,
        "iv_scans": 5,
        "iv_scan_documents_bson_bytes": iv_bytes,
        "conditions_parquet_bytes_24h": len(cond),
        "conditions_rows_24h": rows,
        "gridfs_chunk_documents": files[1],
        "total_bytes": burnin_doc + iv_bytes + files[0] + 60 * files[1],
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = {
            "machine": f"{os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "mongodb": "mongomock stand-in: BSON and GridFS sizes as handed to MongoDB, not WiredTiger disk use",
            "calibration_run_10_modules": calibration_run(Path(tmp)),
            "burnin_10_modules_24h": burnin(Path(tmp)),
        }
    print(json.dumps(out, indent=1))
    (REPO / "bench" / "results" / "mongo_growth.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
