"""The MQTT side of a trackerdcs service, implemented once for all of them.

A :class:`Service` owns one MQTT connection and gives a device adapter everything the contract in
docs/mqtt-api.md asks for:

* ``<root>/availability`` retained ``online``/``offline`` (the offline one as last will);
* ``<root>/status[/<sub>]`` retained JSON snapshots, deadbanded, with heartbeat, republished on reconnect;
* ``<root>/cmd/<name>`` commands, validated, executed one at a time on a worker thread, each answered on
  ``<root>/reply`` and, for MQTT v5 requests, on the Response Topic with the Correlation Data;
* ``<root>/event`` alarms and events; ``<root>/health`` retained process health;
* ``<root>/commands`` retained command table (names, arguments with types and ranges, help, what "done" means).

Usage::

    svc = Service("caen", MqttSettings(...))

    @svc.command("hv_on", Arg("modules", list, required=False, item_kind=str))
    def hv_on(args):
        ...                      # raise CommandError("why") to refuse
        return {"switched": [...]}

    svc.start()
    svc.publish_status({"state": "OFF", ...})
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from . import __version__, latencytrace
from .commands import Arg, CommandError, CommandRequest, CommandSpec, describe_table, parse_payload, peek_id
from .completion import Completion
from .config import MqttSettings
from .deadband import Deadband, SnapshotFilter
from .health import HealthMonitor
from .topics import OFFLINE, ONLINE, Topics

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], dict[str, Any] | None]

DUPLICATE_WINDOW_S = 30.0
COMMAND_QUEUE_LIMIT = 1000


def json_default(value: Any) -> Any:
    """Serialise enums, sets and other simple objects in snapshots."""
    if hasattr(value, "value"):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def dumps(payload: Mapping[str, Any]) -> str:
    """Compact JSON for MQTT payloads. Non-finite floats become null (JSON has no NaN)."""
    return json.dumps(_finite(payload), default=json_default, separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@dataclass
class _Inbound:
    command: str
    payload: bytes
    response_topic: str | None
    correlation: bytes | None


def build_client(
    settings: MqttSettings, client_id: str, will: tuple[str, str] | None = None, max_queued: int = 10_000
) -> mqtt.Client:
    """A paho client (MQTT v5) configured with credentials, TLS and an optional retained last will."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
    password = settings.resolved_password()
    if settings.username:
        client.username_pw_set(settings.username, password)
    if settings.tls_ca or settings.tls_cert:
        client.tls_set(
            ca_certs=settings.tls_ca,
            certfile=settings.tls_cert,
            keyfile=settings.tls_key,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        client.tls_insecure_set(settings.tls_insecure)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    client.max_queued_messages_set(max_queued)
    client.max_inflight_messages_set(100)
    return client


def set_nodelay(client: mqtt.Client) -> None:
    """Disable Nagle on the client socket: commands and replies are small and latency matters."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_properties(settings: MqttSettings) -> Properties:
    """CONNECT properties asking the broker to keep our session (subscriptions, queued QoS 1 messages)."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = settings.session_expiry_s
    return props


class Service:
    """One service's MQTT endpoint: availability, status, commands with replies, events and health."""

    def __init__(
        self,
        name: str,
        settings: MqttSettings,
        *,
        root: str | None = None,
        version: str = __version__,
        heartbeat_s: float = 30.0,
        deadbands: Mapping[str, Deadband] | None = None,
        health_interval_s: float = 10.0,
        max_queued: int = 10_000,
    ) -> None:
        self.name = name
        self.settings = settings
        self.topics = Topics(root or name)
        self.version = version
        self.heartbeat_s = heartbeat_s
        self.deadbands = dict(deadbands or {})
        self.health_interval_s = health_interval_s
        self.health = HealthMonitor(name, version)
        self.connected = threading.Event()
        self.ready = threading.Event()
        self._subscriptions: dict[str, Callable[[mqtt.MQTTMessage], None]] = {}
        self._cmd_mid: int | None = None
        self.on_connect_hooks: list[Callable[[], None]] = []
        self._commands: dict[str, CommandSpec] = {}
        self._filters: dict[str, SnapshotFilter] = {}
        self._latest: dict[str, dict[str, Any]] = {}
        self._status_lock = threading.RLock()
        self._inbox: queue.Queue[_Inbound | None] = queue.Queue(maxsize=COMMAND_QUEUE_LIMIT)
        self._recent: OrderedDict[Any, tuple[float, str, dict[str, Any]]] = OrderedDict()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ever_connected = False
        client_id = settings.client_id or f"trackerdcs-{name}-{socket.gethostname()}"
        self.client = build_client(settings, client_id, will=(self.topics.availability, OFFLINE), max_queued=max_queued)
        self._publish_failure_logged = -math.inf
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    # ------------------------------------------------------------------ commands
    def command(
        self, name: str, *args: Arg, help: str = "", allow_extra: bool = False, completion: Completion | None = None
    ) -> Callable[[Handler], Handler]:
        """Decorator registering ``handler(args) -> result | None`` as command ``name``."""

        def register(handler: Handler) -> Handler:
            self.add_command(name, handler, args, help=help, allow_extra=allow_extra, completion=completion)
            return handler

        return register

    def add_command(
        self,
        name: str,
        handler: Handler,
        args: tuple[Arg, ...] | list[Arg] = (),
        *,
        help: str = "",
        allow_extra: bool = False,
        completion: Completion | None = None,
    ) -> None:
        """Register ``handler`` for ``<root>/cmd/<name>``. ``completion``: what "done" means when the reply
        comes before the effect (a ramp, a run), published in the command table for clients that wait."""
        if name in self._commands:
            raise ValueError(f"command '{name}' registered twice")
        self._commands[name] = CommandSpec(
            name, handler, tuple(args), help=help, allow_extra=allow_extra, completion=completion
        )
        if self.connected.is_set():
            self._publish_commands()

    def command_table(self) -> dict[str, Any]:
        """The command table published retained on ``<root>/commands`` (docs/mqtt-api.md)."""
        return describe_table(self.name, self._commands.values(), self.version, self.topics.root)

    def _publish_commands(self) -> None:
        self.publish(self.topics.commands, dumps(self.command_table()), retain=True)

    @property
    def command_names(self) -> list[str]:
        return sorted(self._commands)

    def execute(self, command: str, payload: bytes) -> dict[str, Any]:
        """Parse, validate and run one command; return the reply document. Never raises."""
        ident = peek_id(payload)
        try:
            request = parse_payload(command, payload)
            ident = request.id
            if request.deadline is not None and time.time() > request.deadline:
                raise CommandError(
                    f"command expired: it reached the service {time.time() - request.deadline:.1f} s after the "
                    "deadline its sender set (the sender has already reported it failed); not carried out"
                )
            spec = self._commands.get(command)
            if spec is None:
                raise CommandError(
                    f"unknown command '{command[:100]}'; known commands: {', '.join(self.command_names)}"
                )
            args = spec.validate(request.args)
            duplicate = self._duplicate_of(request, args)
            if duplicate is not None:
                log.warning("command %s id=%r is a redelivery; not acted on again", command, ident)
                return {**duplicate, "duplicate": True, "ts": time.time()}
            result = spec.handler(args)
            reply = self._reply(ident, command, True, None, result)
            self._remember(request, args, reply)
            self.health.commands_ok += 1
            log.info("command %s id=%r ok", command, ident)
            return reply
        except CommandError as exc:
            self.health.commands_failed += 1
            log.warning("command %s id=%r refused: %s", command[:100], ident, exc)
            return self._reply(ident, command, False, str(exc))
        except Exception as exc:  # a handler bug must not kill the service
            self.health.commands_failed += 1
            self.health.error(f"{command}: {exc!r}")
            log.exception("command %s id=%r failed", command[:100], ident)
            return self._reply(ident, command, False, f"internal error: {exc}")

    def _reply(self, ident: Any, command: str, ok: bool, error: str | None, result: Any = None) -> dict[str, Any]:
        reply: dict[str, Any] = {"id": ident, "command": command[:100], "ok": ok, "error": error}
        if result is not None:
            reply["result"] = result
        reply["ts"] = time.time()
        return reply

    def _duplicate_of(self, request: CommandRequest, args: dict[str, Any]) -> dict[str, Any] | None:
        """The earlier reply if this request repeats the last command carrying the same id."""
        if request.id is None:
            return None
        now = time.monotonic()
        while self._recent:
            oldest = next(iter(self._recent.values()))
            if now - oldest[0] <= DUPLICATE_WINDOW_S and len(self._recent) <= 4096:
                break
            self._recent.popitem(last=False)
        seen = self._recent.get(request.id)
        if seen is None:
            return None
        key = _request_key(request.command, args)
        return seen[2] if seen[1] == key else None

    def _remember(self, request: CommandRequest, args: dict[str, Any], reply: dict[str, Any]) -> None:
        if request.id is None:
            return
        self._recent.pop(request.id, None)
        self._recent[request.id] = (time.monotonic(), _request_key(request.command, args), reply)

    # ------------------------------------------------------------------ publishing
    def publish(
        self,
        topic: str,
        payload: str | bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> bool:
        """Publish raw. Returns False if the message was not even queued (outgoing queue full); paho keeps
        QoS>0 messages queued across a broker outage. Failures are logged at most every 10 s, with a count."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        self.health.messages_out.tick()
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return True
        self.health.publish_failures += 1
        now = time.monotonic()
        if now - self._publish_failure_logged >= 10.0:
            self._publish_failure_logged = now
            message = f"publish to {topic} failed: {mqtt.error_string(info.rc)} ({self.health.publish_failures} so far)"
            log.warning("%s", message)
            self.health.error(message)
        return False

    def publish_status(
        self,
        payload: Mapping[str, Any],
        sub: str | None = None,
        *,
        force: bool = False,
        deadbands: Mapping[str, Deadband] | None = None,
    ) -> bool:
        """Publish a retained snapshot on ``<root>/status[/<sub>]`` if it changed beyond its deadbands
        (or the heartbeat is due, or ``force``). Adds ``ts``. Returns True when published."""
        topic = self.topics.status(sub)
        snapshot = dict(payload)
        snapshot.setdefault("ts", time.time())
        now = time.monotonic()
        with self._status_lock:
            self._latest[topic] = snapshot
            filt = self._filters.get(topic)
            if filt is None:
                filt = SnapshotFilter(deadbands={**self.deadbands, **(deadbands or {})}, heartbeat_s=self.heartbeat_s)
                self._filters[topic] = filt
            if not self.connected.is_set():
                filt.forget()  # goes out on reconnect
                return False
            if not force and not filt.should_publish(snapshot, now):
                return False
            filt.mark_published(snapshot, now)
        if latencytrace.enabled():
            latencytrace.mark(f"status {topic} {snapshot['ts']:.6f}")
        if not self.publish(topic, dumps(snapshot), retain=True):
            with self._status_lock:
                filt.forget()  # the heartbeat loop tries again within a second
            return False
        return True

    def event(self, kind: str, message: str, *, severity: str = "info", **data: Any) -> None:
        """Publish an event/alarm on ``<root>/event`` (not retained, QoS 1) and log it."""
        doc = {"kind": kind, "severity": severity, "message": message, "service": self.name, **data, "ts": time.time()}
        level = {"info": logging.INFO, "warning": logging.WARNING}.get(severity, logging.ERROR)
        log.log(level, "event %s: %s", kind, message)
        self.publish(self.topics.event, dumps(doc))

    def clear_status(self, sub: str) -> None:
        """Remove a retained status topic (e.g. a channel removed from the config)."""
        topic = self.topics.status(sub)
        with self._status_lock:
            self._latest.pop(topic, None)
            self._filters.pop(topic, None)
        self.publish(topic, b"", retain=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Connect (in the background, retrying forever) and start the worker threads."""
        self._stop.clear()
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive,
            clean_start=False,
            properties=connect_properties(self.settings),
        )
        self.client.loop_start()
        for target, name in ((self._command_loop, "commands"), (self._timer_loop, "timers")):
            thread = threading.Thread(target=target, name=f"{self.name}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Publish ``offline``, disconnect and stop the threads."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._inbox.put_nowait(None)
        if self.connected.is_set():
            info = self.client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
            with contextlib.suppress(Exception):
                info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Block until connected *and* subscribed to commands (True) or ``timeout`` passed (False)."""
        return self.ready.wait(timeout)

    def subscribe(self, pattern: str, callback: Callable[[mqtt.MQTTMessage], None]) -> None:
        """Receive other topics (e.g. another service's status): ``callback(msg)`` runs on the network thread
        and must be quick. Subscriptions are renewed on every reconnect."""
        self._subscriptions[pattern] = callback
        self.client.message_callback_add(pattern, lambda client, userdata, msg: callback(msg))
        if self.connected.is_set():
            self.client.subscribe(pattern, qos=1)

    # ------------------------------------------------------------------ paho callbacks
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("broker refused connection: %s", reason)
            self.health.error(f"broker refused connection: {reason}")
            return
        if self._ever_connected:
            self.health.reconnects += 1
        self._ever_connected = True
        set_nodelay(client)
        # retainAsPublished: a command published with the retain flag shows it even when delivered live
        options = SubscribeOptions(qos=1, retainAsPublished=True)
        _, self._cmd_mid = client.subscribe(self.topics.command_filter, options=options)
        for pattern in self._subscriptions:
            client.subscribe(pattern, qos=1)
        client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        self.connected.set()
        self._publish_commands()
        log.info("connected to %s:%s as %s", self.settings.host, self.settings.port, self.settings.username)
        with self._status_lock:
            latest = list(self._latest.items())
            for topic, _ in latest:
                self._filters[topic].forget()
        for topic, snapshot in latest:
            sub = topic[len(self.topics.status()) + 1 :] or None
            self.publish_status(snapshot, sub, force=True)
        self._publish_health()
        for hook in self.on_connect_hooks:
            try:
                hook()
            except Exception:
                log.exception("on-connect hook failed")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        if mid == self._cmd_mid:
            if any(r.is_failure for r in reasons):
                log.error("broker refused the command subscription %s: %s", self.topics.command_filter, reasons)
                self.health.error(f"command subscription refused: {reasons}")
            else:
                self.ready.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        self.ready.clear()
        if not self._stop.is_set():
            log.warning("disconnected from broker (%s); reconnecting", reason)
            self.health.error(f"disconnected from broker: {reason}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.health.messages_in.tick()
        command = self.topics.command_name(msg.topic)
        if command is None:
            return
        if latencytrace.enabled():
            latencytrace.mark(f"cmd {msg.topic}")
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        item = _Inbound(command, bytes(msg.payload), response_topic, correlation)
        if msg.retain:
            # A retained command would be carried out again at every restart of the service: refuse it and
            # delete it from the broker (the service account may write its own tree).
            if msg.payload:
                log.warning("refusing retained command on %s and clearing it", msg.topic)
                self.health.error(f"retained command on {msg.topic} refused and cleared")
                self.publish(msg.topic, b"", retain=True)
                self._send_reply(
                    item, self._reply(peek_id(item.payload), command, False, "retained commands are refused")
                )
            return
        try:
            self._inbox.put_nowait(item)
        except queue.Full:
            log.error("command queue full; refusing %s", command)
            self._send_reply(
                item, self._reply(peek_id(item.payload), command, False, "service busy: command queue full")
            )

    # ------------------------------------------------------------------ workers
    def _command_loop(self) -> None:
        while not self._stop.is_set():
            item = self._inbox.get()
            if item is None:
                break
            reply = self.execute(item.command, item.payload)
            self._send_reply(item, reply)

    def _send_reply(self, item: _Inbound, reply: dict[str, Any]) -> None:
        body = dumps(reply)
        self.publish(self.topics.reply, body)
        if item.response_topic:
            if any(c in item.response_topic for c in "+#") or len(item.response_topic) > 512:
                log.warning("ignoring invalid response topic %r", item.response_topic[:100])
                return
            props = Properties(PacketTypes.PUBLISH)
            if item.correlation is not None:
                props.CorrelationData = item.correlation
            self.publish(item.response_topic, body, properties=props)

    def _timer_loop(self) -> None:
        next_health = time.monotonic() + self.health_interval_s
        while not self._stop.wait(1.0):
            now = time.monotonic()
            self._heartbeat(now)
            if now >= next_health:
                next_health = now + self.health_interval_s
                self._publish_health()

    def _heartbeat(self, now: float) -> None:
        if not self.connected.is_set():
            return
        with self._status_lock:  # only the time check: changes beyond the deadbands went out when published
            due = [(topic, snap) for topic, snap in self._latest.items() if self._filters[topic].heartbeat_due(now)]
        for topic, snapshot in due:
            sub = topic[len(self.topics.status()) + 1 :] or None
            self.publish_status({**snapshot, "ts": time.time()}, sub, force=True)

    def _publish_health(self) -> None:
        self.health.queues = {
            "commands_queued": self._inbox.qsize(),
            "mqtt_out_queued": len(getattr(self.client, "_out_messages", ())),
        }
        if self.connected.is_set():
            self.publish(self.topics.health, dumps(self.health.snapshot()), retain=True)


def _request_key(command: str, args: Mapping[str, Any]) -> str:
    return command + "\0" + json.dumps(args, sort_keys=True, default=str)
