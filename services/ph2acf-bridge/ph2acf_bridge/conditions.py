"""The latest DCS readings seen on MQTT, snapshotted into run documents at start and end (pure, no I/O).

The bridge subscribes (as MQTT user ``ph2acf``) to the CAEN, Julabo, environment and interlock status topics
and feeds every message to :meth:`ConditionsCache.update`. :meth:`ConditionsCache.snapshot` returns::

    {"taken_ts": ..., "caen": {"system": {...}, "modules": {"M1": {...}}, "channels": {"HV0": {...}}},
     "julabo": {...} | None, "env": {"sensor": {...}}, "interlock": {...} | None}
"""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

DEFAULT_TOPICS = ("caen/status/#", "julabo/status", "env/#", "interlock/status")


class ConditionsCache:
    """Thread-safe store of the newest JSON document per topic."""

    def __init__(self, caen_root: str = "caen", julabo_root: str = "julabo", env_root: str = "env") -> None:
        self.caen_root = caen_root
        self.julabo_root = julabo_root
        self.env_root = env_root
        self._latest: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @property
    def topics(self) -> tuple[str, ...]:
        """Subscriptions needed to fill the cache."""
        return (f"{self.caen_root}/status/#", f"{self.julabo_root}/status", f"{self.env_root}/#", "interlock/status")

    def update(self, topic: str, payload: bytes) -> bool:
        """Record ``payload`` for ``topic``; an empty payload clears it. Non-JSON-object payloads are ignored."""
        if not payload:
            with self._lock:
                self._latest.pop(topic, None)
            return True
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return False
        if not isinstance(doc, dict):
            return False
        with self._lock:
            self._latest[topic] = doc
        return True

    def interlock_state(self) -> str | None:
        """The interlock state last published by Node-RED, if any."""
        with self._lock:
            doc = self._latest.get("interlock/status")
        return doc.get("state") if doc else None

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the current readings, organised by device."""
        with self._lock:
            latest = copy.deepcopy(self._latest)
        snap: dict[str, Any] = {
            "taken_ts": time.time(),
            "caen": {"system": None, "modules": {}, "channels": {}},
            "julabo": None,
            "env": {},
            "interlock": latest.pop("interlock/status", None),
        }
        caen_prefix = f"{self.caen_root}/status"
        for topic, doc in sorted(latest.items()):
            if topic == caen_prefix:
                snap["caen"]["system"] = doc
            elif topic.startswith(caen_prefix + "/module/"):
                snap["caen"]["modules"][_key(topic[len(caen_prefix) + 8 :])] = doc
            elif topic.startswith(caen_prefix + "/channel/"):
                snap["caen"]["channels"][_key(topic[len(caen_prefix) + 9 :])] = doc
            elif topic == f"{self.julabo_root}/status":
                snap["julabo"] = doc
            elif topic.startswith(self.env_root + "/"):
                snap["env"][_key(topic[len(self.env_root) + 1 :])] = doc
            else:
                snap.setdefault("other", {})[_key(topic)] = doc
        return snap


def _key(name: str) -> str:
    """A MongoDB-safe field name (no dots, no leading $)."""
    return name.replace(".", "_").lstrip("$") or "_"
