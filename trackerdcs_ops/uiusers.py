"""Operator UI logins: the users file Node-RED reads (``NODE_RED_UI_USERS``), one person per line.

Each line is ``<name> <role> scrypt:<N>:<r>:<p>:<salt>:<key>`` (role viewer, operator or expert; salt and key
base64); node-red/auth/uiauth.js checks passwords against it. Nothing here is secret by itself, but the file
is kept with the other secrets (mode 0600)::

    dcs-ui-user add alice operator --file /etc/trackerdcs/secrets/nodered-ui-users   # asks for the password
    dcs-ui-user remove alice --file ...
    dcs-ui-user list --file ...

The simulation stack writes its file with :func:`ensure_sim_users` (passwords generated, one file each).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import os
import re
import secrets
import sys
from pathlib import Path

ROLES = ("viewer", "operator", "expert")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: scrypt cost: about 50 ms per check, 16 MiB of memory
SCRYPT_N, SCRYPT_R, SCRYPT_P = 16384, 8, 1
#: accounts the simulation stack creates (name -> role)
SIM_USERS = {"operator": "operator", "viewer": "viewer", "expert": "expert"}


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The ``scrypt:...`` string for ``password`` (a fresh random salt unless given)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:{b64(salt)}:{b64(key)}"


def check_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches a ``scrypt:...`` string (the same check as uiauth.js)."""
    try:
        _, n, r, p, salt, key = hashed.split(":")
        want = base64.b64decode(key)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(want),
            maxmem=256 * int(n) * int(r) + 1024 * 1024,
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return secrets.compare_digest(got, want)


def parse(text: str) -> dict[str, tuple[str, str]]:
    """name -> (role, hash) of a users file; raises ValueError naming the first bad line."""
    users: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or not NAME_RE.match(parts[0]) or parts[1] not in ROLES:
            raise ValueError(f"line {number}: expected '<name> <viewer|operator|expert> <hash>'")
        users[parts[0]] = (parts[1], parts[2])
    return users


def render(users: dict[str, tuple[str, str]]) -> str:
    """The users file's text (sorted by name)."""
    head = "# trackerdcs operator UI logins: <name> <role> <scrypt hash>; edit with dcs-ui-user (docs/security.md)\n"
    return head + "".join(f"{name} {role} {hashed}\n" for name, (role, hashed) in sorted(users.items()))


def write(path: Path, users: dict[str, tuple[str, str]]) -> None:
    """Write the users file atomically with mode 0600."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(render(users))
    os.replace(tmp, path)


def add(path: Path, name: str, role: str, password: str) -> None:
    """Add or replace one user in the file at ``path`` (created if missing)."""
    if not NAME_RE.match(name):
        raise ValueError(f"bad user name {name!r}: letters, digits, '.', '_', '-' (up to 64)")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if len(password) < 8:
        raise ValueError("password shorter than 8 characters")
    path = Path(path)
    users = parse(path.read_text()) if path.exists() else {}
    users[name] = (role, hash_password(password))
    write(path, users)


def ensure_sim_users(secrets_dir: Path) -> Path:
    """``<secrets>/node-red-ui-users`` with the :data:`SIM_USERS`, passwords in ``<secrets>/ui-<name>``.

    Existing password files are kept (so the operator's saved password keeps working)."""
    secrets_dir = Path(secrets_dir)
    path = secrets_dir / "node-red-ui-users"
    users = parse(path.read_text()) if path.exists() else {}
    changed = False
    for name, role in SIM_USERS.items():
        pw_file = secrets_dir / f"ui-{name}"
        if not pw_file.exists():
            fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.b32encode(os.urandom(15)).decode().lower() + "\n")
        password = pw_file.read_text().strip()
        if name not in users or users[name][0] != role or not check_password(password, users[name][1]):
            users[name] = (role, hash_password(password))
            changed = True
    if changed or not path.exists():
        write(path, users)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dcs-ui-user", description="manage operator UI logins (docs/security.md)")
    parser.add_argument("--file", required=True, help="the users file (NODE_RED_UI_USERS_FILE)")
    sub = parser.add_subparsers(dest="action", required=True)
    p_add = sub.add_parser("add", help="add a user or set a new password/role")
    p_add.add_argument("name")
    p_add.add_argument("role", choices=ROLES)
    p_add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p_rm = sub.add_parser("remove", help="remove a user")
    p_rm.add_argument("name")
    sub.add_parser("list", help="names and roles")
    args = parser.parse_args(argv)
    path = Path(args.file)
    try:
        if args.action == "add":
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\r\n")
            else:
                password = getpass.getpass(f"password for {args.name}: ")
                if getpass.getpass("again: ") != password:
                    print("dcs-ui-user: passwords differ", file=sys.stderr)
                    return 1
            add(path, args.name, args.role, password)
            print(f"{args.name} ({args.role}) written to {path}; restart Node-RED (or the pod) to apply")
        elif args.action == "remove":
            users = parse(path.read_text())
            if users.pop(args.name, None) is None:
                print(f"dcs-ui-user: no user {args.name} in {path}", file=sys.stderr)
                return 1
            write(path, users)
            print(f"{args.name} removed from {path}; restart Node-RED (or the pod) to apply")
        else:
            for name, (role, _) in sorted(parse(path.read_text()).items()):
                print(f"{name:20} {role}")
    except (OSError, ValueError) as exc:
        print(f"dcs-ui-user: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
