"""Each image carries what it runs, and every dependency is used.

pyproject.toml declares the core dependencies (every image: the runtime package ``trackerdcs``) and one
optional-dependency set per image, named like the image (``caen-fsm``, ``caen-sim``, ...; deploy/build-images
installs exactly that set). Read from the source with ``ast`` (function-level imports included):
- every third-party module a package imports is declared for its image (else the image fails at run time);
- every declared distribution is imported by the package(s) of its set (else it is dead weight in an image);
- the runtime package imports nothing from the development stack or the operations tooling.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

#: the importable top-level modules of each distribution we declare
MODULES_OF = {
    "paho-mqtt": {"paho"},
    "pyyaml": {"yaml"},
    "transitions": {"transitions"},
    "psutil": {"psutil"},
    "pyepics": {"epics"},
    "softioc": {"softioc"},
    "pyserial": {"serial"},
    "pymongo": {"pymongo", "gridfs", "bson"},
    "uproot": {"uproot"},
    "numpy": {"numpy"},
    "pydantic": {"pydantic"},
    "pyarrow": {"pyarrow"},
    "pandas": {"pandas"},
}
#: image (optional-dependency set) -> the packages it runs, besides the core package ``trackerdcs``
IMAGES = {
    "caen-fsm": ["services/caen-fsm/caen_fsm"],
    "caen-sim": ["services/caen-fsm/caen_sim"],
    "julabo-fsm": ["services/julabo-fsm/julabo_fsm"],
    "julabo-sim": ["services/julabo-fsm/julabo_sim"],
    "ph2acf-bridge": ["services/ph2acf-bridge/ph2acf_bridge"],
    "ph2acf-sim": ["services/ph2acf-bridge/ph2acf_sim"],
    "burnin": ["services/burnin/burnin"],
    "env-sim": ["services/env-sim/env_sim"],
}
FIRST_PARTY = {"trackerdcs", "caen_fsm", "caen_sim", "julabo_fsm", "julabo_sim", "ph2acf_bridge", "ph2acf_sim",
               "burnin", "env_sim"}  # fmt: skip
TOOLING = {"trackerdcs_devstack", "trackerdcs_ops"}
#: imported lazily, only when a test selects them: never in an image
TEST_STANDINS = {"mongomock": "the in-process MongoDB stand-in behind mongomock:// URIs (tests, demos)"}


def _name(requirement: str) -> str:
    for sep in "<>=!~[; ":
        requirement = requirement.split(sep)[0]
    return requirement.strip().lower()


def imported_top_modules_of_file(path: Path) -> set[str]:
    """Top-level names of every absolute import in one Python file (function bodies included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def imported_top_modules(folder: Path) -> set[str]:
    """Top-level names of every absolute import in the Python files under ``folder``."""
    return set().union(*(imported_top_modules_of_file(p) for p in folder.rglob("*.py")))


def third_party(names: set[str]) -> set[str]:
    ours = FIRST_PARTY | TOOLING | TEST_STANDINS.keys() | {"__future__"}
    return {n for n in names if n not in sys.stdlib_module_names and n not in ours}


def declared(image: str | None) -> set[str]:
    reqs = PYPROJECT["dependencies"] if image is None else PYPROJECT["optional-dependencies"][image]
    return {_name(r) for r in reqs}


def modules(dists: set[str]) -> set[str]:
    unknown = dists - MODULES_OF.keys()
    assert not unknown, f"add the import names of {sorted(unknown)} to MODULES_OF"
    return set().union(*(MODULES_OF[d] for d in dists)) if dists else set()


CORE = imported_top_modules(REPO / "trackerdcs")


def test_every_image_set_is_declared_and_named_after_an_image() -> None:
    # "analysis" is not an image: pandas for trackerdcs.export.export_frame, on an analysis machine
    assert set(PYPROJECT["optional-dependencies"]) - {"all", "test", "analysis"} == set(IMAGES)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_an_image_declares_every_third_party_module_its_package_imports(image: str) -> None:
    used = set().union(*(imported_top_modules(REPO / p) for p in IMAGES[image]))
    missing = third_party(used) - modules(declared(image)) - modules(declared(None))
    assert not missing, f"{image} imports {sorted(missing)} but its set in pyproject.toml does not declare them"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_an_image_declares_nothing_its_package_does_not_import(image: str) -> None:
    used = set().union(*(imported_top_modules(REPO / p) for p in IMAGES[image]))
    unused = {d for d in declared(image) if not MODULES_OF[d] & used}
    assert not unused, f"{image} declares {sorted(unused)} but nothing in {IMAGES[image]} imports them"


def test_the_core_set_is_what_the_runtime_package_imports() -> None:
    core = declared(None)
    analysis = modules(declared("analysis"))  # imported inside export_frame only, never by an image's code path
    assert third_party(CORE) <= modules(core) | analysis, (
        f"trackerdcs imports undeclared {sorted(third_party(CORE) - modules(core) - analysis)}"
    )
    assert not (module_level_imports(REPO / "trackerdcs") & analysis), "pandas must stay a lazy import"
    unused = {d for d in core if not MODULES_OF[d] & CORE}
    assert not unused, f"core dependencies nothing in trackerdcs/ imports: {sorted(unused)}"


def module_level_imports(folder: Path) -> set[str]:
    """Top-level names imported by the module bodies (not inside functions) of the files under ``folder``."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_the_runtime_package_imports_no_tooling() -> None:
    """The images carry ``trackerdcs`` but not the development stack or the operations tooling. Only the ``dcs``
    front door reaches the operations tooling, lazily, for ``dcs backup``/``restore`` run from a checkout."""
    assert not (module_level_imports(REPO / "trackerdcs") & TOOLING)
    lazy = {p.name for p in (REPO / "trackerdcs").rglob("*.py") if TOOLING & imported_top_modules_of_file(p)}
    assert lazy <= {"cli.py"}, f"runtime modules reaching into the tooling: {sorted(lazy)}"
