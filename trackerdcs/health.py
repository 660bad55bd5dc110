"""Process health figures published retained on ``<svc>/health``."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psutil


@dataclass
class RateCounter:
    """Counts events and reports a rate over a sliding window."""

    window_s: float = 60.0
    total: int = 0
    _stamps: deque[float] = field(default_factory=deque)

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.total += 1
        self._stamps.append(now)
        self._trim(now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._trim(now)
        return len(self._stamps) / self.window_s

    def _trim(self, now: float) -> None:
        while self._stamps and now - self._stamps[0] > self.window_s:
            self._stamps.popleft()
        while len(self._stamps) > 100_000:
            self._stamps.popleft()


class HealthMonitor:
    """Keeps the counters a service reports about itself and renders the health snapshot."""

    def __init__(self, service: str, version: str) -> None:
        self.service = service
        self.version = version
        self.started = time.time()
        self._proc = psutil.Process(os.getpid())
        self._proc.cpu_percent(None)
        self._lock = threading.Lock()
        self.messages_in = RateCounter()
        self.messages_out = RateCounter()
        self.commands_ok = 0
        self.commands_failed = 0
        self.reconnects = 0
        self.publish_failures = 0
        self.queues: dict[str, int] = {}
        self.last_error: str | None = None
        self.last_error_ts: float | None = None
        self.extra: dict[str, Any] = {}

    def error(self, message: str) -> None:
        with self._lock:
            self.last_error = message[:500]
            self.last_error_ts = time.time()

    def snapshot(self) -> dict[str, Any]:
        """The health document: version, host, uptime, CPU, memory, counters and rates."""
        with self._lock:
            mem = self._proc.memory_info()
            return {
                **self.extra,  # first: a service's own figures never shadow the contract fields below
                "service": self.service,
                "version": self.version,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 1),
                "cpu_percent": round(self._proc.cpu_percent(None), 1),
                "rss_mb": round(mem.rss / 1e6, 1),
                "threads": self._proc.num_threads(),
                "mqtt_reconnects": self.reconnects,
                "publish_failures": self.publish_failures,
                **self.queues,
                "commands_ok": self.commands_ok,
                "commands_failed": self.commands_failed,
                "msgs_in_per_s": round(self.messages_in.rate(), 2),
                "msgs_out_per_s": round(self.messages_out.rate(), 2),
                "last_error": self.last_error,
                "last_error_ts": self.last_error_ts,
                "ts": time.time(),
            }
