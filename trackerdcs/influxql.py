"""A small InfluxDB 1.x HTTP client: InfluxQL ``/query`` (plain and chunked/streamed) and line-protocol ``/write``.

Plain ``urllib``, no SDK: the pinned InfluxDB 1.12 in the pod and the 1.6.7 stand-in here speak the same 1.x HTTP
API (``influxdb-client`` needs the 1.8+ compatibility API and is not used). Where InfluxDB is comes from the
environment: ``INFLUX_URL`` (default ``http://127.0.0.1:8086``), ``INFLUX_DB`` (``trackerdcs``), ``INFLUX_USER`` and
``INFLUX_PASSWORD`` (or ``INFLUX_PASSWORD_FILE``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class InfluxError(RuntimeError):
    """InfluxDB could not be reached or answered with an error; the message says which."""


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes (backslash-escaped ``"`` and backslash)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_str(value: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class InfluxClient:
    """Where one InfluxDB database is, and the calls trackerdcs needs."""

    url: str = "http://127.0.0.1:8086"
    db: str = "trackerdcs"
    user: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> InfluxClient:
        """A client for ``INFLUX_URL``/``INFLUX_DB``/``INFLUX_USER``/``INFLUX_PASSWORD[_FILE]``."""
        env = os.environ if env is None else env
        password = env.get("INFLUX_PASSWORD")
        if not password and env.get("INFLUX_PASSWORD_FILE"):
            password = Path(env["INFLUX_PASSWORD_FILE"]).read_text().strip()
        kw: dict[str, Any] = {
            "url": env.get("INFLUX_URL", "http://127.0.0.1:8086").rstrip("/"),
            "db": env.get("INFLUX_DB", "trackerdcs"),
            "user": env.get("INFLUX_USER") or None,
            "password": password or None,
        }
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    # ------------------------------------------------------------------ transport
    def _request(self, path: str, params: dict[str, str], data: bytes | None = None) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
        if self.user:
            token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace").strip()
            with contextlib.suppress(ValueError, AttributeError):
                body = json.loads(body).get("error", body)
            raise InfluxError(f"InfluxDB {path}: HTTP {exc.code}: {body}") from None
        except OSError as exc:
            raise InfluxError(f"InfluxDB at {self.url} unreachable: {exc}") from None

    def ping(self) -> bool:
        """True if InfluxDB answers ``/ping``."""
        try:
            with self._request("/ping", {}) as r:
                return r.status == 204
        except InfluxError:
            return False

    def query(self, q: str, *, db: str | None = None, write: bool = False, epoch: str = "ms") -> list[dict[str, Any]]:
        """Run InfluxQL ``q``; returns the ``results`` list. Raises InfluxError on any statement error.

        ``write`` sends it as POST (needed for CREATE/ALTER/DROP)."""
        params = {"q": q, "epoch": epoch}
        if db or self.db:
            params["db"] = db or self.db
        if write:
            with self._request("/query", {}, data=urllib.parse.urlencode(params).encode()) as r:
                body = json.loads(r.read())
        else:
            with self._request("/query", params) as r:
                body = json.loads(r.read())
        if "error" in body:
            raise InfluxError(f"InfluxDB query failed: {body['error']}")
        results = body.get("results", [])
        for res in results:
            if "error" in res:
                raise InfluxError(f"InfluxDB statement failed: {res['error']} (in: {q[:200]})")
        return results

    def stream(self, q: str, *, chunk_size: int = 10_000, db: str | None = None) -> Iterator[dict[str, Any]]:
        """Run a SELECT with ``chunked=true``: yields one series chunk at a time (``name``, ``tags``,
        ``columns``, ``values``), reading the answer line by line so that memory stays at one chunk."""
        params = {"q": q, "epoch": "ms", "chunked": "true", "chunk_size": str(chunk_size), "db": db or self.db}
        with self._request("/query", params) as r:
            for line in r:
                if not line.strip():
                    continue
                body = json.loads(line)
                if "error" in body:
                    raise InfluxError(f"InfluxDB query failed: {body['error']}")
                for res in body.get("results", []):
                    if "error" in res:
                        raise InfluxError(f"InfluxDB statement failed: {res['error']} (in: {q[:200]})")
                    yield from res.get("series", [])

    def write(self, lines: list[str] | str, *, rp: str | None = None, precision: str = "ms") -> None:
        """Write line protocol (into ``rp``, default: the database's default retention policy)."""
        data = lines if isinstance(lines, str) else "\n".join(lines)
        params = {"db": self.db, "precision": precision}
        if rp:
            params["rp"] = rp
        with self._request("/write", params, data=data.encode()) as r:
            if r.status != 204:
                raise InfluxError(f"InfluxDB /write: HTTP {r.status}: {r.read()[:200]!r}")


def rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of every series in ``results`` as dicts (tags merged in)."""
    out = []
    for res in results:
        for series in res.get("series", []):
            tags = series.get("tags") or {}
            for values in series.get("values", []):
                out.append({**tags, **dict(zip(series["columns"], values, strict=False))})
    return out
