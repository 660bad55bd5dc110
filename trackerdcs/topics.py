"""The MQTT topic layout every trackerdcs service follows (see docs/mqtt-api.md)."""

from __future__ import annotations

from dataclasses import dataclass

ONLINE = "online"
OFFLINE = "offline"
REPLY_PREFIX = "dcs/reply"


@dataclass(frozen=True)
class Topics:
    """Topic names under one service root, e.g. ``Topics("caen")``."""

    root: str

    def __post_init__(self) -> None:
        if not self.root or any(c in self.root for c in "+#") or self.root.startswith("/"):
            raise ValueError(f"invalid topic root {self.root!r}")

    @property
    def availability(self) -> str:
        return f"{self.root}/availability"

    @property
    def health(self) -> str:
        return f"{self.root}/health"

    @property
    def reply(self) -> str:
        return f"{self.root}/reply"

    @property
    def event(self) -> str:
        return f"{self.root}/event"

    @property
    def commands(self) -> str:
        """The retained command table: every command, its arguments and what "done" means for it."""
        return f"{self.root}/commands"

    @property
    def command_filter(self) -> str:
        return f"{self.root}/cmd/+"

    def command(self, name: str) -> str:
        return f"{self.root}/cmd/{name}"

    def status(self, sub: str | None = None) -> str:
        return f"{self.root}/status" if not sub else f"{self.root}/status/{sub}"

    def command_name(self, topic: str) -> str | None:
        """The command named by ``topic``, or None if it is not one of this root's command topics."""
        prefix = f"{self.root}/cmd/"
        if topic.startswith(prefix) and "/" not in topic[len(prefix) :]:
            return topic[len(prefix) :]
        return None
