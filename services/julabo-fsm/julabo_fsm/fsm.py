"""The service's view of the chiller as a state machine (``transitions``), free of I/O.

States (published as ``julabo/status`` ``state``)::

    DISCONNECTED ── link up, STATUS read ──► STOPPED ◄──► RUNNING
          ▲                                   │  ▲          │
          │ link lost (from any state)        ▼  │          ▼
          └──────────────────────────────  ALARM (negative STATUS code, device fault)
                                            ERROR (device answers, but unintelligibly)

The machine is driven by observations, never by commands: a command only counts once the chiller's
STATUS confirms it. Command errors (STATUS -08 … -13, a refused value) do not change the state.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from transitions import Machine

from .protocol import StatusCategory, StatusReport


class State(enum.StrEnum):
    DISCONNECTED = "DISCONNECTED"
    STOPPED = "STOPPED"
    RUNNING = "RUNNING"
    ALARM = "ALARM"
    ERROR = "ERROR"


class Trigger(enum.StrEnum):
    """Observations that move the machine."""

    LINK_LOST = "link_lost"
    SAW_STOPPED = "saw_stopped"
    SAW_RUNNING = "saw_running"
    SAW_ALARM = "saw_alarm"
    SAW_ERROR = "saw_error"


CONNECTED_STATES = (State.STOPPED, State.RUNNING, State.ALARM, State.ERROR)

_DESTINATION = {
    Trigger.LINK_LOST: State.DISCONNECTED,
    Trigger.SAW_STOPPED: State.STOPPED,
    Trigger.SAW_RUNNING: State.RUNNING,
    Trigger.SAW_ALARM: State.ALARM,
    Trigger.SAW_ERROR: State.ERROR,
}


def trigger_for(report: StatusReport) -> Trigger | None:
    """The observation a STATUS line amounts to; None for a command error (state unchanged)."""
    return {
        StatusCategory.STOPPED: Trigger.SAW_STOPPED,
        StatusCategory.RUNNING: Trigger.SAW_RUNNING,
        StatusCategory.ALARM: Trigger.SAW_ALARM,
    }.get(report.category)


class ChillerFsm:
    """Current state plus a callback ``on_change(old, new)`` for every real transition."""

    state: State  # set by the machine (``initial``), changed only by triggers

    def __init__(self, on_change: Callable[[State, State], None] | None = None) -> None:
        self.on_change = on_change
        self.machine = Machine(
            model=self,
            states=list(State),
            initial=State.DISCONNECTED,
            auto_transitions=False,
            ignore_invalid_triggers=True,
            model_attribute="state",
        )
        for trigger, dest in _DESTINATION.items():
            sources = [s for s in State if s is not dest]  # a repeated observation is no transition
            self.machine.add_transition(trigger.value, sources, dest, after=self._changed)
        self._previous: State = State.DISCONNECTED

    def _changed(self) -> None:
        old, self._previous = self._previous, State(self.state)
        if self.on_change is not None and old is not self.state:
            self.on_change(old, State(self.state))

    def fire(self, trigger: Trigger) -> bool:
        """Apply an observation; True if the state changed."""
        before = self.state
        if _DESTINATION[trigger] is before:
            return False  # a repeated observation is no transition (and no "can't trigger" log line)
        self.trigger(trigger.value)
        return self.state is not before

    def observe(self, report: StatusReport) -> bool:
        """Apply a STATUS line; True if the state changed."""
        trigger = trigger_for(report)
        return False if trigger is None else self.fire(trigger)

    @property
    def connected(self) -> bool:
        return self.state in CONNECTED_STATES
