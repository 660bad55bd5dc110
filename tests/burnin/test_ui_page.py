"""The operator UI's burn-in page (/dashboard/burnin): the real burn-in service, restored from the journal of a
burn-in that ran on the test stand through its IV scan, publishes to a real Mosquitto; the real Node-RED with
flows.json serves the page; headless Chromium renders it. The DOM must show the service's values: progress,
every step with its outcome, the events, and one IV curve per module whose points are the scan's readings.
A second Chromium, driven over the DevTools protocol (node-red/test/page-driver.js), presses the page's
buttons: an abort cancelled at the confirmation sends nothing, a confirmed skip reaches the service.

The IV points come from the engine specifications' test stand (tests/burnin/stand.py: a square-root rise to
100 V, then flat, steep above a module's breakdown voltage), not from caen-sim; the whole simulation stack runs
in test_stack_*.py."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from burnin.app import BurninApp
from trackerdcs_devstack.localbroker import free_port, wait_port
from trackerdcs_devstack.supervisor import stop_process

from .conftest import RECIPES, ROOT
from .journaled import journal_until
from .stand import Mod, Stand
from .test_service import settings_for


def _load(name: str, path: Path):
    """A helper module of tests/gateway (plain modules found on sys.path there, not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


gateway = _load("gateway_nodered", ROOT / "tests" / "gateway" / "gateway_nodered.py")
DRIVER = ROOT / "node-red" / "test" / "page-driver.js"
ui = _load("operator_ui_chromium", ROOT / "tests" / "gateway" / "test_operator_ui.py")  # its chromium()

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(gateway.node_red_ready() is not None, reason=str(gateway.node_red_ready())),
    pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (scripts/setup-gateway.sh)"),
]


class Dom(HTMLParser):
    """Elements with their attributes (SVG elements inside ``<g data-module>`` also get ``module``), and the text
    of elements marked with ``data-field``."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.fields: dict[str, str] = {}
        self._open: list[tuple[str, str]] = []
        self._module = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "g" and "data-module" in a:
            self._module = a["data-module"]
        if self._module:
            a["module"] = self._module
        self.elements.append((tag, a))
        if "data-field" in a and tag not in ("svg", "input"):
            self._open.append((tag, a["data-field"]))
            self.fields.setdefault(a["data-field"], "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "g":
            self._module = ""
        if self._open and self._open[-1][0] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for _, name in self._open:
            self.fields[name] += data

    def text(self, name: str) -> str:
        return " ".join(self.fields.get(name, "").split())

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in want.items())]


@dataclass
class LeakierModule(Mod):
    """A module of the test stand with more leakage current (the picture then tells the modules apart)."""

    factor: float = 1.0

    def current(self) -> float:
        return super().current() * self.factor


@contextlib.contextmanager
def paused_burnin_page(broker, monitor, tmp_path: Path, uid: str) -> Iterator[dict[str, Any]]:
    """A ``sim-short`` burn-in ran on the test stand through its IV scan and was cut off at "hold warm"; Node-RED
    runs, then the real burn-in service starts from the journal (PAUSED at step 6) and publishes."""
    settings = settings_for(tmp_path)
    stand = Stand(now=time.time() - 1200.0)  # the burn-in began 20 min ago on the wall clock
    stand.modules["module_1"] = LeakierModule(factor=1.8, breakdown_v=135.0)  # breaks down before -150 V
    engine, _ = journal_until(
        settings,
        (RECIPES / "sim-short.yml").read_text(),
        uid,
        lambda e, s: e.status()["step_name"] == "hold warm",
        stand,
    )
    scan = engine.results["iv_scan"][0]["modules"]
    assert scan["module_0"]["outcome"] == "done" and scan["module_1"]["outcome"] == "breakdown"
    nr = gateway.NodeRed(broker, tmp_path / "nr", client_id=f"nr-test-{uid}")
    nr.start()
    app = None
    try:
        # Node-RED is subscribed once its broker node announced itself (birth message)
        monitor.wait_for("interlock/availability", lambda m: m.payload == b"online", timeout=30)
        app = BurninApp(settings, broker.settings("burnin"))
        app.start()
        assert app.svc.wait_connected(10)
        status = monitor.wait_for("burnin/status", lambda m: m.json().get("uid") == uid, 10).json()
        seen = time.monotonic()
        monitor.wait_for("burnin/status/iv/module_1", lambda m: m.json().get("burnin") == uid, 10)
        time.sleep(1.5)  # the model reaches the widgets (at most every 200 ms)
        login = {name: f"http://{name}:{nr.ui_passwords[name]}@127.0.0.1:{nr.port}/dashboard/burnin" for name in
                 nr.ui_passwords}  # fmt: skip
        yield {"url": login["alice"], "viewer_url": login["victor"], "status": status, "seen": seen, "scan": scan,
               "app": app}  # fmt: skip
    finally:
        if app is not None:
            app.stop()
        nr.stop()


def test_burnin_page_shows_progress_steps_events_and_the_iv_curves_the_service_publishes(
    broker, monitor, tmp_path, artifacts
):
    with paused_burnin_page(broker, monitor, tmp_path, "stand-1-burnin-ui") as run:
        status, scan, url = run["status"], run["scan"], run["url"]
        shot = artifacts / "burnin-ui.png"
        ui.chromium([f"--screenshot={shot}", "--window-size=1400,980"], tmp_path / "chromium-shot", url)
        dom = ui.chromium(["--dump-dom"], tmp_path / "chromium-dom", url).stdout
        rendered = time.monotonic() - run["seen"]
        viewer_dom = ui.chromium(["--dump-dom"], tmp_path / "chromium-viewer", run["viewer_url"]).stdout
    page = Dom(dom)
    # alice (operator) has the controls; victor (viewer) sees the same page without them
    assert "Skip step" in dom and "Pause" in dom
    assert "step 6/11" in viewer_dom and "Skip step" not in viewer_dom and "Abort" not in viewer_dom

    # progress: state, step i/N and name, cycle, elapsed, ETA, the last message
    assert status["state"] == "PAUSED" and status["step"] == 6
    assert page.text("burnin-state") == "PAUSED"
    assert page.text("burnin-uid") == "stand-1-burnin-ui"
    assert page.text("burnin-step") == "step 6/11"
    assert page.text("burnin-step-name") == "hold warm"
    assert page.text("burnin-cycle") == f"{status['cycle']}/{status['cycles']}"
    h, m, s = (int(x) for x in page.text("burnin-elapsed").split(":"))
    assert status["elapsed_s"] - 1 <= h * 3600 + m * 60 + s <= status["elapsed_s"] + rendered + 1
    assert re.fullmatch(r"\d+:\d\d:\d\d", page.text("burnin-eta"))
    assert "resume to go on" in page.text("burnin-message")

    # every step with its outcome; the one the burn-in stands at is paused, the rest to come
    rows = page.find("tr")
    outcomes = {int(r["data-step"]): r["data-outcome"] for r in rows if "data-step" in r}
    assert outcomes == {**dict.fromkeys(range(1, 6), "done"), 6: "paused", **dict.fromkeys(range(7, 12), "pending")}
    assert "IV scan warm" in dom and "module test" in dom

    # the events the service sent after Node-RED subscribed (restored, paused)
    assert "restarted while RUNNING: paused at step 6/11 (hold warm)" in dom

    # one curve per module; its points are the scan's |VMon|, |IMon|, in order
    for module in ("module_0", "module_1"):
        kept = scan[module]["points"]
        (line,) = page.find("polyline", data_module=module)
        xy = [tuple(map(float, q.split(","))) for q in line["points"].split()]
        assert len(xy) == len(kept) >= 2
        assert all(b[0] > a[0] for a, b in itertools.pairwise(xy)), "|V| grows to the right"
        dots = [(float(a["data-v"]), float(a["data-i"])) for a in page.find("circle", module=module)]
        assert dots == [(pytest.approx(abs(p["vmon"])), pytest.approx(abs(p["imon"]))) for p in kept]
    higher = [float(q.split(",")[1]) for q in page.find("polyline", data_module="module_1")[0]["points"].split()]
    assert higher[-1] < higher[0], "the breaking-down module's last point is drawn highest (SVG y grows down)"
    assert page.find("tr", data_iv_module="module_1")
    assert shot.exists() and shot.stat().st_size > 20_000


def chromium_page(tmp_path: Path, url: str, steps: list[dict[str, Any]]) -> list[Any]:
    """Open ``url`` in headless Chromium and carry out ``steps`` on it (node-red/test/page-driver.js)."""
    port = free_port()
    proc = subprocess.Popen(
        ["chromium", *ui.CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-driven'}",
         f"--remote-debugging-port={port}", "--remote-allow-origins=*", "--window-size=1400,980", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_port("127.0.0.1", port, 20)
        done = subprocess.run(
            ["node", str(DRIVER), str(port), url, json.dumps(steps)],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=DRIVER.parent,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    finally:
        stop_process(proc)


def button(label: str) -> str:
    """JS: click the enabled button whose text starts with ``label``; true if there was one."""
    return (
        "(() => { const b = [...document.querySelectorAll('button')].find(x => "
        f"x.textContent.trim().startsWith({json.dumps(label)}) && !x.disabled); if (b) b.click(); return !!b; }})()"
    )


def text(field: str) -> str:
    """JS: the text of the element marked ``data-field=<field>`` ('' when there is none)."""
    return f"((document.querySelector('[data-field={field}]') || {{}}).textContent || '')"


def test_operator_skips_the_paused_step_from_the_page_after_confirming_and_an_abort_can_be_cancelled(
    broker, monitor, tmp_path
):
    monitor.subscribe(["burnin/cmd/#", "burnin/event"])
    uid = "stand-1-burnin-skip"
    with paused_burnin_page(broker, monitor, tmp_path, uid) as run:
        t0 = time.time()
        kept = chromium_page(
            tmp_path,
            run["url"],
            [
                {"wait": f"{text('burnin-step')}.includes('6/11')"},
                {"wait": button("Abort")},
                {"wait": f"{text('burnin-confirm')}.includes('Abort the burn-in?')"},
                {"wait": button("Cancel")},
                {"wait": "!document.querySelector('[data-field=burnin-confirm]')"},
                {"wait": button("Skip step")},
                {"wait": f"{text('burnin-confirm')}.includes('Skip step 6')"},
                {"wait": button("Skip it")},
                {"wait": f"{text('burnin-step')}.includes('7/11')"},
                {"wait": "!!document.querySelector('tr[data-step=\"6\"][data-outcome=skipped]')"},
                {"eval": text("burnin-step-name")},
            ],
        )
        status = run["app"].status()
    assert kept[-1].strip() == "cool"
    assert status["state"] == "PAUSED" and status["step"] == 7 and status["step_name"] == "cool"
    commands = [m for t, m in monitor.latest("burnin/cmd/#").items()]
    assert [m.topic for m in commands] == ["burnin/cmd/skip"], "the cancelled abort sent nothing"
    sent = commands[0].json()
    # in the logged-in person's name (set on the server by the command guard, not typed on the page)
    assert sent["operator"] == "alice" and sent["by"] == "alice" and sent["id"].startswith("ui-")
    assert commands[0].received > t0
    skipped = monitor.wait_for("burnin/event", lambda m: m.json()["kind"] == "step_skipped", 5).json()
    assert skipped["operator"] == "alice"
