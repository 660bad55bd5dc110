"""The README's walk-through, line by line, as a newcomer types it into a second terminal while ``scripts/sim.sh``
runs: the whole simulation stack with Node-RED (interlocks), each line exactly as the README prints it (comments
stripped), each one expected to succeed before the next is typed. A line that only works after waiting by hand
(an LV ramp before hv_on) fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trackerdcs.client import DcsClient
from trackerdcs.config import MqttSettings, load_yaml
from trackerdcs_devstack.localbroker import REPO, free_port

README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (REPO / "node-red" / "node_modules" / "node-red").is_dir(),
        reason="Node-RED not installed (scripts/setup.sh)",
    ),
]


def walkthrough_lines(text: str) -> list[str]:
    """The commands of the README's code block that follows "in another terminal", comments stripped."""
    after = text.split("in another terminal", 1)[1]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    assert block, "README: no sh block after 'in another terminal'"
    lines = [re.split(r"\s+#\s", line, maxsplit=1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_walkthrough_block_is_found_and_waits_where_it_must():
    lines = walkthrough_lines(README.read_text())
    assert lines[0].startswith("export DCS_CONFIG=")
    assert any(line.startswith("dcs caen lv_on") and "--wait" in line for line in lines)
    assert lines.index(next(x for x in lines if x.startswith("dcs caen lv_on"))) < lines.index(
        next(x for x in lines if x.startswith("dcs caen hv_on"))
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sim_stack_launcher):
    var = tmp_path_factory.mktemp("readme")
    args = ("--node-red-port", str(free_port()), "--time-scale", "10")  # the same commands, a faster world
    with sim_stack_launcher(var, *args, timeout=180, expect="Operator UI") as (_proc, banner):
        yield var, banner


def test_every_line_of_the_readme_walkthrough_succeeds_in_order(stack, artifacts):
    var, banner = stack
    # the README's export line, as the banner of this stack prints it (its own var folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DCS_")}
    env.update(DCS_CONFIG=str(var / "dcs.yml"), PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
    assert "export DCS_CONFIG=" in banner
    # The one wait a person makes without being told: opening the second terminal. The stack starts with the
    # chiller stopped, so the interlock trips at once and switches LV off 10 s later (INTERLOCK_LV_OFF_DELAY_S);
    # an acknowledgement before that is refused with exactly that reason (the README says so).
    with DcsClient(MqttSettings.from_config(load_yaml(var / "dcs.yml")["mqtt"], env={})) as dcs:
        dcs.wait_for("interlock/status", lambda m: m.json().get("lv_off_pending") is False, timeout=60)
    transcript: list[str] = []
    for line in walkthrough_lines(README.read_text())[1:]:
        started = time.monotonic()
        proc = subprocess.run(
            ["bash", "-c", line], env=env, cwd=REPO, capture_output=True, text=True, timeout=900, check=False
        )
        transcript.append(
            f"$ {line}    # exit {proc.returncode} after {time.monotonic() - started:.1f} s\n{proc.stdout}{proc.stderr}"
        )
        (artifacts / "readme-walkthrough.txt").write_text("\n".join(transcript))
        assert proc.returncode == 0, "\n".join(transcript[-3:])
    assert "done: module_0 HV_ON" in "\n".join(transcript)
