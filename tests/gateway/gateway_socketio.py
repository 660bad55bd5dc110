"""A minimal Engine.IO 4 / socket.io 5 client over HTTP long-polling, to talk to the dashboard like a browser does.

Enough to open a session, connect to the default namespace and emit events (``widget-action``): the tests use it
to show what an unauthenticated, a viewer's and an operator's connection can and cannot do, at the protocol level
rather than through a page.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

RECORD_SEPARATOR = "\x1e"  # between Engine.IO packets in one polling response


class HttpStatus(Exception):
    """The server answered with an HTTP error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status
        self.body = body


def http(method: str, url: str, body: str | None = None, authorization: str | None = None) -> tuple[int, str]:
    """One HTTP request; returns (status, body) for 2xx, raises :class:`HttpStatus` otherwise."""
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    if authorization:
        headers["Authorization"] = authorization
    data = body.encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise HttpStatus(exc.code, exc.read().decode("utf-8", "replace")) from None


class PollingSocket:
    """An Engine.IO session on ``<base>/dashboard/socket.io/`` using the polling transport only."""

    def __init__(self, base_url: str, authorization: str | None = None, path: str = "/dashboard/socket.io/") -> None:
        self.endpoint = f"{base_url}{path}?EIO=4&transport=polling"
        self.authorization = authorization
        self.sid: str | None = None
        self.namespace_sid: str | None = None

    def open(self) -> dict[str, Any]:
        """Engine.IO handshake: the server's "open" packet (``0{"sid": ...}``)."""
        _, body = http("GET", self.endpoint, authorization=self.authorization)
        if not body.startswith("0"):
            raise AssertionError(f"no Engine.IO open packet: {body[:200]}")
        handshake = json.loads(body[1:])
        self.sid = handshake["sid"]
        return handshake

    def post(self, packet: str) -> None:
        http("POST", f"{self.endpoint}&sid={self.sid}", body=packet, authorization=self.authorization)

    def poll(self) -> list[str]:
        """The packets the server has for us (blocks until it has some, up to its ping interval)."""
        _, body = http("GET", f"{self.endpoint}&sid={self.sid}", authorization=self.authorization)
        return [p for p in body.split(RECORD_SEPARATOR) if p]

    def connect(self) -> str:
        """socket.io CONNECT to the default namespace; returns the socket's id."""
        self.post("40")
        for _ in range(5):
            for packet in self.poll():
                if packet.startswith("40"):
                    self.namespace_sid = json.loads(packet[2:])["sid"]
                    return self.namespace_sid
                if packet.startswith("44"):
                    raise AssertionError(f"namespace connection refused: {packet}")
        raise AssertionError("no socket.io CONNECT acknowledgement")

    def emit(self, event: str, *args: Any) -> None:
        """socket.io EVENT packet (``42["event", ...]``)."""
        self.post("42" + json.dumps([event, *args]))
