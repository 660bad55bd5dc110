"""Commands to other services with replies, retries and timeouts (pure: the engine clock drives it).

A command is tried up to ``retries`` times: a refusal (``ok: false``) or no reply within ``reply_timeout_s``
counts as a failed try; the next try goes out ``interval_s`` later. After the last failed try the command is
``failed`` and its owner decides (a burn-in step aborts the burn-in).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from enum import StrEnum

from .world import Command, Reply


class Status(StrEnum):
    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"


@dataclass
class Entry:
    command: Command
    owner: str
    tries: int = 0
    sent_at: float = 0.0
    next_at: float | None = None  #: when the next try is due (after a failed one)
    status: Status = Status.PENDING
    reply: Reply | None = None
    errors: list[str] | None = None


class Tracker:
    """Every command in flight, by id; owners find theirs by ``(owner, key)``."""

    def __init__(self, retries: int = 3, interval_s: float = 10.0, reply_timeout_s: float = 15.0) -> None:
        self.retries = retries
        self.interval_s = interval_s
        self.reply_timeout_s = reply_timeout_s
        self._ids = itertools.count(1)
        self._session = uuid.uuid4().hex[:6]  # ids never repeat across restarts (a late reply matches nothing)
        self._by_id: dict[str, Entry] = {}
        self._by_key: dict[tuple[str, str], Entry] = {}
        self._retrying: dict[int, Entry] = {}  #: entries waiting for their next try (few; a scan sends hundreds)
        self.outbox: list[tuple[str, Command]] = []
        self.gave_up: list[Entry] = []

    def send(self, owner: str, command: Command, now: float) -> None:
        """Queue ``command`` (replacing an earlier one of the same owner and key)."""
        entry = Entry(command, owner, errors=[])
        self._by_key[(owner, command.key or command.name)] = entry
        self._try(entry, now)

    def _try(self, entry: Entry, now: float) -> None:
        entry.tries += 1
        entry.sent_at, entry.next_at = now, None
        self._retrying.pop(id(entry), None)
        ident = f"burnin-{self._session}-{next(self._ids)}"
        self._by_id[ident] = entry
        self.outbox.append((ident, entry.command))

    def on_reply(self, ident: str, reply: Reply, now: float) -> Entry | None:
        entry = self._by_id.pop(ident, None)
        if entry is None or entry.status != Status.PENDING or entry.next_at is not None:
            return None
        entry.reply = reply
        if reply.ok:
            entry.status = Status.OK
        else:
            self._failed_try(entry, reply.error or "refused", now)
        return entry

    def _failed_try(self, entry: Entry, error: str, now: float) -> None:
        assert entry.errors is not None
        entry.errors.append(error)
        if entry.tries >= self.retries:
            entry.status = Status.FAILED
            self.gave_up.append(entry)
        else:
            entry.next_at = now + self.interval_s
            self._retrying[id(entry)] = entry

    def tick(self, now: float) -> None:
        """Retry what is due, time out what got no reply."""
        for ident, entry in list(self._by_id.items()):
            if entry.status == Status.PENDING and entry.next_at is None and now - entry.sent_at > self.reply_timeout_s:
                del self._by_id[ident]
                self._failed_try(entry, f"no reply within {self.reply_timeout_s:g} s", now)
        for entry in list(self._retrying.values()):
            current = self._by_key.get((entry.owner, entry.command.key or entry.command.name)) is entry
            if entry.status != Status.PENDING or entry.next_at is None or not current:  # done, or replaced
                self._retrying.pop(id(entry), None)
            elif now >= entry.next_at:
                self._try(entry, now)

    def next_due(self) -> float:
        """Engine time of the next retry or reply timeout (inf: none): when :meth:`tick` has work to do."""
        due = [e.next_at for e in self._retrying.values() if e.status == Status.PENDING and e.next_at is not None]
        due += [
            e.sent_at + self.reply_timeout_s
            for e in self._by_id.values()
            if e.status == Status.PENDING and e.next_at is None
        ]
        return min(due, default=float("inf"))

    def status(self, owner: str, key: str) -> Entry | None:
        return self._by_key.get((owner, key))

    def forget(self, owner: str) -> None:
        """Drop the bookkeeping of ``owner``'s finished commands (in-flight ones still complete)."""
        for k in [k for k, e in self._by_key.items() if k[0] == owner and e.status != Status.PENDING]:
            del self._by_key[k]

    def drain(self) -> list[tuple[str, Command]]:
        out, self.outbox = self.outbox, []
        return out
