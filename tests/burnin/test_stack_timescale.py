"""The time-scaled simulation stack (``dcs-sim --time-scale``): the box is humid when the burn-in starts and dries
under dry air on the simulators' clock; the sequencer, on the same clock, holds a cold step at dew point +
margin until the air is dry enough, then goes on by itself. No special code path: one clock, scaled."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from burnin.world import dew_point
from trackerdcs.client import DcsClient
from trackerdcs.config import MqttSettings, load_yaml
from trackerdcs_devstack.localbroker import free_port

from .stack_harness import STACK_MARKS

pytestmark = [*STACK_MARKS, pytest.mark.serial]

SCALE = 50.0
RECIPE = """name: dew-hold
description: one cold step that the dew point must hold until the box is dry
steps:
  - chiller: {action: start, name: start chiller}
  - temperature: {target: -20, sensor: bath, tolerance: 1, stable_for: 30s, timeout: 4h, name: cold}
"""


def burnin_config(var: Path) -> Path:
    recipes = var / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    (recipes / "dew-hold.yml").write_text(RECIPE)
    cfg = var / "burnin-test.yml"
    cfg.write_text(
        "mqtt: {username: burnin, client_id: burnin-sim}\n"
        "stand: timescale\n"
        "modules: {module_0: {}, module_1: {}, module_2: {}}\n"
        "humidity_sensors: [box]\n"
        "limits: {setpoint_min: -40, setpoint_max: 40, dewpoint_margin_k: 5}\n"
        "retry_interval_s: 2\n"
        f"state_dir: {var / 'b/state'}\narchive_dir: {var / 'b/archive'}\nspool_dir: {var / 'b/spool'}\n"
        f"recipes_dir: {recipes}\n"
        "mongo: {uri: ''}\n"
        "time_scale: ${BURNIN_TIME_SCALE:-1}\n"
    )
    return cfg


def test_a_cold_step_holds_at_dew_point_plus_margin_until_the_dry_air_arrives(tmp_path, sim_stack_launcher: Any):
    var = tmp_path / "stack"
    var.mkdir()
    args = (
        "--node-red-port", str(free_port()), "--time-scale", f"{SCALE:g}", "--humidity", "30",
        "--burnin-config", str(burnin_config(tmp_path)),
    )  # fmt: skip
    with sim_stack_launcher(var, *args, timeout=180, expect="Operator UI"):
        dcs = DcsClient(MqttSettings.from_config(load_yaml(var / "dcs.yml")["mqtt"], env={})).connect()
        try:
            dcs.subscribe(["env/box"])
            dcs.wait_for("burnin/availability", lambda m: m.payload == b"online", timeout=60)
            dcs.command("julabo", "start")
            dcs.wait_for("julabo/status", lambda m: m.json()["state"] == "RUNNING", timeout=30)
            dcs.wait_for(
                "interlock/status",
                lambda m: not m.json()["conditions"] and not m.json()["lv_off_pending"],
                timeout=120,
            )
            if dcs.status("interlock")["state"] != "OK":
                dcs.command("interlock", "acknowledge", operator="pytest")
            dcs.command("burnin", "start", recipe="dew-hold", operator="pytest")
            held: list[dict] = []
            deadline = time.time() + 240
            while time.time() < deadline:
                st = dcs.command("burnin", "status")["result"]
                if st["state"] == "HOLDING":
                    assert st["hold_auto"] is True and "waiting for dry air" in st["message"], st
                    air = dcs.latest("env/box").get("env/box")
                    jul = dcs.status("julabo")
                    if air is not None:
                        doc = air.json()
                        floor = dew_point(doc["temperature"], doc["humidity"]) + 5.0
                        held.append({"setpoint": jul["setpoint"], "floor": floor, "rh": doc["humidity"]})
                if st["state"] in ("DONE", "ABORTED", "FAILED"):
                    break
                time.sleep(0.3)
            assert st["state"] == "DONE", st
            # it waited (the box started at 30 %RH: dew point about 2 C, so no setpoint below about 7 C) ...
            assert len(held) >= 3, held
            # ... never with the setpoint below dew point + margin (0.5 K steps, a reading's worth of lag) ...
            assert all(h["setpoint"] >= h["floor"] - 1.0 for h in held), held
            # ... and the setpoint came down as the air dried
            assert held[-1]["setpoint"] < held[0]["setpoint"] - 5.0 and held[-1]["rh"] < held[0]["rh"], held
        finally:
            dcs.close()
