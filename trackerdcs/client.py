"""Python API for scripts and operators: send commands and wait for replies, watch status.

Example::

    from trackerdcs.client import DcsClient
    from trackerdcs.config import MqttSettings

    with DcsClient(MqttSettings(host="127.0.0.1", username="operator", password_file="...")) as dcs:
        reply = dcs.command("caen", "lv_on", modules=["M1"])   # raises CommandFailed if ok is false
        print(dcs.status("caen"))
        dcs.command("caen", "hv_on", modules=["M1"], wait=True)  # until M1 reads HV_ON (ActionFailed if it trips)
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .completion import (
    DONE,
    FAILED,
    Completion,
    CompletionTracker,
    failure_message,
    timeout_message,
)
from .config import MqttSettings
from .service import build_client, set_nodelay
from .topics import REPLY_PREFIX, Topics


class DcsError(Exception):
    """Base class of client errors."""


class CommandFailed(DcsError):
    """The service answered ``ok: false``; ``reply`` holds the whole answer."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(reply.get("error") or "command failed")
        self.reply = reply


class NoReply(DcsError):
    """No reply arrived in time (service offline, broker down, or the ACL dropped the command)."""


class ActionFailed(DcsError):
    """The command was accepted but its outcome failed (a module tripped, the chiller went into alarm, a run
    failed): the published status reached a value its command table calls *failed*. ``tracker`` has the status."""

    def __init__(self, message: str, reply: dict[str, Any], tracker: CompletionTracker) -> None:
        super().__init__(message)
        self.reply, self.tracker = reply, tracker


class ActionTimeout(DcsError):
    """The command was accepted but its outcome was not reached in time (it may still be under way)."""

    def __init__(self, message: str, reply: dict[str, Any], tracker: CompletionTracker) -> None:
        super().__init__(message)
        self.reply, self.tracker = reply, tracker


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    received: float

    def json(self) -> Any:
        return json.loads(self.payload) if self.payload else None


@dataclass
class _Pending:
    event: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None


class DcsClient:
    """A connected MQTT client that speaks the trackerdcs contract."""

    def __init__(self, settings: MqttSettings, *, client_id: str | None = None, connect_timeout: float = 10.0) -> None:
        self.settings = settings
        self.client_id = client_id or f"dcs-{uuid.uuid4().hex[:12]}"
        self.reply_topic = f"{REPLY_PREFIX}/{self.client_id}"
        self.client = build_client(settings, self.client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.connect_timeout = connect_timeout
        self._connected = threading.Event()
        self._refused: str | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._lock = threading.Lock()
        self._retained: dict[str, Message] = {}
        self._watchers: list[tuple[str, Callable[[Message], None]]] = []
        self._subscriptions: set[str] = set()
        self._acked: set[int] = set()
        self._acked_cond = threading.Condition()
        #: ``from`` of the commands this client sends (audit trail): program, login and host
        self.origin = f"{Path(sys.argv[0]).name or 'python'} {_login()}@{socket.gethostname()}"[:200]

    # ------------------------------------------------------------------ connection
    def connect(self) -> DcsClient:
        """Connect and wait for the broker's acceptance; raise DcsError if refused or unreachable."""
        try:
            self.client.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        except OSError as exc:
            raise DcsError(f"cannot reach broker {self.settings.host}:{self.settings.port}: {exc}") from None
        self.client.loop_start()
        if not self._connected.wait(self.connect_timeout) or self._refused:
            self.close()
            raise DcsError(self._refused or f"cannot reach broker {self.settings.host}:{self.settings.port}")
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> DcsClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._refused = f"broker refused connection: {reason}"
            self._connected.set()
            return
        set_nodelay(client)
        client.subscribe(self.reply_topic, qos=1)
        for pattern in self._subscriptions:
            client.subscribe(pattern, qos=1)
        self._connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        with self._acked_cond:
            self._acked.add(mid)
            self._acked_cond.notify_all()

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until the broker has sent every retained message of the subscriptions made so far: it answers
        subscriptions in order and sends a subscription's retained messages before it answers the next one, so
        once a marker subscription is acknowledged, what is retained is here (and what is missing does not exist).
        False if the broker did not answer within ``timeout``."""
        _, mid = self.client.subscribe(self.reply_topic, qos=1)
        with self._acked_cond:
            done = self._acked_cond.wait_for(lambda: mid in self._acked, timeout)
            self._acked.discard(mid)
            return done

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.time())
        if msg.topic == self.reply_topic:
            corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
            with self._lock:
                pending = self._pending.get(bytes(corr)) if corr is not None else None
            if pending is not None:
                try:
                    pending.reply = json.loads(msg.payload)
                except ValueError:
                    pending.reply = {"ok": False, "error": "unreadable reply"}
                pending.event.set()
            return
        with self._lock:
            if msg.payload:
                self._retained[msg.topic] = message
            else:
                self._retained.pop(msg.topic, None)
            watchers = [cb for pattern, cb in self._watchers if mqtt.topic_matches_sub(pattern, msg.topic)]
        for callback in watchers:
            callback(message)

    # ------------------------------------------------------------------ commands
    def command(
        self,
        service: str,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float = 10.0,
        check: bool = True,
        wait: bool | float = False,
        progress: Callable[[CompletionTracker, float], None] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Send ``command`` to ``service`` and return its reply document.

        With ``wait`` (True: the command's own time limit from the service's command table; a number: that many
        seconds) it then waits for the command's outcome as the table defines it (e.g. every module named reads
        LV on), calling ``progress(tracker, elapsed_s)`` about twice a second, and raises :class:`ActionFailed`
        or :class:`ActionTimeout` if it is not reached; the reply gets ``outcome`` (the watched status documents).

        The request carries a unique ``id`` and MQTT v5 Response Topic/Correlation Data; it expires at the
        broker after ``timeout`` seconds, so a command can never be delivered late to a service that was
        offline; it also carries ``deadline`` (now + ``timeout``), so a service never carries it out after this
        call has given up, even if it was held back in this client during a broker outage. Raises
        :class:`NoReply` after ``timeout`` and, with ``check``, :class:`CommandFailed`
        when the reply says ``ok: false``.
        """
        completion = None
        if wait is not False and wait is not None:
            completion = self.completion(service, command)
            if completion is None:
                raise DcsError(f"{service} publishes no outcome for '{command}': its reply is the result")
            self.subscribe([completion.subscription(service)])
        payload = dict(args or {})
        payload.update(kwargs)
        ident = payload.setdefault("id", uuid.uuid4().hex)
        # A command held back by a broker outage must not be carried out after we have reported it failed: the
        # service refuses it once this deadline has passed (the broker's message expiry does not cover messages
        # still queued in this client).
        payload.setdefault("deadline", round(time.time() + timeout, 3))
        # who and from where, for the audit trail (docs/security.md): the MQTT account and this login/host
        payload.setdefault("by", self.settings.username or "anonymous")
        payload.setdefault("from", self.origin)
        corr = uuid.uuid4().bytes
        pending = _Pending()
        with self._lock:
            self._pending[corr] = pending
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        props.MessageExpiryInterval = max(1, int(timeout))
        try:
            self.client.publish(Topics(service).command(command), json.dumps(payload), qos=1, properties=props)
            if not pending.event.wait(timeout):
                raise NoReply(f"no reply from {service} to {command} (id {ident}) within {timeout} s")
        finally:
            with self._lock:
                self._pending.pop(corr, None)
        reply = pending.reply or {}
        if check and not reply.get("ok"):
            raise CommandFailed(reply)
        if completion is not None and reply.get("ok"):
            limit = completion.timeout_s if wait is True else float(wait)
            tracker = self.await_outcome(service, command, completion, reply, limit, progress)
            reply["outcome"] = tracker.docs
        return reply

    # ------------------------------------------------------------------ command tables and outcomes
    def commands(self, service: str, timeout: float = 3.0) -> dict[str, Any] | None:
        """The command table ``service`` publishes on ``<root>/commands`` (None if it publishes none)."""
        topic = Topics(service).commands
        if topic not in self._subscriptions:
            self.subscribe([topic])
            self.sync(timeout)
        message = self.latest(topic).get(topic)  # kept current: a service republishes it when it reconnects
        try:
            table = message.json() if message is not None else None
        except ValueError:
            table = None
        return table if isinstance(table, dict) else None

    def completion(self, service: str, command: str) -> Completion | None:
        """What "done" means for ``command`` of ``service``, from its command table (None: the reply is all)."""
        table = self.commands(service) or {}
        for entry in table.get("commands") or []:
            if isinstance(entry, dict) and entry.get("name") == command and entry.get("completion"):
                try:
                    return Completion.from_json(entry["completion"])
                except ValueError:
                    return None
        return None

    def await_outcome(
        self,
        service: str,
        command: str,
        completion: Completion,
        reply: dict[str, Any],
        timeout: float | None,
        progress: Callable[[CompletionTracker, float], None] | None = None,
    ) -> CompletionTracker:
        """Follow the status topics of ``completion`` for the accepted ``reply`` until done (returns the
        tracker), failed (:class:`ActionFailed`) or ``timeout`` seconds passed (:class:`ActionTimeout`)."""
        label = f"{service} {command}"
        try:
            tracker = CompletionTracker(completion, service, reply.get("result"))
        except ValueError as exc:
            raise DcsError(f"{label}: cannot wait: {exc}") from None
        changed = threading.Event()

        def on_status(message: Message) -> None:
            if message.topic in tracker.docs:
                changed.set()

        self.watch(completion.subscription(service), on_status)
        started = time.monotonic()
        try:
            while True:
                for topic, message in self.latest(completion.subscription(service)).items():
                    try:
                        tracker.update(topic, message.json())
                    except ValueError:
                        continue
                elapsed = time.monotonic() - started
                if progress is not None:
                    progress(tracker, elapsed)
                verdict = tracker.verdict
                if verdict == DONE:
                    return tracker
                if verdict == FAILED:
                    raise ActionFailed(failure_message(label, tracker), reply, tracker)
                if timeout is not None and elapsed >= timeout:
                    raise ActionTimeout(timeout_message(label, tracker, timeout), reply, tracker)
                left = 0.5 if timeout is None else max(0.0, min(0.5, timeout - elapsed))
                changed.wait(left)
                changed.clear()
        finally:
            with self._lock:
                self._watchers = [(p, cb) for p, cb in self._watchers if cb is not on_status]

    # ------------------------------------------------------------------ status
    def subscribe(self, patterns: Iterable[str], timeout: float = 5.0) -> bool:
        """Follow topics; their latest (retained) messages are kept for :meth:`latest`. Returns once the broker
        has acknowledged the new subscriptions (so a message published after this returns is seen), or after
        ``timeout``: False then (and when called on the network thread, which cannot wait for itself)."""
        mids = []
        for pattern in patterns:
            if pattern not in self._subscriptions:
                self._subscriptions.add(pattern)
                rc, mid = self.client.subscribe(pattern, qos=1)
                if rc == mqtt.MQTT_ERR_SUCCESS:
                    mids.append(mid)
        if not mids:
            return True
        if not self._connected.is_set() or threading.current_thread() is getattr(self.client, "_thread", None):
            return False
        with self._acked_cond:
            done = self._acked_cond.wait_for(lambda: all(m in self._acked for m in mids), timeout)
            self._acked.difference_update(mids)  # message ids come round again (16 bits)
            return done

    def watch(self, pattern: str, callback: Callable[[Message], None]) -> bool:
        """Call ``callback(message)`` (on the network thread) for every message matching ``pattern`` published
        from now on (and the retained ones). Returns once the broker has the subscription (see :meth:`subscribe`)."""
        with self._lock:
            self._watchers.append((pattern, callback))
        return self.subscribe([pattern])

    def latest(self, pattern: str = "#") -> dict[str, Message]:
        """The newest message of every topic seen so far that matches ``pattern``."""
        with self._lock:
            return {t: m for t, m in self._retained.items() if mqtt.topic_matches_sub(pattern, t)}

    def status(self, service: str, sub: str | None = None, timeout: float = 3.0) -> dict[str, Any] | None:
        """The retained status snapshot of ``service`` (or one of its sub-topics), waiting up to ``timeout``."""
        topic = Topics(service).status(sub)
        self.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                message = self._retained.get(topic)
            if message is not None:
                return message.json()
            time.sleep(0.02)
        return None

    def wait_for(
        self,
        pattern: str,
        predicate: Callable[[Message], bool] = lambda m: True,
        timeout: float = 10.0,
    ) -> Message:
        """Wait for a message on ``pattern`` (retained ones included) for which ``predicate`` holds."""
        found = threading.Event()
        box: list[Message] = []

        def check(message: Message) -> None:
            if not found.is_set():
                try:
                    ok = predicate(message)
                except Exception:
                    ok = False
                if ok:
                    box.append(message)
                    found.set()

        self.watch(pattern, check)
        for message in self.latest(pattern).values():
            check(message)
        try:
            if not found.wait(timeout):
                raise TimeoutError(f"no matching message on {pattern} within {timeout} s")
            return box[0]
        finally:
            with self._lock:
                self._watchers = [(p, cb) for p, cb in self._watchers if cb is not check]


def _login() -> str:
    """The login name of this process (``?`` when there is none, e.g. in a container without a passwd entry)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "?"
