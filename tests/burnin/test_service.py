"""The burn-in service on a real Mosquitto: commands, refusals, retained status, and coming back PAUSED after
a crash without commanding anything. (No device services run here: start is refused for that reason, which
is itself specified below; the whole stack runs in test_stack_runs.py and test_stack_faults.py.)"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from burnin.app import BurninApp
from burnin.engine import Engine
from burnin.journal import Journal
from burnin.recipe import load_recipe
from burnin.settings import parse_settings
from trackerdcs.client import CommandFailed

from .conftest import RECIPES
from .journaled import journal_until
from .stand import Stand, pump


def settings_for(tmp: Path, **extra):
    recipes = tmp / "recipes"
    if not recipes.exists():
        shutil.copytree(RECIPES, recipes)
    return parse_settings(
        {
            "modules": {"module_0": {"hv_limit_v": 800}, "module_1": {"hv_limit_v": 800}},
            "state_dir": str(tmp / "state"),
            "archive_dir": str(tmp / "archive"),
            "spool_dir": str(tmp / "spool"),
            "recipes_dir": str(recipes),
            "mongo": {"uri": "mongomock://stand-in"},
            **extra,
        }
    )


@pytest.fixture
def app_factory(broker):
    apps: list[BurninApp] = []

    def make(settings):
        app = BurninApp(settings, broker.settings("burnin"))
        app.start()
        assert app.svc.wait_connected(10)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.stop()


def test_plan_lists_recipes_and_expands_the_standard_burn_in(tmp_path, app_factory, operator):
    app_factory(settings_for(tmp_path))
    assert {"standard-burnin", "sim-short"} <= set(operator.command("burnin", "recipes")["result"]["recipes"])
    plan = operator.command("burnin", "plan", recipe="standard-burnin")["result"]
    assert plan["steps"] == 127 and 30 * 3600 < plan["estimate_s"] < 48 * 3600
    assert plan["plan"][-1].startswith("estimated duration")


def test_bad_recipes_and_paths_are_refused_with_the_reason(tmp_path, app_factory, operator):
    settings = settings_for(tmp_path)
    (settings.recipes_dir / "bad.yml").write_text(
        "name: bad\nsteps:\n  - power: lv_on\n  - power: {action: lv_off, name: too early}\n  - power: hv_on\n"
    )
    app_factory(settings)
    with pytest.raises(CommandFailed) as exc:
        operator.command("burnin", "start", recipe="bad", operator="alice")
    assert "step 3 (power): field 'action': HV on where LV is off" in exc.value.reply["error"]
    with pytest.raises(CommandFailed, match="no path"):
        operator.command("burnin", "plan", recipe="../../etc/passwd")
    with pytest.raises(CommandFailed, match="no recipe 'nothing'"):
        operator.command("burnin", "plan", recipe="nothing")


def test_start_is_refused_while_the_device_services_are_offline(tmp_path, app_factory, operator, monitor):
    app_factory(settings_for(tmp_path))
    monitor.subscribe(["+/cmd/#"])
    with pytest.raises(CommandFailed, match="service caen is not online"):
        operator.command("burnin", "start", recipe="sim-short", operator="alice")
    status = operator.status("burnin")
    assert status["state"] == "IDLE"
    time.sleep(0.5)
    assert not [t for t in monitor.latest("+/cmd/#") if not t.startswith("burnin/")], "nothing was commanded"


def test_after_a_crash_it_comes_back_paused_at_the_interrupted_step_and_commands_nothing(
    tmp_path, app_factory, operator, monitor
):
    settings = settings_for(tmp_path)
    # A burn-in ran until the middle of its IV scan, then the process died: its journal is all that is left.
    stand, engine, journal = Stand(), Engine(settings), Journal(settings.state_dir)
    recipe = load_recipe((RECIPES / "sim-short.yml").read_text(), settings)
    engine.start(recipe, "stand-burnin-crashed", "alice", "night shift", 0.0, stand.world())
    while not (engine.status()["step_name"] == "IV scan warm" and stand.modules["module_0"].vmon > 30):
        stand.advance(0.25)
        engine.tick(stand.now, stand.world())
        for rec in engine.out.journal:
            journal.append(rec)
        engine.out.journal.clear()
        pump(engine, stand)
        assert stand.now < 3600
    journal.close()
    monitor.subscribe(["+/cmd/#", "burnin/status"])
    app_factory(settings)
    status = monitor.wait_for("burnin/status", lambda m: m.json().get("uid") == "stand-burnin-crashed", timeout=10)
    doc = status.json()
    assert doc["state"] == "PAUSED" and doc["step"] == 4 and doc["step_name"] == "IV scan warm"
    assert "resume to go on" in doc["message"]
    time.sleep(1.5)
    assert not [t for t in monitor.latest("+/cmd/#") if not t.startswith("burnin/")], "nothing was commanded"
    history = operator.command("burnin", "status")["result"]["history"]
    assert [h["outcome"] for h in history] == ["done", "done", "done", "interrupted"]
    # resume is refused while the stand cannot be seen (no interlock status on this broker): never blind
    with pytest.raises(CommandFailed, match="interlock status is missing"):
        operator.command("burnin", "resume", operator="alice")
    stored = json.loads((settings.archive_dir / "stand-burnin-crashed" / "burnin.json").read_text())
    assert stored["state"] == "PAUSED" and stored["recipe"]["name"] == "sim-short"


def test_the_page_gets_every_step_with_its_outcome_and_each_modules_newest_iv_curve(tmp_path, app_factory, monitor):
    settings = settings_for(tmp_path)
    stand = Stand()
    stand.modules["module_1"].breakdown_v = 110.0
    engine, _ = journal_until(
        settings,
        (RECIPES / "sim-short.yml").read_text(),
        "stand-burnin-iv",
        lambda e, s: e.status()["step_name"] == "hold warm",
        stand,
    )
    scan = engine.results["iv_scan"][0]["modules"]
    monitor.subscribe(["burnin/status/#"])
    app = app_factory(settings)
    steps = monitor.wait_for("burnin/status/steps", lambda m: m.json().get("uid") == "stand-burnin-iv", timeout=10)
    listed = steps.json()["steps"]
    assert len(listed) == 11 and listed[3]["name"] == "IV scan warm"
    assert [s["outcome"] for s in listed] == ["done"] * 5 + ["paused"] + [None] * 5
    for module in ("module_0", "module_1"):
        curve = monitor.wait_for(f"burnin/status/iv/{module}", lambda m: bool(m.json().get("points")), timeout=10)
        doc = curve.json()
        assert doc["burnin"] == "stand-burnin-iv" and doc["step"] == 4 and doc["profile"] == "short"
        assert doc["outcome"] == scan[module]["outcome"]
        assert [(p["vmon"], p["imon"]) for p in doc["points"]] == [
            (p["vmon"], p["imon"]) for p in scan[module]["points"]
        ]
    stopped = monitor.wait_for("burnin/status/iv/module_1", lambda m: True).json()
    assert stopped["outcome"] == "compliance" and len(stopped["points"]) < len(scan["module_0"]["points"])
    # a restarted service with no burn-in in its journal still offers the newest archived curves
    app.stop()
    (settings.state_dir / "active.jsonl").unlink()
    doc = {**engine.results["iv_scan"][0], "ts": time.time()}  # archived as the service archives a scan
    app.store.save("iv_scans", "stand-burnin-iv/3/1", doc, Path("stand-burnin-iv") / "iv" / "0003-1.json")
    restarted = time.time()
    app_factory(settings)
    again = monitor.wait_for("burnin/status/iv/module_0", lambda m: m.json()["ts"] > restarted, 10).json()
    assert again["burnin"] == "stand-burnin-iv" and again["step"] == 4
    assert len(again["points"]) == len(scan["module_0"]["points"])


def test_dcs_burnin_plan_prints_the_expanded_steps(tmp_path, app_factory, broker, capsys):
    from trackerdcs.cli import main as dcs

    app_factory(settings_for(tmp_path))
    login = [
        "--host",
        "127.0.0.1",
        "--port",
        str(broker.port),
        "--user",
        "operator",
        "--password-file",
        str(broker.secrets_dir / "mqtt-operator"),
    ]
    assert dcs([*login, "burnin", "plan", "sim-short"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("recipe sim-short: 11 steps") and out[-1].startswith("estimated duration")
    assert any("IV scan warm" in line and "8 points to -200 V" in line for line in out)
    assert dcs([*login, "burnin", "plan", "nothing"]) == 1


def test_the_one_clock_runs_faster_with_time_scale():
    from burnin.app import Clock

    clock = Clock(50.0)
    t0, w0 = clock.now(), time.monotonic()
    time.sleep(0.2)
    assert clock.now() - t0 == pytest.approx((time.monotonic() - w0) * 50.0, rel=0.05)


def test_an_ended_burn_in_gets_its_window_of_time_series_in_its_archive(tmp_path, broker, monkeypatch):
    """The window is the burn-in's wall-clock span (engine time divided by the time scale); the Parquet bytes
    go to the archive and GridFS, and the final document says where (trackerdcs.runconditions does the export:
    tests/gateway/test_influx_tiers.py runs it on a real InfluxDB)."""
    import burnin.app as app_module
    from burnin.engine import Info
    from trackerdcs.runconditions import Conditions

    asked = []

    def fake_conditions(modules, start, stop):
        asked.append((list(modules), start, stop))
        return Conditions(b"PAR1 conditions PAR1", {"format": "parquet", "rows": 3})

    monkeypatch.setattr(app_module, "conditions_file", fake_conditions)
    app = BurninApp(settings_for(tmp_path, time_scale=10.0), broker.settings("burnin"))
    app.engine.info = Info(uid="stand-burnin-w", operator="op", start_t=100.0)
    app.engine.now = 100.0 + 3600.0  # one hour of engine time = 6 min of wall clock at time_scale 10
    app._save_conditions()
    app._conditions_thread.join(10)
    ((modules, start, stop),) = asked
    assert modules == [] and stop - start == pytest.approx(360.0, abs=1.0)  # no recipe loaded: the whole stand
    path = tmp_path / "archive" / "stand-burnin-w" / "conditions.parquet"
    assert path.read_bytes() == b"PAR1 conditions PAR1"
    doc = json.loads((tmp_path / "archive" / "stand-burnin-w" / "burnin.json").read_text())
    assert doc["conditions_file"] == {"format": "parquet", "rows": 3, "path": "stand-burnin-w/conditions.parquet",
                                      "stored": "mongo"}  # fmt: skip
    assert app.store.read_file("stand-burnin-w/conditions.parquet") == b"PAR1 conditions PAR1"
