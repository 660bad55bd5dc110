"""Decide when a status snapshot is worth publishing again (deadbands and heartbeat), free of I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Deadband:
    """A numeric field changes "enough" when it moves by more than ``absolute`` **and** more than
    ``relative`` times its last published magnitude. Zeros disable either half."""

    absolute: float = 0.0
    relative: float = 0.0

    def exceeded(self, old: float, new: float) -> bool:
        """True when ``new`` differs from ``old`` by more than this deadband."""
        if math.isnan(old) or math.isnan(new):
            return not (math.isnan(old) and math.isnan(new))
        delta = abs(new - old)
        if delta == 0:
            return False
        return delta > self.absolute and delta > self.relative * abs(old)


@dataclass
class SnapshotFilter:
    """Remembers the last published snapshot of one topic and says whether a new one must go out.

    A snapshot is published when a non-numeric field changes, a field appears or disappears, a numeric
    field moves beyond its deadband, or ``heartbeat_s`` has passed since the last publication. Fields
    listed in ``ignore`` (e.g. ``ts``) never trigger a publication on their own.
    """

    deadbands: Mapping[str, Deadband] = field(default_factory=dict)
    default: Deadband = field(default_factory=Deadband)
    heartbeat_s: float = 30.0
    ignore: frozenset[str] = frozenset({"ts"})
    _last: dict[str, Any] | None = None
    _last_time: float = -math.inf

    def should_publish(self, snapshot: Mapping[str, Any], now: float) -> bool:
        """Return True if ``snapshot`` must be published at monotonic time ``now``."""
        if self._last is None or now - self._last_time >= self.heartbeat_s:
            return True
        return self.changed(self._last, snapshot)

    def heartbeat_due(self, now: float) -> bool:
        """True when nothing went out for ``heartbeat_s`` (or the last publication was forgotten)."""
        return self._last is None or now - self._last_time >= self.heartbeat_s

    def changed(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        """True when ``new`` differs from ``old`` by more than the deadbands allow."""
        keys = (set(old) | set(new)) - self.ignore
        for key in keys:
            if key not in old or key not in new:
                return True
            a, b = old[key], new[key]
            if _is_number(a) and _is_number(b):
                if self.deadbands.get(key, self.default).exceeded(float(a), float(b)):
                    return True
            elif a != b:
                return True
        return False

    def mark_published(self, snapshot: Mapping[str, Any], now: float) -> None:
        """Record that ``snapshot`` went out at ``now``."""
        self._last = dict(snapshot)
        self._last_time = now

    def forget(self) -> None:
        """Forget the last publication, so the next snapshot goes out whatever it holds."""
        self._last = None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
