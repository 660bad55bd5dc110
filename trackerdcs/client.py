"""Python API for scripts and operators: send commands and wait for replies, watch status.

Example::

    from trackerdcs.client import DcsClient
    from trackerdcs.config import MqttSettings

    with DcsClient(MqttSettings(host="127.0.0.1", username="operator", password_file="...")) as dcs:
        reply = dcs.command("caen", "lv_on", modules=["M1"])   # raises CommandFailed if ok is false
        print(dcs.status("caen"))
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
        self.connect_timeout = connect_timeout
        self._connected = threading.Event()
        self._refused: str | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._lock = threading.Lock()
        self._retained: dict[str, Message] = {}
        self._watchers: list[tuple[str, Callable[[Message], None]]] = []
        self._subscriptions: set[str] = set()
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
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Send ``command`` to ``service`` and return its reply document.

        The request carries a unique ``id`` and MQTT v5 Response Topic/Correlation Data; it expires at the
        broker after ``timeout`` seconds, so a command can never be delivered late to a service that was
        offline; it also carries ``deadline`` (now + ``timeout``), so a service never carries it out after this
        call has given up, even if it was held back in this client during a broker outage. Raises
        :class:`NoReply` after ``timeout`` and, with ``check``, :class:`CommandFailed`
        when the reply says ``ok: false``.
        """
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
        return reply

    # ------------------------------------------------------------------ status
    def subscribe(self, patterns: Iterable[str]) -> None:
        """Follow topics; their latest (retained) messages are kept for :meth:`latest`."""
        for pattern in patterns:
            if pattern not in self._subscriptions:
                self._subscriptions.add(pattern)
                self.client.subscribe(pattern, qos=1)

    def watch(self, pattern: str, callback: Callable[[Message], None]) -> None:
        """Call ``callback(message)`` (on the network thread) for every message matching ``pattern``."""
        with self._lock:
            self._watchers.append((pattern, callback))
        self.subscribe([pattern])

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
