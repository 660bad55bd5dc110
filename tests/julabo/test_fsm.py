"""The chiller state machine: only what the chiller reports moves it."""

from __future__ import annotations

from julabo_fsm.fsm import ChillerFsm, State, Trigger
from julabo_fsm.protocol import parse_status


def line(text: str):
    return parse_status(text.encode() + b"\r\n")


def test_states_follow_status_reports_and_link_loss() -> None:
    changes: list[tuple[State, State]] = []
    fsm = ChillerFsm(lambda a, b: changes.append((a, b)))
    assert fsm.state is State.DISCONNECTED and not fsm.connected
    fsm.observe(line("02 REMOTE STOP"))
    fsm.observe(line("03 REMOTE START"))
    fsm.observe(line("03 REMOTE START"))  # repeated observation: no transition
    fsm.observe(line("-01 LOW LEVEL ALARM"))
    fsm.fire(Trigger.LINK_LOST)
    assert changes == [
        (State.DISCONNECTED, State.STOPPED),
        (State.STOPPED, State.RUNNING),
        (State.RUNNING, State.ALARM),
        (State.ALARM, State.DISCONNECTED),
    ]


def test_a_refused_command_does_not_change_the_state() -> None:
    fsm = ChillerFsm()
    fsm.observe(line("03 REMOTE START"))
    assert not fsm.observe(line("-10 VALUE TOO SMALL"))
    assert fsm.state is State.RUNNING


def test_unintelligible_replies_are_an_error_state_until_a_good_status() -> None:
    fsm = ChillerFsm()
    fsm.observe(line("02 REMOTE STOP"))
    assert fsm.fire(Trigger.SAW_ERROR)
    assert fsm.state is State.ERROR and fsm.connected
    fsm.observe(line("02 REMOTE STOP"))
    assert fsm.state is State.STOPPED
