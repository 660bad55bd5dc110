"""The audit trail on a real Mosquitto with the project's ACL: every command, who sent it, from where, its
arguments and its reply end up in the trail; the broker refuses what an account's role may not send."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trackerdcs import cli
from trackerdcs.audit import AuditBook, AuditRecorder, AuditStore, command_record, parse_since
from trackerdcs.client import CommandFailed, DcsClient, NoReply
from trackerdcs.commands import Arg, CommandError
from trackerdcs.service import Service
from trackerdcs_ops.acl import role_grants

REPO = Path(__file__).resolve().parents[2]
DCS = Path(sys.executable).with_name("dcs")


# ---------------------------------------------------------------- pure specifications


def test_a_command_record_separates_who_and_where_from_the_arguments():
    payload = json.dumps({"id": "x1", "deadline": 9, "by": "alice", "from": "ui 10.0.0.5", "modules": ["M1"]})
    record = command_record("caen/cmd/hv_off", payload.encode(), 100.0)
    assert record == {"ts": 100.0, "service": "caen", "command": "hv_off", "id": "x1", "by": "alice",
                      "from": "ui 10.0.0.5", "args": {"modules": ["M1"]}}  # fmt: skip
    assert command_record("caen/status", b"{}", 1.0) is None
    garbage = command_record("caen/cmd/set", b"\xff{not json", 1.0)
    assert garbage["args"] is None and garbage["by"] is None and "not json" in garbage["unreadable"]


def test_replies_pair_by_id_else_by_name_and_unanswered_commands_expire_without_one():
    book = AuditBook(reply_wait_s=5)
    book.command({"ts": 0.0, "service": "caen", "command": "hv_off", "id": "a"})
    book.command({"ts": 0.0, "service": "caen", "command": "hv_off", "id": None})
    book.command({"ts": 1.0, "service": "julabo", "command": "start", "id": "b"})
    first = book.reply("caen", {"id": None, "command": "hv_off", "ok": False, "error": "bad"}, 2.0)
    assert first["id"] is None and first["reply"] == {"ok": False, "error": "bad", "ts": 2.0}
    second = book.reply("caen", {"id": "a", "command": "hv_off", "ok": True, "result": {"switched": 1}}, 2.5)
    assert second["reply"]["result"] == {"switched": 1}
    assert book.reply("caen", {"id": "zzz", "ok": True}, 3.0) is None  # not ours (sent before we listened)
    assert book.expire(5.5) == []
    assert book.expire(6.5) == [{"ts": 1.0, "service": "julabo", "command": "start", "id": "b", "reply": None}]


def test_since_reads_durations_and_iso_times():
    assert parse_since("30m", 10_000.0) == 10_000.0 - 1800
    assert parse_since("2d", 200_000.0) == 200_000.0 - 172_800
    assert parse_since("2026-12-01T06:00", 0) == parse_since("2026-12-01T06:00:00+00:00", 0)
    with pytest.raises(ValueError, match="30m, 2h, 7d"):
        parse_since("yesterday", 0)


def test_the_store_keeps_one_file_per_day_answers_queries_and_forgets_after_the_retention(tmp_path):
    store = AuditStore(tmp_path, retention_days=30)
    day = 86400.0
    t0 = 1_780_000_000.0
    for i, by in enumerate(["alice", "bob", "alice"]):
        store.append({"ts": t0 + i * day, "service": "caen", "command": "hv_off", "by": by, "reply": None})
    assert len(list(tmp_path.glob("audit-*.jsonl"))) == 3
    assert [r["by"] for r in store.query(t0 + 0.5 * day)] == ["bob", "alice"]
    assert [r["ts"] for r in store.query(t0, by="alice")] == [t0, t0 + 2 * day]
    assert len(store.query(t0, limit=1)) == 1 and store.query(t0, limit=1)[0]["ts"] == t0 + 2 * day
    (tmp_path / f"audit-{time.strftime('%Y-%m-%d', time.gmtime(t0))}.jsonl").open("a").write("{broken\n")
    assert len(store.query(t0)) == 3  # an unreadable line is skipped, not fatal
    removed = store.prune(t0 + 30.5 * day)  # the first day is now more than 30 days old
    assert len(removed) == 1 and len(store.query(0)) == 2


def test_the_acl_file_is_generated_from_the_roles():
    check = subprocess.run([sys.executable, "-m", "trackerdcs_ops.acl", "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert role_grants("*") == ["+/cmd/#"]
    assert "caen/cmd/hv_off" in role_grants(
        json.loads((REPO / "mosquitto/roles.json").read_text())["roles"]["operator"]
    )
    assert "caen/cmd/set" not in role_grants(
        json.loads((REPO / "mosquitto/roles.json").read_text())["roles"]["operator"]
    )


# ---------------------------------------------------------------- on a real Mosquitto


@pytest.fixture
def recorder(broker, tmp_path):
    rec = AuditRecorder(broker.settings("audit", client_id="audit-test"), tmp_path / "audit", reply_wait_s=1.5)
    rec.start()
    assert rec.svc.wait_connected(10)
    time.sleep(0.3)  # the +/cmd/+ and +/reply subscriptions follow the command subscription
    yield rec
    rec.stop()


@pytest.fixture
def crate(broker):
    """A stand-in service on the caen root (the real caen-fsm needs the crate): hv_off, and set with a limit."""
    svc = Service("caen", broker.settings("caen", client_id="audit-test-caen"))
    actions: list[str] = []

    @svc.command("hv_off", Arg("modules", list, required=False, item_kind=str))
    def hv_off(args):
        actions.append("hv_off")
        return {"switched": args["modules"] or ["all"]}

    @svc.command("set", Arg("param", str), Arg("value", float))
    def set_(args):
        if args["value"] > 100:
            raise CommandError(f"{args['param']}={args['value']} above the configured limit 100")
        actions.append("set")

    svc.start()
    assert svc.wait_connected(10)
    yield actions
    svc.stop()


def records(recorder, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = recorder.store.query(0)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    return recorder.store.query(0)


def test_every_kind_of_command_is_in_the_trail_with_its_reply(broker, recorder, crate, operator, monitor):
    operator.command("caen", "hv_off", {"modules": ["M1"]})
    with pytest.raises(CommandFailed):
        operator.command("caen", "set", {"param": "V0Set", "value": 500})
    with pytest.raises(CommandFailed):
        operator.command("caen", "format_disk")
    operator.client.publish("caen/cmd/set", b"{not json", qos=1)
    with pytest.raises(NoReply):
        operator.command("julabo", "start", timeout=0.5)  # nobody answers: recorded without a reply
    trail = records(recorder, 5)
    by_command = {r["command"]: r for r in trail if r.get("args") is not None or r["command"] == "set"}
    hv_off = by_command["hv_off"]
    assert hv_off["by"] == "operator" and hv_off["from"].startswith(Path(sys.argv[0]).name)
    assert hv_off["args"] == {"modules": ["M1"]} and hv_off["reply"]["ok"] is True
    assert hv_off["reply"]["result"] == {"switched": ["M1"]}
    refused = next(r for r in trail if r["command"] == "set" and r.get("args"))
    assert (
        refused["args"] == {"param": "V0Set", "value": 500}
        and "above the configured limit" in refused["reply"]["error"]
    )
    assert "unknown command" in next(r for r in trail if r["command"] == "format_disk")["reply"]["error"]
    assert "malformed JSON" in next(r for r in trail if r.get("unreadable"))["reply"]["error"]
    assert next(r for r in trail if r["service"] == "julabo")["reply"] is None
    assert crate == ["hv_off"]
    # the last ones, newest first, retained for the operator UI
    recent = json.loads(
        monitor.wait_for("audit/recent", lambda m: len(json.loads(m.payload)["records"]) >= 5, 5).payload
    )
    assert recent["records"][0]["service"] == "julabo" and recent["records"][0]["ok"] is None
    # and queryable with dcs audit
    out = cli_output(broker, ["audit", "--since", "10m", "--service", "caen", "--json"])
    assert {r["command"] for r in json.loads(out)} == {"hv_off", "set", "format_disk"}
    text = cli_output(broker, ["audit", "--since", "10m", "--user", "operator"])
    assert "caen/hv_off" in text and "-> ok" in text and "refused: " in text and "NO REPLY" in text


def cli_output(broker, args, user="operator"):
    """``dcs ARGS`` as ``user``; its standard output (it must exit 0)."""
    env = {**os.environ, **broker.env(user)}
    env.pop("DCS_CONFIG", None)
    proc = subprocess.run([str(DCS), *args], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == cli.EXIT_OK, proc.stderr
    return proc.stdout


def test_a_viewer_is_refused_by_the_broker_and_may_still_read_the_trail(broker, recorder, crate):
    with DcsClient(broker.settings("viewer")) as viewer, pytest.raises(NoReply):
        viewer.command("caen", "hv_off", timeout=1.0)  # dropped by the broker: no service ever sees it
    assert crate == [] and recorder.store.query(0) == []
    assert "no commands recorded" in cli_output(broker, ["audit", "--since", "1h"], user="viewer")


def test_a_shifter_may_switch_power_but_not_write_settings(broker, recorder, crate):
    with DcsClient(broker.settings("shifter")) as shifter:
        shifter.command("caen", "hv_off")
        with pytest.raises(NoReply):
            shifter.command("caen", "set", {"param": "V0Set", "value": 1}, timeout=1.0)
    assert crate == ["hv_off"]
    trail = records(recorder, 1)
    assert [(r["command"], r["by"], r["reply"]["ok"]) for r in trail] == [("hv_off", "shifter", True)]


def test_burn_in_skips_are_in_the_trail(broker, recorder, operator, tmp_path):
    from burnin.app import BurninApp
    from burnin.settings import parse_settings

    settings = parse_settings(
        {
            "modules": {"module_0": {"hv_limit_v": 800}},
            "state_dir": str(tmp_path / "state"),
            "archive_dir": str(tmp_path / "archive"),
            "spool_dir": str(tmp_path / "spool"),
            "recipes_dir": str(REPO / "services/burnin/recipes"),
            "mongo": {"uri": "mongomock://stand-in"},
        }
    )
    app = BurninApp(settings, broker.settings("burnin", client_id="audit-test-burnin"))
    app.start()
    try:
        assert app.svc.wait_connected(10)
        with pytest.raises(CommandFailed):
            operator.command("burnin", "skip", {"operator": "alice"})  # nothing running: refused, still recorded
    finally:
        app.stop()
    skip = next(r for r in records(recorder, 1) if r["command"] == "skip")
    assert skip["service"] == "burnin" and skip["by"] == "operator" and skip["args"] == {"operator": "alice"}
    assert skip["reply"]["ok"] is False and skip["reply"]["error"]
