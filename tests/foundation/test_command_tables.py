"""The command table a service publishes and what "done" means for a long action: pure specifications of
trackerdcs/completion.py, the table document of trackerdcs/commands.py and the parts of ``dcs`` built on them
(argument typing, help, where the subcommand starts). No broker, no process."""

from __future__ import annotations

import argparse
import json

import pytest

from trackerdcs import cli
from trackerdcs.commands import Arg, CommandSpec, describe_table
from trackerdcs.completion import DONE, FAILED, PENDING, Completion, CompletionTracker, timeout_message

pytestmark = pytest.mark.fast

LV_ON = Completion(
    done=("LV_ON", "HV_ON"),
    failed=("TRIPPED", "DISCONNECTED"),
    topic="status/module/{modules}",
    timeout_s=120.0,
    show=("lv_vmon",),
    description="every module named reads LV on",
)
RUN = Completion(done=("done",), failed=("failed", "aborted"), field="last_outcome", match={"last_uid": "uid"})


def table() -> dict:
    specs = [
        CommandSpec("lv_on", lambda a: None, (Arg("modules", list, required=False, item_kind=str, help="names"),),
                    help="LV on", completion=LV_ON),
        CommandSpec("set_setpoint", lambda a: None,
                    (Arg("index", int, minimum=1, maximum=3), Arg("value", float, minimum=-40, maximum=40)),
                    help="write a setpoint"),
        CommandSpec("control_sensor", lambda a: None, (Arg("sensor", str, choices=("internal", "external")),)),
        CommandSpec("start", lambda a: None, (Arg("operator", str), Arg("comment", str, required=False, default="")),
                    completion=RUN),
    ]  # fmt: skip
    return json.loads(json.dumps(describe_table("caen", specs, "1.2.3")))  # as a client receives it


# ---------------------------------------------------------------------------------------------- the table
def test_the_table_carries_every_argument_with_type_range_choices_and_help():
    doc = table()
    assert doc["service"] == doc["root"] == "caen" and doc["version"] == "1.2.3" and doc["schema"] == 1
    by_name = {c["name"]: c for c in doc["commands"]}
    assert list(by_name) == ["control_sensor", "lv_on", "set_setpoint", "start"]  # sorted
    index, value = by_name["set_setpoint"]["args"]
    assert index == {"name": "index", "type": "integer", "items": None, "required": True, "default": None,
                     "minimum": 1, "maximum": 3, "choices": None, "help": ""}  # fmt: skip
    assert value["type"] == "number" and (value["minimum"], value["maximum"]) == (-40, 40)
    assert (
        by_name["lv_on"]["args"][0] | {"type": "list", "items": "string", "required": False, "help": "names"}
        == (by_name["lv_on"]["args"][0])
    )
    assert by_name["control_sensor"]["args"][0]["choices"] == ["internal", "external"]
    assert by_name["set_setpoint"]["completion"] is None  # its reply is its outcome


def test_a_completion_survives_the_round_trip_through_json():
    doc = table()
    lv_on = next(c for c in doc["commands"] if c["name"] == "lv_on")
    assert Completion.from_json(lv_on["completion"]) == LV_ON
    with pytest.raises(ValueError, match="not a completion"):
        Completion.from_json({"topic": "status"})  # no 'done'


# ---------------------------------------------------------------------------------------------- judging
def test_one_topic_per_module_named_in_the_reply_and_one_subscription_for_all():
    assert LV_ON.topics("caen", {"modules": ["module_0", "module_1"]}) == [
        "caen/status/module/module_0",
        "caen/status/module/module_1",
    ]
    assert LV_ON.subscription("caen") == "caen/status/module/+"
    with pytest.raises(ValueError, match="no 'modules'"):
        LV_ON.topics("caen", {"switched": []})


def test_done_only_when_every_module_is_done_and_failed_as_soon_as_one_trips():
    tracker = CompletionTracker(LV_ON, "caen", {"modules": ["m0", "m1"]})
    assert tracker.verdict == PENDING  # nothing seen yet
    tracker.update("caen/status/module/m0", {"state": "LV_ON", "lv_vmon": 8.1})
    tracker.update("caen/status/module/m1", {"state": "LV_RAMP_UP", "lv_vmon": 3.0})
    assert tracker.verdict == PENDING
    assert tracker.describe_state() == "m0 LV_ON lv_vmon=8.1, m1 LV_RAMP_UP lv_vmon=3"
    assert "m1 LV_RAMP_UP" in timeout_message("caen lv_on", tracker, 120) and "m0" not in timeout_message(
        "caen lv_on", tracker, 120
    )
    tracker.update("caen/status/module/m1", {"state": "LV_ON"})
    assert tracker.verdict == DONE
    tracker.update("caen/status/module/m0", {"state": "TRIPPED"})
    assert tracker.verdict == FAILED and tracker.failures() == ["caen/status/module/m0"]
    assert not tracker.update("caen/status/module/m7", {"state": "TRIPPED"})  # not named in the reply


def test_a_run_counts_only_once_the_status_names_the_run_that_was_started():
    tracker = CompletionTracker(RUN, "ph2acf", {"uid": "run-B"})
    tracker.update("ph2acf/status", {"state": "IDLE", "last_uid": "run-A", "last_outcome": "done"})
    assert tracker.verdict == PENDING  # the previous run's outcome is not this one's
    tracker.update("ph2acf/status", {"state": "RUNNING", "uid": "run-B", "last_uid": "run-A", "last_outcome": "done"})
    assert tracker.verdict == PENDING
    tracker.update("ph2acf/status", {"state": "ERROR", "last_uid": "run-B", "last_outcome": "failed"})
    assert tracker.verdict == FAILED


def test_the_caen_module_commands_name_only_states_the_service_publishes():
    from caen_fsm.states import COMPLETIONS, Command, ModuleState

    published = {s.value for s in ModuleState}
    assert set(COMPLETIONS) == set(Command)
    for command, completion in COMPLETIONS.items():
        assert set(completion.done) | set(completion.failed) <= published, command
        assert not set(completion.done) & set(completion.failed)
    assert "LV_ON" in COMPLETIONS[Command.LV_ON].done and "LV_RAMP_UP" not in COMPLETIONS[Command.LV_ON].done
    assert "TRIPPED" in COMPLETIONS[Command.HV_ON].failed


# ---------------------------------------------------------------------------------------------- dcs
def spec(name: str) -> dict:
    return next(c for c in table()["commands"] if c["name"] == name)


def test_values_are_read_as_the_table_types_them():
    start, lv_on = spec("start"), spec("lv_on")
    # a string argument keeps what was typed, even when it looks like a number or JSON
    assert cli.parse_assignments(["operator=42", "comment=true"], "x", "start", start) == {
        "operator": "42",
        "comment": "true",
    }
    assert cli.parse_assignments(["operator=42"], "x", "start") == {"operator": 42}  # without the table
    # a list argument takes one item or [a,b], and a repeated key adds to it
    assert cli.parse_assignments(["modules=module_0"], "caen", "lv_on", lv_on) == {"modules": ["module_0"]}
    assert cli.parse_assignments(["modules=[1,m2]", "modules=m3"], "caen", "lv_on", lv_on) == {
        "modules": ["1", "m2", "m3"]
    }
    assert cli.parse_assignments(["index=2", "value=-25.5"], "julabo", "set_setpoint", spec("set_setpoint")) == {
        "index": 2,
        "value": -25.5,
    }


@pytest.mark.parametrize(
    ("argv", "before", "subcommand", "rest"),
    [
        (["--json", "backup", "--dest", "/b"], ["--json"], "backup", ["--dest", "/b"]),
        (["--host", "h", "--port", "1", "caen", "lv_on"], ["--host", "h", "--port", "1"], "caen", ["lv_on"]),
        (["caen", "lv_on", "--json", "--timeout", "5"], [], "caen", ["lv_on", "--json", "--timeout", "5"]),
        (["--timeout=3", "status"], ["--timeout=3"], "status", []),
        (["--json"], ["--json"], None, []),
    ],
)
def test_global_options_before_the_subcommand_are_told_apart_from_its_own(argv, before, subcommand, rest):
    assert cli.split_argv(argv) == (before, subcommand, rest)


def test_an_option_after_the_subcommand_overrides_the_same_one_before_it_and_absent_ones_keep_theirs():
    top = cli.build_parser().parse_args(["--json", "--timeout", "4", "status"])
    sub = cli.status_parser().parse_args(["--timeout", "7", "--detail"])
    merged = cli.merge(top, sub)
    assert merged.json is True and merged.timeout == 7.0 and merged.detail is True and merged.host is None


def test_after_audit_user_filters_the_trail_and_the_login_goes_before_it():
    top = cli.build_parser().parse_args(["--user", "alice", "audit"])
    merged = cli.merge(top, cli.audit_parser().parse_args(["--user", "bob", "--json"]))
    assert merged.user == "alice" and merged.sent_by == "bob" and merged.json is True


def test_service_help_lists_every_command_with_its_arguments_and_what_wait_waits_for(capsys):
    parser = cli.service_parser("caen", table())
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert "caen/commands, version 1.2.3" in text
    assert "index=INTEGER value=NUMBER write a setpoint" in text
    assert "sensor=internal|external" in text
    assert "--wait: until every module named reads LV on" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["set_setpoint", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "usage: dcs caen set_setpoint index=INTEGER value=NUMBER" in text
    assert "index: required; 1 to 3" in text and "value: required; -40 to 40" in text
    assert "the reply is the outcome: --wait does not apply" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["lv_on", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "modules: optional (default null); names" in text
    assert "status/module/{modules} state in LV_ON, HV_ON; fails at TRIPPED, DISCONNECTED; time limit 120 s" in text


def test_a_command_the_table_does_not_list_is_a_usage_error_before_anything_is_sent(capsys):
    with pytest.raises(cli.UsageError):
        cli.service_parser("caen", table()).parse_args(["format_disk"])
    assert "invalid choice: 'format_disk'" in capsys.readouterr().err


def test_without_a_table_any_command_goes_to_the_service_as_typed():
    ns = cli.service_parser("interlock", None).parse_args(["acknowledge", "operator=me", "--json"])
    assert (ns.command, ns.assignments, ns.json) == ("acknowledge", ["operator=me"], True)
    assert isinstance(ns, argparse.Namespace) and not hasattr(ns, "spec")


def test_a_single_module_is_named_in_the_progress_line():
    tracker = CompletionTracker(LV_ON, "caen", {"modules": ["module_0"]})
    tracker.update("caen/status/module/module_0", {"state": "LV_RAMP_UP"})
    assert tracker.describe_state() == "module_0 LV_RAMP_UP"
