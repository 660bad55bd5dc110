"""The Ph2_ACF simulator is written from the facts alone: it imports nothing from any service package, so a
wrong constant in the bridge can never be wrong in the simulator too (issue 19, item 3)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ph2acf_sim

SERVICE_PACKAGES = ("ph2acf_bridge", "caen_fsm", "julabo_fsm")
SIM_DIR = Path(ph2acf_sim.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_simulator_module_names_a_service_package() -> None:
    modules = sorted(SIM_DIR.glob("*.py"))
    assert len(modules) >= 5
    offenders = {p.name: sorted(m for m in imported_modules(p) if m.split(".")[0] in SERVICE_PACKAGES) for p in modules}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_loading_the_whole_simulator_loads_no_service_package() -> None:
    names = [f"ph2acf_sim.{p.stem}" for p in SIM_DIR.glob("*.py") if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SERVICE_PACKAGES!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
