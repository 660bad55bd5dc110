"""Burn-in documents: archived first, then MongoDB (mongomock here: no MongoDB server on this machine), spooled
while MongoDB is away and uploaded when it answers again."""

from __future__ import annotations

import json

import mongomock

from burnin.store import BurninStore


class Unreachable:
    def __getitem__(self, name):
        raise ConnectionError("MongoDB unreachable (test)")


def test_documents_wait_in_the_spool_while_mongodb_is_away_then_go_up(tmp_path):
    state = {"client": Unreachable()}
    store = BurninStore(tmp_path / "archive", tmp_path / "spool", lambda: state["client"])
    doc = {"uid": "b-1", "state": "RUNNING"}
    assert store.save("burnins", "b-1", doc, tmp_path / "archive" / "b-1" / "burnin.json") == "spooled"
    assert json.loads((tmp_path / "archive" / "b-1" / "burnin.json").read_text()) == doc  # archived anyway
    assert store.spooled() == 1 and store.mongo_ok is False
    assert store.replay() == 0 and store.spooled() == 1
    real = mongomock.MongoClient()
    store._client, state["client"] = None, real
    assert store.replay() == 1 and store.spooled() == 0 and store.mongo_ok
    assert real["trackerdcs"]["burnins"].find_one({"_id": "b-1"})["state"] == "RUNNING"
    # an upsert: saving again replaces, never duplicates
    assert (
        store.save("burnins", "b-1", {**doc, "state": "DONE"}, tmp_path / "archive" / "b-1" / "burnin.json") == "mongo"
    )
    assert real["trackerdcs"]["burnins"].count_documents({}) == 1


def test_iv_scans_of_a_module_are_found_newest_first(tmp_path):
    store = BurninStore(tmp_path / "archive", tmp_path / "spool", None)
    for n, ts in enumerate((100.0, 200.0)):
        scan = {"burnin": "b-1", "step": n, "ts": ts, "modules": {"m0": {"outcome": "done", "points": [{"set_v": 0}]}}}
        assert store.save("iv_scans", f"b-1/{n}", scan, tmp_path / "archive" / "b-1" / "iv" / f"{n}.json") == "archive"
    found = store.iv_scans("m0", limit=5)
    assert [f["ts"] for f in found] == [200.0, 100.0] and found[0]["points"] == [{"set_v": 0}]
    assert store.iv_scans("m9") == []
