"""The interlock permit held by caen-fsm itself (pure: fed with messages and clock readings, no I/O).

The interlock (Node-RED, ``dcs-interlock``) publishes a retained status document on ``interlock/status``
(``state`` OK | TRIPPED | ACK_PENDING, ``active`` latched reasons, ``details`` with each reason's ``action``,
``ts``) at every change and at least every heartbeat, and ``online``/``offline`` on ``interlock/availability``.
Power may be switched on, or a voltage raised, only while that status is present, fresh and OK. Anything
else (never heard, offline, stale, unreadable, not OK) withholds the permit: fail-safe.

Reasons whose action includes ``lv_off`` (the chiller reasons) also demand LV off; the others (dew point,
a silent environment sensor) demand HV off.

caen-fsm also follows the chiller's own status (``julabo/status``, ``interlock.chiller_topic``): a fresh status
saying the chiller is not RUNNING (or not connected) demands HV and LV off at once and withholds the permit,
without waiting for the interlock to relay it. This is the fast path of the most common trip, and it holds
when the interlock itself is slow or down. The interlock stays the authority for everything else: latching,
acknowledgement, temperature limits, dew point, a silent chiller (a stale or missing chiller status is left
to it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class PermitState(StrEnum):
    """What caen-fsm knows about the interlock."""

    OK = "OK"  # fresh status, state OK: power-on permitted
    TRIPPED = "TRIPPED"  # reasons latched (as published)
    ACK_PENDING = "ACK_PENDING"  # conditions gone, waiting for an operator acknowledgement (as published)
    MISSING = "MISSING"  # no status received since start
    OFFLINE = "OFFLINE"  # interlock/availability says offline
    STALE = "STALE"  # no status for longer than stale_s
    INVALID = "INVALID"  # a status that cannot be read (not JSON, no state, no ts)
    NOT_REQUIRED = "NOT_REQUIRED"  # interlock.required: false (a bench without interlock)


#: States meaning "the interlock is not heard": what it would say is unknown.
SILENT = frozenset({PermitState.MISSING, PermitState.OFFLINE, PermitState.STALE, PermitState.INVALID})
ON_SILENT_CHOICES = ("hv_off", "alarm")
#: The interlock's name for the reason caen-fsm also sees for itself on the chiller's status.
CHILLER_REASON = "chiller_not_running"


@dataclass(frozen=True)
class InterlockSettings:
    """``interlock:`` of the caen-fsm config."""

    required: bool = True
    status_topic: str = "interlock/status"
    availability_topic: str = "interlock/availability"
    stale_s: float = 90.0  # the interlock republishes at least every 30 s
    on_silent: str = "hv_off"  # what to do when it goes silent while HV is on: hv_off | alarm
    resend_s: float = 5.0  # while the interlock demands off and a channel is still on: switch off again
    chiller_topic: str = "julabo/status"  # the chiller's status, followed directly ("" = only the interlock)


@dataclass(frozen=True)
class PermitView:
    """The permit at one instant."""

    state: PermitState
    reasons: tuple[str, ...] = ()
    lv_reasons: tuple[str, ...] = ()  # latched reasons that demand LV off (chiller)
    detail: str = ""
    chiller_fault: str = ""  # the chiller's own fresh status says it is not running (seen by caen-fsm)

    @property
    def granted(self) -> bool:
        return self.state in (PermitState.OK, PermitState.NOT_REQUIRED) and not self.chiller_fault

    @property
    def silent(self) -> bool:
        return self.state in SILENT

    @property
    def demands_off(self) -> bool:
        """The interlock itself (heard and fresh) has reasons latched, or the chiller says it is not running."""
        return self.state in (PermitState.TRIPPED, PermitState.ACK_PENDING) or bool(self.chiller_fault)

    def refusal(self, what: str) -> str:
        """The operator message for a refused ``what`` (e.g. ``lv_on``)."""
        text = f"{what} refused: interlock {self.state.value}"
        if self.reasons:
            text += f" (latched: {', '.join(self.reasons)})"
        if self.detail:
            text += f"; {self.detail}"
        if self.chiller_fault:
            text += f"; {self.chiller_fault}"
        return text


@dataclass
class Permit:
    """Follows ``interlock/status`` and ``interlock/availability``; :meth:`view` says what is permitted."""

    settings: InterlockSettings = field(default_factory=InterlockSettings)
    _doc: dict[str, Any] | None = None
    _invalid: str | None = None
    _received_mono: float | None = None
    _offline: bool = False
    _chiller: dict[str, Any] | None = None
    _chiller_mono: float | None = None

    def on_chiller(self, payload: bytes, now_mono: float) -> None:
        """A message on the chiller's status topic. Unreadable or deleted: no opinion (the interlock decides)."""
        try:
            doc = json.loads(payload.decode("utf-8")) if payload else None
        except (UnicodeDecodeError, ValueError):
            doc = None
        ts = doc.get("ts") if isinstance(doc, dict) else None
        readable = isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts)
        self._chiller, self._chiller_mono = (doc, now_mono) if readable else (None, None)

    def chiller_fault(self, now_mono: float, now_wall: float) -> str:
        """Why the chiller's own fresh status forbids power ("" when it does not, or says nothing fresh)."""
        doc = self._chiller
        if doc is None or self._chiller_mono is None:
            return ""
        age = _age(doc, self._chiller_mono, now_mono, now_wall)
        if age > self.settings.stale_s:
            return ""
        state = doc.get("state")
        if state == "RUNNING" and doc.get("connected") is not False:
            return ""
        return f"chiller not running ({self.settings.chiller_topic}: state {state}, seen by caen-fsm)"

    def on_status(self, payload: bytes, now_mono: float) -> None:
        """A message on the status topic (retained ones included)."""
        if not payload:  # the retained status was deleted: as if never published
            self._doc, self._invalid, self._received_mono = None, None, None
            return
        self._received_mono = now_mono
        try:
            doc = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            doc = None
        problem = _problem(doc)
        if problem is not None:
            self._doc, self._invalid = None, problem
            return
        self._doc, self._invalid = doc, None

    def on_availability(self, payload: bytes) -> None:
        self._offline = payload.strip() == b"offline"

    def view(self, now_mono: float, now_wall: float) -> PermitView:
        """The permit now (``now_wall``: seconds since the epoch, compared with the status ``ts``)."""
        s = self.settings
        if not s.required:
            return PermitView(PermitState.NOT_REQUIRED, detail="interlock.required is false")
        view = self._interlock_view(now_mono, now_wall)
        fault = self.chiller_fault(now_mono, now_wall)
        if not fault:
            return view
        reasons = view.reasons if CHILLER_REASON in view.reasons else (*view.reasons, CHILLER_REASON)
        lv = view.lv_reasons if CHILLER_REASON in view.lv_reasons else (*view.lv_reasons, CHILLER_REASON)
        return PermitView(view.state, reasons, lv, view.detail, fault)

    def _interlock_view(self, now_mono: float, now_wall: float) -> PermitView:
        s = self.settings
        if self._offline:
            return PermitView(PermitState.OFFLINE, detail=f"{s.availability_topic} is offline")
        if self._received_mono is None:
            return PermitView(PermitState.MISSING, detail=f"no message on {s.status_topic} (is the interlock running?)")
        if self._invalid is not None or self._doc is None:
            return PermitView(PermitState.INVALID, detail=f"{s.status_topic}: {self._invalid}")
        doc = self._doc
        age = _age(doc, self._received_mono, now_mono, now_wall)
        if age > s.stale_s:
            return PermitView(PermitState.STALE, detail=f"last status {age:.0f} s old (limit {s.stale_s:g} s)")
        state = str(doc["state"])
        if state == "OK":
            return PermitView(PermitState.OK)
        reasons = tuple(str(r) for r in doc.get("active") or ())
        lv = tuple(r for r in reasons if _demands_lv_off(r, doc))
        known = state if state in (PermitState.TRIPPED, PermitState.ACK_PENDING) else PermitState.TRIPPED
        detail = "" if known == state else f"unknown interlock state {state!r} taken as TRIPPED"
        return PermitView(PermitState(known), reasons, lv, detail)


def _age(doc: dict[str, Any], received_mono: float, now_mono: float, now_wall: float) -> float:
    """Age of a status document: the older of when it was published (its ``ts``) and when it reached us."""
    return max(now_wall - float(doc["ts"]), now_mono - received_mono, 0.0)


def _problem(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return "not a JSON object"
    if not isinstance(doc.get("state"), str):
        return "no 'state'"
    ts = doc.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return "no numeric 'ts'"
    active = doc.get("active")
    if active is not None and not isinstance(active, list):
        return "'active' is not a list"
    return None


def _demands_lv_off(reason: str, doc: dict[str, Any]) -> bool:
    """Whether a latched reason demands LV off: its published ``action``, else its name (unknown: yes)."""
    for entry in doc.get("details") or ():
        if isinstance(entry, dict) and entry.get("reason") == reason and isinstance(entry.get("action"), str):
            return "lv_off" in entry["action"]
    return not reason.startswith(("dewpoint:", "env_stale:"))
