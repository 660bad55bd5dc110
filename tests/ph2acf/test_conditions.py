"""What a run document records as the stand's conditions: the newest status of every device, by device, taken at
run start and end from what the bridge heard on MQTT."""

from __future__ import annotations

import json

from ph2acf_bridge.conditions import ConditionsCache


def feed(cache: ConditionsCache, topic: str, doc: object) -> None:
    cache.update(topic, json.dumps(doc).encode())


def test_a_snapshot_sorts_the_newest_readings_by_device() -> None:
    cache = ConditionsCache()
    feed(cache, "caen/status", {"state": "HV_ON"})
    feed(cache, "caen/status/module/M1", {"state": "LV_ON"})
    feed(cache, "caen/status/module/M1", {"state": "HV_ON"})  # newer: replaces
    feed(cache, "caen/status/channel/M1_hv", {"vmon": -300.1})
    feed(cache, "julabo/status", {"bath_temp": -20.0})
    feed(cache, "env/box.1", {"humidity": 3.0})
    feed(cache, "interlock/status", {"state": "OK"})
    snap = cache.snapshot()
    assert snap["caen"] == {
        "system": {"state": "HV_ON"},
        "modules": {"M1": {"state": "HV_ON"}},
        "channels": {"M1_hv": {"vmon": -300.1}},
    }
    assert snap["julabo"] == {"bath_temp": -20.0} and snap["interlock"] == {"state": "OK"}
    assert snap["env"] == {"box_1": {"humidity": 3.0}}  # no dots in MongoDB field names
    assert snap["taken_ts"] > 0


def test_a_cleared_topic_leaves_the_snapshot_and_garbage_never_enters_it() -> None:
    cache = ConditionsCache()
    feed(cache, "caen/status/module/M1", {"state": "OFF"})
    cache.update("caen/status/module/M1", b"")  # retained status cleared: the module is gone
    cache.update("caen/status/module/M2", b"{not json")
    feed(cache, "caen/status/module/M3", [1, 2])  # JSON, but not an object
    cache.update("julabo/status", b"\xff\xfe")
    snap = cache.snapshot()
    assert snap["caen"]["modules"] == {} and snap["julabo"] is None


def test_the_interlock_state_is_what_node_red_last_said_and_none_before() -> None:
    cache = ConditionsCache()
    assert cache.interlock_state() is None
    feed(cache, "interlock/status", {"state": "TRIPPED"})
    assert cache.interlock_state() == "TRIPPED"
    cache.update("interlock/status", b"garbage")
    assert cache.interlock_state() is None


def test_snapshots_are_independent_of_later_messages() -> None:
    cache = ConditionsCache()
    feed(cache, "julabo/status", {"bath_temp": 20.0})
    first = cache.snapshot()
    feed(cache, "julabo/status", {"bath_temp": -30.0})
    first["julabo"]["bath_temp"] = 99.0
    assert cache.snapshot()["julabo"] == {"bath_temp": -30.0}
