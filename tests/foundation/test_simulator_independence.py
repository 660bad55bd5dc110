"""The device simulators are written from the device manuals alone: no simulator module imports anything from
a service package. A constant or a frame layout copied from the service would be wrong on both sides at once,
and every test that pits the service against the simulator would still pass.

Checked twice: statically (every ``import``/``from ... import`` anywhere in the source, function bodies
included, and ``importlib.import_module``/``__import__`` calls with a literal name), and dynamically (each
simulator package and all its modules imported in a fresh interpreter, then ``sys.modules`` inspected, which
also catches an import made by way of a third module).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = ("caen_fsm", "julabo_fsm", "ph2acf_bridge", "burnin")
SIMULATORS = {
    "caen_sim": REPO / "services" / "caen-fsm" / "caen_sim",
    "julabo_sim": REPO / "services" / "julabo-fsm" / "julabo_sim",
    "ph2acf_sim": REPO / "services" / "ph2acf-bridge" / "ph2acf_sim",
    "env_sim": REPO / "services" / "env-sim" / "env_sim",
}
#: simulators known to break the rule today, with the work that removes the import (strict: flips to XPASS)
KNOWN_OFFENDERS: dict[str, str] = {}  # caen_sim reads caen-fsm configs with its own reader since issue 19


def simulator_params() -> list[object]:
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_OFFENDERS[name]))
        if name in KNOWN_OFFENDERS
        else name
        for name in SIMULATORS
    ]


def _is_service(module: str) -> bool:
    return module.split(".")[0] in SERVICE_PACKAGES


def service_imports(source: str, filename: str) -> list[str]:
    """``line: module`` for every import of a service package in ``source``, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{node.lineno}: {name}" for name in names if _is_service(name)]
    return found


def test_the_static_check_sees_imports_anywhere_in_a_module():
    source = (
        "import os\n"
        "from julabo_fsm.protocol import XON\n"
        "def load():\n"
        "    import caen_fsm.config as c\n"
        "    return importlib.import_module('ph2acf_bridge.framing')\n"
        "from . import model\n"
        "import caen_fsm_like\n"
    )
    assert service_imports(source, "x.py") == [
        "2: julabo_fsm.protocol",
        "4: caen_fsm.config",
        "5: ph2acf_bridge.framing",
    ]


@pytest.mark.parametrize("simulator", simulator_params())
def test_no_simulator_module_imports_a_service_package(simulator):
    folder = SIMULATORS[simulator]
    files = sorted(folder.rglob("*.py"))
    assert files, f"no sources found for {simulator} in {folder}"
    offences = {
        str(path.relative_to(REPO)): hits for path in files if (hits := service_imports(path.read_text(), str(path)))
    }
    assert offences == {}, f"{simulator} imports service code: {offences}"


LOADER = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
modules = [package.__name__]
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
    modules.append(info.name)
print(json.dumps({"imported": modules, "loaded": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("simulator", list(SIMULATORS))
def test_importing_a_simulator_loads_no_service_package(simulator):
    out = subprocess.run(
        [sys.executable, "-c", LOADER, simulator], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["imported"]) >= 2, result["imported"]  # the package and its modules really were loaded
    assert [m for m in result["loaded"] if _is_service(m)] == [], f"{simulator} pulls in service code"
