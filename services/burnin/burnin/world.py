"""What the sequencer knows of the stand at one instant, and what it asks the adapter to do (pure data).

The adapter builds a :class:`World` from the retained MQTT status it received (ages computed on the wall
clock: a reading never looks newer than it is) and carries out the :class:`Command` objects the engine
returns. Nothing here does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Source:
    """One retained status document as last received."""

    doc: Mapping[str, Any] | None = None
    age_s: float = math.inf  #: wall-clock seconds since the document's own ``ts``
    at: float = -math.inf  #: engine-clock time the document was received
    stamped: float | None = None  #: engine-clock time of the document's own ``ts`` (None: unknown, use ``at``)

    @property
    def when(self) -> float:
        """Engine-clock time the reading was taken: its own time stamp where known, else its arrival."""
        return self.stamped if self.stamped is not None else self.at

    def fresh(self, stale_s: float) -> bool:
        return self.doc is not None and self.age_s <= stale_s

    def get(self, key: str, default: Any = None) -> Any:
        return self.doc.get(key, default) if self.doc is not None else default


@dataclass(frozen=True)
class World:
    """A snapshot of everything the gates look at."""

    online: Mapping[str, bool] = field(default_factory=dict)  #: service -> availability "online"
    caen: Source = Source()
    modules: Mapping[str, Source] = field(default_factory=dict)  #: caen/status/module/<m>
    julabo: Source = Source()
    ph2acf: Source = Source()
    interlock: Source = Source()
    env: Mapping[str, Source] = field(default_factory=dict)  #: env/<sensor>

    def module_state(self, module: str) -> str | None:
        src = self.modules.get(module)
        return src.get("state") if src else None


@dataclass(frozen=True)
class Command:
    """A command for another service. ``key`` lets a step find the reply to its own command."""

    service: str  #: "caen", "julabo", "ph2acf" (the adapter maps it to the configured root)
    name: str
    args: Mapping[str, Any]
    key: str = ""


@dataclass(frozen=True)
class Reply:
    ok: bool
    error: str | None = None
    result: Mapping[str, Any] | None = None


def dew_point(temperature: float, humidity: float) -> float:
    """Magnus formula (a = 17.62, b = 243.12 degC), the one the Node-RED interlock uses."""
    if humidity <= 0:
        return -math.inf
    a, b = 17.62, 243.12
    gamma = math.log(min(humidity, 100.0) / 100.0) + a * temperature / (b + temperature)
    return b * gamma / (a - gamma)
