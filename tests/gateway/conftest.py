"""Fixtures for the gateway tests: a real InfluxDB 1.x (Debian's influxd) on free loopback ports."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackerdcs_devstack.localbroker import free_port, wait_port
from trackerdcs_devstack.supervisor import stop_process

INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"


class Influx:
    """A running influxd with helpers for line-protocol writes and InfluxQL queries over HTTP."""

    def __init__(self, workdir: Path, extra_conf: str = "") -> None:
        self.workdir = workdir
        self.extra_conf = extra_conf  # e.g. a [retention] section (sections below replace the defaults)
        self.port = free_port()
        self.rpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / "influxdb.conf"
        conf.write_text(
            "\n".join(
                [
                    "reporting-disabled = true",
                    f'bind-address = "127.0.0.1:{self.rpc_port}"',
                    "[meta]",
                    f'  dir = "{self.workdir / "meta"}"',
                    "[data]",
                    f'  dir = "{self.workdir / "data"}"',
                    f'  wal-dir = "{self.workdir / "wal"}"',
                    "  query-log-enabled = false",
                    "[http]",
                    "  enabled = true",
                    f'  bind-address = "127.0.0.1:{self.port}"',
                    "  log-enabled = false",
                    "[monitor]",
                    "  store-enabled = false",
                    *(
                        ["[continuous_queries]", "  enabled = false"]
                        if "[continuous_queries]" not in self.extra_conf
                        else []
                    ),
                    "[subscriber]",
                    "  enabled = false",
                    self.extra_conf,
                    "",
                ]
            )
        )
        self.log = open(self.workdir / "influxd.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [INFLUXD, "-config", str(conf)], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_port("127.0.0.1", self.port, 20)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                    if r.status == 204:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("influxd did not answer /ping")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()

    def query(self, q: str, db: str | None = None, method: str = "GET") -> dict:
        params = {"q": q, "epoch": "ms"}
        if db:
            params["db"] = db
        data = None
        url = f"{self.url}/query"
        if method == "POST":
            data = urllib.parse.urlencode(params).encode()
        else:
            url += "?" + urllib.parse.urlencode(params)
        req = urllib.request.Request(url, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b'{"error": "http error"}')

    def write(self, db: str, lines: list[str]) -> None:
        req = urllib.request.Request(
            f"{self.url}/write?db={db}&precision=ms", data="\n".join(lines).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 204, r.read()


@pytest.fixture(scope="session")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    """A real InfluxDB 1.x on free loopback ports (HTTP and RPC), data in a temporary folder."""
    instance = Influx(tmp_path_factory.mktemp("influxdb"))
    instance.start()
    yield instance
    instance.stop()
