"""The operator UI users file (trackerdcs_ops/uiusers.py): what node-red/auth/uiauth.js reads, and dcs-ui-user."""

from __future__ import annotations

import io
import stat

import pytest

from trackerdcs_ops import uiusers


def test_a_password_checks_against_its_hash_and_nothing_else():
    hashed = uiusers.hash_password("correct horse")
    assert hashed.startswith("scrypt:16384:8:1:")
    assert uiusers.check_password("correct horse", hashed)
    assert not uiusers.check_password("correct hors", hashed)
    assert not uiusers.check_password("correct horse", "scrypt:broken")
    assert uiusers.hash_password("correct horse") != hashed  # a fresh salt each time


def test_the_file_refuses_unknown_roles_and_bad_names_naming_the_line():
    with pytest.raises(ValueError, match="line 2"):
        uiusers.parse("# comment\nalice boss scrypt:1\n")
    with pytest.raises(ValueError, match="bad user name"):
        uiusers.add(None, "../alice", "operator", "long enough")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shorter than 8"):
        uiusers.add(None, "alice", "operator", "short")  # type: ignore[arg-type]


def test_dcs_ui_user_adds_changes_lists_and_removes_people(tmp_path, monkeypatch, capsys):
    users = tmp_path / "ui-users"
    monkeypatch.setattr("sys.stdin", io.StringIO("alice-password\n"))
    assert uiusers.main(["--file", str(users), "add", "alice", "operator", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("bob-password\n"))
    assert uiusers.main(["--file", str(users), "add", "bob", "viewer", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("alice-new-password\n"))
    assert uiusers.main(["--file", str(users), "add", "alice", "expert", "--password-stdin"]) == 0
    table = uiusers.parse(users.read_text())
    assert {name: role for name, (role, _) in table.items()} == {"alice": "expert", "bob": "viewer"}
    assert uiusers.check_password("alice-new-password", table["alice"][1])
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    capsys.readouterr()
    assert uiusers.main(["--file", str(users), "list"]) == 0
    assert "alice" in capsys.readouterr().out
    assert uiusers.main(["--file", str(users), "remove", "bob"]) == 0
    assert uiusers.main(["--file", str(users), "remove", "bob"]) == 1
    assert list(uiusers.parse(users.read_text())) == ["alice"]


def test_the_simulation_stack_makes_one_login_per_role_and_keeps_them(tmp_path):
    path = uiusers.ensure_sim_users(tmp_path)
    first = path.read_text()
    table = uiusers.parse(first)
    assert {name: role for name, (role, _) in table.items()} == uiusers.SIM_USERS
    for name, (_, hashed) in table.items():
        assert uiusers.check_password((tmp_path / f"ui-{name}").read_text().strip(), hashed)
    assert uiusers.ensure_sim_users(tmp_path).read_text() == first  # a restart keeps the operator's passwords
