"""When is a long action done? The outcome of a command, judged from the status its service publishes. No I/O.

A reply comes when a command has been carried out or *started*: ``caen lv_on`` answers once the channels were
told to switch on, while they still ramp; ``ph2acf start`` once the run was launched. What "done" means for
such a command is data the service declares with the command (:class:`Completion`) and publishes in its command
table (``<root>/commands``, see :func:`trackerdcs.commands.describe_table`). A client (``dcs ... --wait``, the
operator UI, a script) follows it with a :class:`CompletionTracker`:

* the status topics to watch (``status/module/{modules}``: one per module named in the reply's ``modules``);
* the field judged (``state``) and its values meaning *done* (``LV_ON``) and *failed* (``TRIPPED``);
* optional ``match``: status fields that must equal fields of the reply before the judged field counts (a run's
  ``last_uid`` must be the ``uid`` the start command returned, so the previous run's outcome does not count);
* a default time limit and the fields worth showing in a progress line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DONE, FAILED, PENDING = "done", "failed", "pending"


@dataclass(frozen=True)
class Completion:
    """What the outcome of a command is, as seen in its service's published status.

    ``topic`` is relative to the service root (``status``, ``status/module/{modules}``); a ``{key}`` in it is
    replaced by ``result[key]`` of the reply, a list giving one topic per item (all must be done). ``field`` of
    each status document is judged: a value in ``done`` ends the wait well, one in ``failed`` badly; any other
    value (or no document yet) is still pending. ``match`` maps status fields to reply result fields that must
    be equal first. ``timeout_s`` is the default limit of a wait (``None``: none, e.g. a burn-in of days);
    ``show`` names further status fields for the progress line; ``description`` says it in words.
    """

    done: tuple[str, ...]
    failed: tuple[str, ...] = ()
    topic: str = "status"
    field: str = "state"
    match: Mapping[str, str] = dataclasses.field(default_factory=dict)
    timeout_s: float | None = 60.0
    show: tuple[str, ...] = ()
    description: str = ""

    def describe(self) -> dict[str, Any]:
        """The JSON form published in the command table (read back by :meth:`from_json`)."""
        return {
            "description": self.description,
            "topic": self.topic,
            "field": self.field,
            "done": list(self.done),
            "failed": list(self.failed),
            "match": dict(self.match),
            "timeout_s": self.timeout_s,
            "show": list(self.show),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Completion:
        """A completion from its published JSON form; raises ValueError if it is not one."""
        try:
            done = _strings(doc["done"], "done")
            return cls(
                done=done,
                failed=_strings(doc.get("failed") or [], "failed"),
                topic=str(doc.get("topic") or "status"),
                field=str(doc.get("field") or "state"),
                match={str(k): str(v) for k, v in dict(doc.get("match") or {}).items()},
                timeout_s=None if doc.get("timeout_s") is None else float(doc["timeout_s"]),
                show=_strings(doc.get("show") or [], "show"),
                description=str(doc.get("description") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a completion description: {exc}") from None

    def subscription(self, root: str) -> str:
        """One MQTT subscription covering every topic this completion may watch (``{key}`` → ``+``)."""
        parts = [("+" if part.startswith("{") and part.endswith("}") else part) for part in self.topic.split("/")]
        return f"{root}/{'/'.join(parts)}"

    def topics(self, root: str, result: Any) -> list[str]:
        """The status topics to watch for the reply ``result``; raises ValueError if the result lacks a key."""
        result = result if isinstance(result, Mapping) else {}
        topics = [self.topic]
        while any("{" in t for t in topics):
            expanded: list[str] = []
            for topic in topics:
                start = topic.find("{")
                if start < 0:
                    expanded.append(topic)
                    continue
                end = topic.index("}", start)
                key = topic[start + 1 : end]
                if key not in result:
                    raise ValueError(f"the reply has no '{key}' to say which status to watch")
                values = result[key] if isinstance(result[key], list) else [result[key]]
                expanded += [topic[:start] + str(v) + topic[end + 1 :] for v in values]
            topics = expanded
        return [f"{root}/{t}" for t in dict.fromkeys(topics)]


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"'{name}' must be a list")
    return tuple(str(v) for v in value)


@dataclass
class CompletionTracker:
    """Follows the status documents of one command's outcome and judges it: pending, done or failed."""

    completion: Completion
    root: str
    result: Any = None
    docs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.watched = self.completion.topics(self.root, self.result)
        self.docs = {topic: self.docs.get(topic) for topic in self.watched}

    def update(self, topic: str, doc: Any) -> bool:
        """Take a status document; True if it is one of the watched topics."""
        if topic not in self.docs:
            return False
        self.docs[topic] = doc if isinstance(doc, Mapping) else None
        return True

    def _value(self, doc: Any) -> str | None:
        """The judged field of ``doc``, or None while the document is missing or belongs to another action."""
        if not isinstance(doc, Mapping):
            return None
        result = self.result if isinstance(self.result, Mapping) else {}
        for status_key, result_key in self.completion.match.items():
            if doc.get(status_key) is None or doc.get(status_key) != result.get(result_key):
                return None
        value = doc.get(self.completion.field)
        return None if value is None else str(value)

    def values(self) -> dict[str, str | None]:
        """The judged value of every watched topic (None: nothing that counts yet)."""
        return {topic: self._value(doc) for topic, doc in self.docs.items()}

    @property
    def verdict(self) -> str:
        """``failed`` as soon as one watched topic failed, ``done`` once all are done, else ``pending``."""
        values = list(self.values().values())
        if any(v in self.completion.failed for v in values):
            return FAILED
        if values and all(v in self.completion.done for v in values):
            return DONE
        return PENDING

    def _label(self, topic: str) -> str:
        """What a ``{key}`` of the topic became (``module_0``), else the part that tells watched topics apart,
        else the service root."""
        template = f"{self.root}/{self.completion.topic}".split("/")
        parts = topic.split("/")
        if len(parts) == len(template):
            filled = [p for p, t in zip(parts, template, strict=True) if t.startswith("{")]
            if filled:
                return "/".join(filled)
        if len(self.watched) == 1:
            return self.root
        prefix = _common_prefix([t.split("/") for t in self.watched])
        return "/".join(parts[len(prefix) :]) or topic

    def describe_state(self, only: Sequence[str] | None = None) -> str:
        """``module_0 LV_RAMP_UP lv_vmon=5.2, module_1 LV_ON``: every watched topic's value and ``show`` fields."""
        parts = []
        for topic, doc in self.docs.items():
            if only is not None and topic not in only:
                continue
            label = self._label(topic)
            if not isinstance(doc, Mapping):
                parts.append(f"{label} (no status yet)")
                continue
            shown = self._value(doc) or ""  # nothing while the document is another action's
            extra = " ".join(f"{k}={_fmt(doc[k])}" for k in self.completion.show if doc.get(k) is not None)
            parts.append(" ".join(p for p in (label, shown, extra) if p))
        return ", ".join(parts)

    def failures(self) -> list[str]:
        """The watched topics that failed, as ``describe_state`` shows them."""
        return [t for t, v in self.values().items() if v in self.completion.failed]

    def pending(self) -> list[str]:
        """The watched topics not done yet."""
        return [t for t, v in self.values().items() if v not in self.completion.done]


def _common_prefix(parts: list[list[str]]) -> list[str]:
    prefix: list[str] = []
    for items in zip(*parts, strict=False):
        if len(set(items)) != 1:
            break
        prefix.append(items[0])
    return prefix


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def progress_line(command: str, tracker: CompletionTracker, elapsed_s: float, timeout_s: float | None) -> str:
    """The one progress line of ``dcs ... --wait``: what is watched, where it stands, time used of the limit."""
    limit = f"/{timeout_s:.0f}" if timeout_s is not None else ""
    return f"{command}: {tracker.describe_state()}  {elapsed_s:.0f}{limit} s"


def failure_message(command: str, tracker: CompletionTracker) -> str:
    """Why a wait ended badly, for the operator: which topic reached which failed value."""
    expected = " or ".join(tracker.completion.done)
    return f"{command} failed: {tracker.describe_state(tracker.failures())} (expected {expected})"


def timeout_message(command: str, tracker: CompletionTracker, timeout_s: float) -> str:
    """What was still pending when the time limit ran out."""
    expected = " or ".join(tracker.completion.done)
    return (
        f"{command} not done within {timeout_s:g} s: {tracker.describe_state(tracker.pending())} "
        f"(waiting for {expected}); the action may still be under way (dcs status)"
    )
