"""When a status snapshot is published again: deadbands and heartbeat (pure, no I/O)."""

from __future__ import annotations

from trackerdcs.deadband import Deadband, SnapshotFilter


def test_first_snapshot_is_always_published():
    f = SnapshotFilter()
    assert f.should_publish({"state": "OFF"}, now=0.0)


def test_noise_inside_the_deadband_is_not_published_but_a_real_change_is():
    f = SnapshotFilter(deadbands={"vmon": Deadband(absolute=0.5, relative=0.01)}, heartbeat_s=30)
    f.mark_published({"state": "ON", "vmon": 250.0}, now=0.0)
    assert not f.should_publish({"state": "ON", "vmon": 250.4}, now=1.0)
    assert not f.should_publish({"state": "ON", "vmon": 252.4}, now=1.0)  # 2.4 V < 1 % of 250 V
    assert f.should_publish({"state": "ON", "vmon": 253.0}, now=1.0)


def test_state_changes_always_go_out_whatever_the_deadbands():
    f = SnapshotFilter(default=Deadband(absolute=1e9))
    f.mark_published({"state": "ON", "vmon": 1.0}, now=0.0)
    assert f.should_publish({"state": "TRIPPED", "vmon": 1.0}, now=0.1)


def test_heartbeat_republishes_an_unchanged_snapshot():
    f = SnapshotFilter(heartbeat_s=10)
    f.mark_published({"state": "ON"}, now=0.0)
    assert not f.should_publish({"state": "ON"}, now=9.9)
    assert f.should_publish({"state": "ON"}, now=10.0)


def test_timestamps_alone_do_not_trigger_a_publication():
    f = SnapshotFilter()
    f.mark_published({"state": "ON", "ts": 1.0}, now=0.0)
    assert not f.should_publish({"state": "ON", "ts": 2.0}, now=1.0)


def test_a_reading_that_appears_or_becomes_unavailable_is_published():
    f = SnapshotFilter(default=Deadband(absolute=100))
    f.mark_published({"temp": 20.0}, now=0.0)
    assert f.should_publish({"temp": 20.0, "ext": 1.0}, now=1.0)
    assert f.should_publish({"temp": float("nan")}, now=1.0)


def test_heartbeat_due_only_counts_time_since_the_last_publication():
    f = SnapshotFilter(heartbeat_s=10)
    assert f.heartbeat_due(now=0.0)  # never published
    f.mark_published({"state": "ON"}, now=0.0)
    assert not f.heartbeat_due(now=9.9)
    assert f.heartbeat_due(now=10.0)
    f.forget()
    assert f.heartbeat_due(now=0.1)
