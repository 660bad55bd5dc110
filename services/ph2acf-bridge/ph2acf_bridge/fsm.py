"""The bridge's run state machine (``transitions``), hierarchy flat: one run at a time.

::

    IDLE/ERROR --start--> STARTING --launched--> RUNNING --ended--> STORING --stored--> IDLE
                                          \\                                  \\--stored_failed--> ERROR
    STARTING/RUNNING --abort--> ABORTING --ended--> STORING
    STARTING --ended--> STORING   (launch failed: the run is still recorded, outcome "failed")

ERROR means "the last run failed"; a new start is allowed from it. ``fail`` (any state --> ERROR) is the
bridge's own error during a run: it never stays stuck in an active state.
"""

from __future__ import annotations

import threading
from enum import StrEnum

from transitions import Machine


class RunState(StrEnum):
    IDLE = "IDLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    ABORTING = "ABORTING"
    STORING = "STORING"
    ERROR = "ERROR"


class Trigger(StrEnum):
    START = "start"
    LAUNCHED = "launched"
    ABORT = "abort"
    ENDED = "ended"
    STORED = "stored"
    STORED_FAILED = "stored_failed"
    FAIL = "fail"


ACTIVE = frozenset({RunState.STARTING, RunState.RUNNING, RunState.ABORTING, RunState.STORING})

TRANSITIONS = [
    {"trigger": Trigger.START.value, "source": [RunState.IDLE, RunState.ERROR], "dest": RunState.STARTING},
    {"trigger": Trigger.LAUNCHED.value, "source": RunState.STARTING, "dest": RunState.RUNNING},
    {"trigger": Trigger.ABORT.value, "source": [RunState.STARTING, RunState.RUNNING], "dest": RunState.ABORTING},
    {
        "trigger": Trigger.ENDED.value,
        "source": [RunState.STARTING, RunState.RUNNING, RunState.ABORTING],
        "dest": RunState.STORING,
    },
    {"trigger": Trigger.STORED.value, "source": RunState.STORING, "dest": RunState.IDLE},
    {"trigger": Trigger.STORED_FAILED.value, "source": RunState.STORING, "dest": RunState.ERROR},
    {"trigger": Trigger.FAIL.value, "source": "*", "dest": RunState.ERROR},
]


class RunMachine:
    """Thread-safe wrapper: ``fire(trigger)`` returns False (instead of raising) if not allowed now."""

    state: RunState  # set by the machine (``initial``), changed only by triggers

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._machine = Machine(
            model=self,
            states=list(RunState),
            transitions=TRANSITIONS,
            initial=RunState.IDLE,
            auto_transitions=False,
            ignore_invalid_triggers=False,
            model_attribute="state",
        )

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def can(self, trigger: Trigger) -> bool:
        with self._lock:
            return bool(
                self._machine.get_triggers(self.state) and trigger.value in self._machine.get_triggers(self.state)
            )

    def fire(self, trigger: Trigger) -> bool:
        with self._lock:
            if not self.can(trigger):
                return False
            getattr(self, trigger.value)()
            return True

    @property
    def active(self) -> bool:
        return RunState(self.state) in ACTIVE
