"""The latest DCS readings seen on MQTT, snapshotted into run documents at start and end (pure, no I/O).

The bridge subscribes (as MQTT user ``ph2acf``) to the CAEN, Julabo, environment and interlock status topics
and feeds every message to :meth:`ConditionsCache.update`. :meth:`ConditionsCache.snapshot` returns::

    {"taken_ts": ..., "caen": {"system": {...}, "modules": {"M1": {...}}, "channels": {"HV0": {...}}},
     "julabo": {...} | None, "env": {"sensor": {...}}, "interlock": {...} | None}
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

DEFAULT_TOPICS = ("caen/status/#", "julabo/status", "env/#", "interlock/status")


class ConditionsCache:
    """Thread-safe store of the newest JSON document per topic.

    The payloads are kept as received and decoded only when a snapshot is taken (at run start and end): the bridge
    sees every channel's status (a thousand messages a second on a big crate) but needs them twice per run, so
    decoding each message on arrival would cost CPU and keep a tree of objects per channel for nothing."""

    def __init__(self, caen_root: str = "caen", julabo_root: str = "julabo", env_root: str = "env") -> None:
        self.caen_root = caen_root
        self.julabo_root = julabo_root
        self.env_root = env_root
        self._latest: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @property
    def topics(self) -> tuple[str, ...]:
        """Subscriptions needed to fill the cache."""
        return (f"{self.caen_root}/status/#", f"{self.julabo_root}/status", f"{self.env_root}/#", "interlock/status")

    def update(self, topic: str, payload: bytes) -> None:
        """Record ``payload`` for ``topic``; an empty payload clears it. A payload that is not a JSON object is
        left out of snapshots."""
        with self._lock:
            if payload:
                self._latest[topic] = bytes(payload)
            else:
                self._latest.pop(topic, None)

    def interlock_state(self) -> str | None:
        """The interlock state last published by Node-RED, if any."""
        with self._lock:
            raw = self._latest.get("interlock/status")
        doc = _decode(raw) if raw else None
        state = doc.get("state") if doc else None
        return state if isinstance(state, str) else None

    def snapshot(self) -> dict[str, Any]:
        """The current readings, decoded and organised by device."""
        with self._lock:
            raw = dict(self._latest)
        latest = {topic: doc for topic, payload in raw.items() if (doc := _decode(payload)) is not None}
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


def _decode(payload: bytes) -> dict[str, Any] | None:
    """The JSON object in ``payload``, or None for anything else."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _key(name: str) -> str:
    """A MongoDB-safe field name (no dots, no leading $)."""
    return name.replace(".", "_").lstrip("$") or "_"
