"""The audit trail: every command sent to a service, who sent it, from where, its arguments and its reply.

One small recorder (``dcs-audit``, MQTT user ``audit``, read-only on everything else) listens to ``+/cmd/+`` and
``+/reply``: the same topics every service and the Node-RED interlock use, so nothing in the services changes and
a command nobody answered is recorded too (``"reply": null``, after :data:`REPLY_WAIT_S`). Each finished record is
one JSON line appended to ``<dir>/audit-YYYY-MM-DD.jsonl`` (UTC date, kept ``retention_days``, see
docs/security.md) and the last few are published retained on ``audit/recent`` for the operator UI.
``audit/cmd/query`` answers ``dcs audit --since ...``.

Who: ``by`` and ``from`` in the command payload, as the sender declares them (the ``dcs`` client: its MQTT
account and ``dcs <login>@<host>``; the operator UI: the login, filled in on the Node-RED server, and the
browser's address). The broker authenticates every connection and its ACL limits what each account may send, but
an MQTT message does not carry its sender's account: an account holder with a modified client could declare
another ``by``. The broker's connection log (client id, account, address) is the cross-check.

The pairing and formatting below are pure (:class:`AuditBook`, :func:`command_record`, :class:`AuditStore`
reads/writes files only); :class:`AuditRecorder` is the thin MQTT adapter.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field

from .commands import Arg, CommandError
from .config import MqttSettings
from .configmodel import ConfigModel, MqttSection, validate
from .service import Service, dumps

log = logging.getLogger(__name__)

#: how long a command waits for its reply before it is recorded without one
REPLY_WAIT_S = 30.0
#: results larger than this (JSON characters) are recorded as their size only (``runs`` lists, run documents)
MAX_RESULT_CHARS = 2000
#: envelope fields of a command payload that are not arguments
ENVELOPE = ("id", "deadline", "by", "from")


def _text(value: Any, limit: int = 200) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def command_record(topic: str, payload: bytes, now: float) -> dict[str, Any] | None:
    """The start of a record for a command seen on ``topic`` (``<service>/cmd/<name>``), or None if it is not one.

    Unreadable payloads are recorded too (the service will refuse them; the trail shows what was tried)."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[1] != "cmd" or not parts[0] or not parts[2]:
        return None
    record: dict[str, Any] = {"ts": round(now, 3), "service": parts[0], "command": parts[2][:100]}
    try:
        body = json.loads(payload.decode("utf-8")) if payload.strip() else {}
    except (UnicodeDecodeError, ValueError, RecursionError):
        body = None
    if isinstance(body, dict):
        ident = body.get("id")
        record["id"] = ident if isinstance(ident, (str, int)) and not isinstance(ident, bool) else None
        record["by"] = _text(body.get("by"))
        record["from"] = _text(body.get("from"))
        args = {k: v for k, v in body.items() if k not in ENVELOPE}
        text = json.dumps(args, default=str)
        record["args"] = args if len(text) <= MAX_RESULT_CHARS else {"_truncated_chars": len(text)}
    else:
        record.update(id=None, by=None, args=None, unreadable=payload[:200].decode("utf-8", "replace"))
        record["from"] = None
    return record


def reply_summary(reply: dict[str, Any], now: float) -> dict[str, Any]:
    """What the trail keeps of a reply: ok, error, a small result, and when."""
    out: dict[str, Any] = {"ok": reply.get("ok") is True, "error": _text(reply.get("error"), 1000), "ts": round(now, 3)}
    if "result" in reply:
        text = json.dumps(reply["result"], default=str)
        out["result"] = reply["result"] if len(text) <= MAX_RESULT_CHARS else {"_truncated_chars": len(text)}
    if reply.get("duplicate"):
        out["duplicate"] = True
    return out


@dataclass
class AuditBook:
    """Commands waiting for their reply; pairs replies with them (by service and id, else by service and name)."""

    reply_wait_s: float = REPLY_WAIT_S
    pending: list[dict[str, Any]] = field(default_factory=list)

    def command(self, record: dict[str, Any]) -> None:
        """A command was seen: wait for its reply (at most 10 000 waiting; the oldest is then given up)."""
        self.pending.append(record)
        if len(self.pending) > 10_000:
            self.pending.pop(0)

    def reply(self, service: str, reply: dict[str, Any], now: float) -> dict[str, Any] | None:
        """The finished record for a reply on ``<service>/reply``, or None if no command of ours matches."""
        ident = reply.get("id")
        name = reply.get("command")
        for i, record in enumerate(self.pending):
            if record["service"] != service:
                continue
            if (ident is not None and record.get("id") == ident) or (
                ident is None and record.get("id") is None and record["command"] == name
            ):
                del self.pending[i]
                return {**record, "reply": reply_summary(reply, now)}
        return None

    def expire(self, now: float) -> list[dict[str, Any]]:
        """Records whose reply did not come within ``reply_wait_s``: finished with ``"reply": None``."""
        done = [r for r in self.pending if now - r["ts"] > self.reply_wait_s]
        if done:
            self.pending = [r for r in self.pending if now - r["ts"] <= self.reply_wait_s]
        return [{**r, "reply": None} for r in done]


def parse_since(text: str, now: float) -> float:
    """``--since`` as seconds since the epoch: ``30m``, ``2h``, ``7d``, ``90s``, or an ISO date/time (UTC if no
    zone). Raises ValueError with a usable message."""
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units:
        try:
            return now - float(text[:-1]) * units[text[-1]]
        except ValueError:
            pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: use 30m, 2h, 7d or an ISO time like 2026-12-01T06:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class AuditStore:
    """The trail on disk: one JSON line per record, one file per UTC day, old days removed after retention."""

    def __init__(self, folder: Path, retention_days: int = 365) -> None:
        self.folder = Path(folder)
        self.retention_days = retention_days
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def path_for(self, ts: float) -> Path:
        return self.folder / f"audit-{datetime.fromtimestamp(ts, UTC):%Y-%m-%d}.jsonl"

    def append(self, record: dict[str, Any]) -> None:
        """Write one record (flushed, so a crash loses nothing already written)."""
        line = dumps(record) + "\n"
        with self._lock, open(self.path_for(record["ts"]), "a", encoding="utf-8") as out:
            out.write(line)
            out.flush()

    def prune(self, now: float) -> list[Path]:
        """Delete day files older than the retention (0: keep everything); returns what was removed."""
        if self.retention_days <= 0:
            return []
        cutoff = f"audit-{datetime.fromtimestamp(now, UTC) - timedelta(days=self.retention_days):%Y-%m-%d}.jsonl"
        removed = [p for p in self.folder.glob("audit-*.jsonl") if p.name < cutoff]
        for p in removed:
            p.unlink()
        return removed

    def records(self, since: float, until: float | None = None) -> Iterator[dict[str, Any]]:
        """Records from ``since`` (to ``until``), oldest first. Unreadable lines are skipped with a log line."""
        first = f"audit-{datetime.fromtimestamp(since, UTC):%Y-%m-%d}.jsonl"
        for path in sorted(p for p in self.folder.glob("audit-*.jsonl") if p.name >= first):
            with open(path, encoding="utf-8") as lines:
                for number, line in enumerate(lines, 1):
                    try:
                        record = json.loads(line)
                    except ValueError:
                        log.warning("%s:%d is not a JSON record; skipped", path, number)
                        continue
                    ts = record.get("ts", 0)
                    if ts >= since and (until is None or ts <= until):
                        yield record

    def query(
        self,
        since: float,
        until: float | None = None,
        limit: int = 200,
        by: str | None = None,
        service: str | None = None,
    ) -> list[dict[str, Any]]:
        """The last ``limit`` matching records since ``since``, oldest first."""
        last: deque[dict[str, Any]] = deque(maxlen=limit)
        for record in self.records(since, until):
            if (by is None or record.get("by") == by) and (service is None or record.get("service") == service):
                last.append(record)
        return list(last)

    def tail(self, n: int, now: float, days: int = 7) -> list[dict[str, Any]]:
        """The last ``n`` records of the last ``days`` days (for ``audit/recent`` after a restart)."""
        return self.query(now - days * 86400, limit=n)


def compact(record: dict[str, Any]) -> dict[str, Any]:
    """A record for the UI's table: the fields a person reads, arguments shortened."""
    reply = record.get("reply")
    args = json.dumps(record.get("args"), default=str)
    return {
        "ts": record["ts"], "service": record["service"], "command": record["command"], "by": record.get("by"),
        "from": record.get("from"), "args": args if len(args) <= 120 else args[:117] + "...",
        "ok": None if reply is None else reply.get("ok"), "error": None if reply is None else reply.get("error"),
    }  # fmt: skip


class AuditRecorder:
    """The ``audit`` service: records ``+/cmd/+`` with ``+/reply``, publishes ``audit/recent``, answers queries."""

    def __init__(
        self,
        settings: MqttSettings,
        folder: Path,
        *,
        retention_days: int = 365,
        recent: int = 20,
        reply_wait_s: float = REPLY_WAIT_S,
    ) -> None:
        self.store = AuditStore(folder, retention_days)
        self.book = AuditBook(reply_wait_s)
        self.recent: deque[dict[str, Any]] = deque(maxlen=recent)
        self.records = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.svc = Service("audit", settings)
        self.svc.add_command(
            "query",
            self._cmd_query,
            [
                Arg("since", "any", required=False, default="1h", help="30m, 2h, 7d or an ISO time (UTC)"),
                Arg("until", "any", required=False),
                Arg("limit", int, required=False, default=200, minimum=1, maximum=5000),
                Arg("user", str, required=False, help="only commands sent by this user"),
                Arg("service", str, required=False),
            ],
            help="records of the audit trail, oldest first",
        )
        self.svc.subscribe("+/cmd/+", self._on_command)
        self.svc.subscribe("+/reply", self._on_reply)

    # ------------------------------------------------------------------ MQTT callbacks (network thread: quick)
    def _on_command(self, msg: Any) -> None:
        if msg.topic.startswith("audit/cmd/"):
            # paho hands a message matching a callback filter only to that callback: pass our own commands on
            self.svc._on_message(self.svc.client, None, msg)
            return
        if msg.retain and not msg.payload:
            return  # a service clearing a refused retained command: not a command
        record = command_record(msg.topic, bytes(msg.payload), time.time())
        if record is None:
            return
        if msg.retain:
            record["retained"] = True
        with self._lock:
            self.book.command(record)

    def _on_reply(self, msg: Any) -> None:
        service = msg.topic.split("/")[0]
        if service == "audit":
            return
        try:
            reply = json.loads(bytes(msg.payload).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return
        if not isinstance(reply, dict):
            return
        with self._lock:
            record = self.book.reply(service, reply, time.time())
        if record is not None:
            self._finish([record])

    # ------------------------------------------------------------------ records
    def _finish(self, records: Iterable[dict[str, Any]]) -> None:
        done = list(records)
        if not done:
            return
        for record in done:
            try:
                self.store.append(record)
            except OSError as exc:
                log.error("cannot write the audit trail: %s", exc)
                self.svc.health.error(f"audit trail not written: {exc}")
            self.recent.append(compact(record))
            self.records += 1
            log.info(
                "audit %s/%s by %s from %s: %s", record["service"], record["command"], record.get("by"),
                record.get("from"), "no reply" if record["reply"] is None else
                ("ok" if record["reply"]["ok"] else f"refused: {record['reply']['error']}"),
            )  # fmt: skip
        self._publish()

    def _publish(self) -> None:
        self.svc.publish("audit/recent", dumps({"records": list(self.recent)[::-1], "ts": time.time()}), retain=True)
        self.svc.publish_status({"state": "RECORDING", "records": self.records, "folder": str(self.store.folder)})

    def _cmd_query(self, args: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        try:
            since = parse_since(str(args["since"]), now)
            until = parse_since(str(args["until"]), now) if args.get("until") is not None else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        records = self.store.query(since, until, args["limit"], args.get("user"), args.get("service"))
        return {"since": since, "until": until, "records": records}

    def _loop(self) -> None:
        next_prune = 0.0
        while not self._stop.wait(1.0):
            now = time.time()
            with self._lock:
                expired = self.book.expire(now)
            self._finish(expired)
            if now >= next_prune:
                next_prune = now + 3600
                for path in self.store.prune(now):
                    log.info("audit: removed %s (older than %d days)", path.name, self.store.retention_days)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.recent.extend(compact(r) for r in self.store.tail(self.recent.maxlen or 20, time.time()))
        self.svc.on_connect_hooks.append(self._publish)
        self.svc.start()
        self._thread = threading.Thread(target=self._loop, name="audit-expiry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self._lock:
            leftover = self.book.expire(float("inf"))
        for record in leftover:  # on the way down: what never got a reply is still written
            self.store.append(record)
        self.svc.stop()


class AuditSection(ConfigModel):
    """``audit:``: where the trail is kept and for how long."""

    folder: str = Field(min_length=1, description="one JSON-lines file per UTC day")
    retention_days: int = Field(365, ge=0, description="older day files are deleted (0: keep everything)")
    recent: int = Field(20, ge=1, description="records on audit/recent (the operator UI's table)")


class AuditFile(ConfigModel):
    """The dcs-audit configuration file."""

    mqtt: MqttSection = MqttSection()
    audit: AuditSection


def build(config: dict[str, Any], settings: MqttSettings) -> AuditRecorder:
    """The recorder from a config's ``audit:`` section (folder, retention_days, recent): see :class:`AuditFile`."""
    section = validate(AuditFile, config).audit
    return AuditRecorder(settings, Path(section.folder), retention_days=section.retention_days, recent=section.recent)


def main(argv: list[str] | None = None) -> int:
    from .servicemain import run_service

    return run_service("dcs-audit", "trackerdcs audit trail recorder", build, argv)
