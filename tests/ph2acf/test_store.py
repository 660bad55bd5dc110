"""Run documents: archived on disk always, in MongoDB + GridFS when it is up, spooled and replayed when not."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gridfs
import numpy as np
from ph2acf_bridge.store import MongoStore, RunStore, npz_to_channels

from .conftest import unreachable_mongo


def doc(uid: str, run: int, **extra: Any) -> dict[str, Any]:
    return {"uid": uid, "run": run, "calibration": "scurve", "operator": "alice", "outcome": "done",
            "start_ts": time.time(), "stop_ts": time.time() + 1, "summary": {"totals": {"chips": 1, "dead": 2}},
            **extra}  # fmt: skip


def root_file(tmp_path: Path, name: str = "Run000001_SCurve.root", size: int = 5000) -> Path:
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * (size // 256))
    return path


def small_channels() -> dict[str, dict[str, np.ndarray]]:
    return {"B0_O0_H0_C0": {"noise": np.array([40.0, 41.5], dtype=np.float32), "dead": np.array([3], dtype=np.int32)}}


def test_run_goes_to_mongodb_with_the_root_file_in_gridfs(tmp_path: Path, mongo: MongoStore) -> None:
    store = RunStore(tmp_path / "archive", tmp_path / "spool", mongo)
    source = root_file(tmp_path)
    assert store.save(doc("u1", 1), source, small_channels()) == "mongo"
    stored = mongo._db()["runs"].find_one({"_id": "u1"})
    assert stored["run"] == 1 and stored["operator"] == "alice"
    assert stored["channels"]["B0_O0_H0_C0"]["noise"] == [40.0, 41.5]  # small arrays are inlined
    assert mongo.read_file(stored["result_file"]["gridfs_id"]) == source.read_bytes()
    assert store.mongo_ok and store.spooled() == []
    assert (tmp_path / "archive" / "u1" / "run.json").exists()  # the archive always has it too


def test_large_per_channel_arrays_go_to_gridfs(tmp_path: Path, mongo: MongoStore) -> None:
    store = RunStore(tmp_path / "archive", tmp_path / "spool", mongo)
    rng = np.random.default_rng(1)
    big = {"B0_O0_H0_C0": {"noise": rng.normal(40, 4, 145_152).astype(np.float32)}}
    store.save(doc("u2", 2), None, big)
    stored = mongo._db()["runs"].find_one({"_id": "u2"})
    assert stored["channels"]["format"] == "npz"
    back = npz_to_channels(mongo.read_file(stored["channels"]["gridfs_id"]))
    np.testing.assert_array_equal(back["B0_O0_H0_C0"]["noise"], big["B0_O0_H0_C0"]["noise"])


def test_outage_spools_the_run_and_replay_uploads_it_once_mongodb_returns(tmp_path: Path, mongo: MongoStore) -> None:
    down = unreachable_mongo()
    store = RunStore(tmp_path / "archive", tmp_path / "spool", down)
    source = root_file(tmp_path)
    t0 = time.monotonic()
    assert store.save(doc("u3", 3), source, small_channels()) == "spooled"
    assert time.monotonic() - t0 < 5
    assert store.spooled() == ["u3"] and not store.mongo_ok
    uploaded, error = store.replay()  # still down: nothing uploaded, the reason is given
    assert uploaded == 0 and error is not None and "MongoDB upload failed" in error
    assert store.runs()[0]["stored"] == "spool"
    source.unlink()  # the Ph2_ACF results folder may be cleaned: the archive copy is what gets uploaded
    down.replace_client_factory(mongo.client_factory)  # MongoDB is back
    down.database = mongo.database
    assert store.replay() == (1, None)
    assert store.spooled() == [] and store.mongo_ok
    stored = mongo._db()["runs"].find_one({"_id": "u3"})
    assert stored["run"] == 3
    assert len(mongo.read_file(stored["result_file"]["gridfs_id"])) == 5000 - 5000 % 256
    assert store.replay() == (0, None)


def test_replaying_a_run_twice_keeps_one_document_and_one_file(tmp_path: Path, mongo: MongoStore) -> None:
    store = RunStore(tmp_path / "archive", tmp_path / "spool", mongo)
    source = root_file(tmp_path)
    store.save(doc("u4", 4), source, None)
    mongo.upload(doc("u4", 4, comment="again"), source, None)  # a replay after a partial upload
    db = mongo._db()
    assert db["runs"].count_documents({"run": 4}) == 1
    assert len(list(gridfs.GridFS(db, collection="results").find({"metadata.run": 4}))) == 1


def test_without_mongodb_runs_are_kept_in_the_archive_and_listed(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "archive", tmp_path / "spool", None)
    assert store.save(doc("a", 10), root_file(tmp_path), small_channels()) == "archive"
    store.save(doc("b", 11), None, None)
    assert [r["run"] for r in store.runs()] == [11, 10]
    assert store.spooled() == []
    again = RunStore(tmp_path / "archive", tmp_path / "spool", None)  # after a restart
    shown = again.show(10)
    assert shown is not None and shown["stored"] == "archive" and shown["summary"]["totals"]["dead"] == 2
    assert again.show(99) is None


def test_runs_merges_mongodb_and_local_archive(tmp_path: Path, mongo: MongoStore) -> None:
    other = RunStore(tmp_path / "elsewhere", tmp_path / "spool2", mongo)
    other.save(doc("old", 1), None, None)  # stored by another bridge installation
    store = RunStore(tmp_path / "archive", tmp_path / "spool", mongo)
    store.save(doc("new", 2), None, None)
    listing = store.runs(10)
    assert [(r["run"], r["stored"]) for r in listing] == [(2, "mongo"), (1, "mongo")]
    shown = store.show(1)
    assert shown is not None and shown["stored"] == "mongo" and "channels" not in shown
