"""The operations tools and the development stack work on a checkout, and say so when there is none.

They used to take the folder above their own file as the repository, which is wrong once the package is
installed (site-packages has no deploy/ or mosquitto/): now a folder counts only if it holds the marker files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trackerdcs_ops.checkout import MARKERS, CheckoutNotFound, find_checkout, is_checkout

pytestmark = pytest.mark.fast
REPO = Path(__file__).resolve().parents[2]


def test_the_checkout_of_this_clone_is_found_from_anywhere_inside_it() -> None:
    assert find_checkout(env={}, cwd=REPO / "services" / "caen-fsm") == REPO


def test_an_explicit_trackerdcs_repo_wins_and_must_be_a_checkout(tmp_path: Path) -> None:
    assert find_checkout(env={"TRACKERDCS_REPO": str(REPO)}, cwd=tmp_path) == REPO
    with pytest.raises(CheckoutNotFound, match="is not a trackerdcs checkout"):
        find_checkout(env={"TRACKERDCS_REPO": str(tmp_path)}, cwd=REPO)


def test_a_folder_without_the_marker_files_is_not_a_checkout(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'something-else'\n")
    assert not is_checkout(tmp_path)
    for marker in MARKERS:
        (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / marker).write_text("")
    assert is_checkout(tmp_path)
