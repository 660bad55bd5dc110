"""Where the trackerdcs checkout is.

The operations tools (manifests, ACL, backups) and the development stack work on the files of a checkout of the
repository (``deploy/``, ``mosquitto/``, the services' example configs), never on an installed copy of the
package. They find it here: ``$TRACKERDCS_REPO`` if set, else the checkout this module sits in (an editable
install), else the current directory or one of its parents. A folder counts only if it holds the marker files,
so a copy installed into site-packages is never mistaken for a checkout.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

MARKERS = ("deploy/pod.template.yml", "mosquitto/roles.json", "pyproject.toml")


class CheckoutNotFound(RuntimeError):
    """No trackerdcs checkout where one was looked for; the message says where and what to do."""


def is_checkout(path: Path) -> bool:
    """True if ``path`` is the top of a trackerdcs checkout."""
    return all((path / marker).is_file() for marker in MARKERS)


def _candidates(cwd: Path) -> list[Path]:
    here = Path(__file__).resolve()
    return [*here.parents, cwd, *cwd.parents]


def find_checkout(env: dict[str, str] | None = None, cwd: Path | None = None) -> Path:
    """The checkout's top folder, or raise :class:`CheckoutNotFound`."""
    env = dict(os.environ) if env is None else env
    explicit = env.get("TRACKERDCS_REPO")
    if explicit:
        path = Path(explicit).resolve()
        if not is_checkout(path):
            raise CheckoutNotFound(f"TRACKERDCS_REPO={explicit} is not a trackerdcs checkout (no {', '.join(MARKERS)})")
        return path
    cwd = (cwd or Path.cwd()).resolve()
    for path in _candidates(cwd):
        if is_checkout(path):
            return path
    raise CheckoutNotFound(
        f"no trackerdcs checkout around {Path(__file__).parent} or {cwd}: run from a clone of the repository "
        "or set TRACKERDCS_REPO to one"
    )


@cache
def checkout() -> Path:
    """:func:`find_checkout` for this process (looked up once)."""
    return find_checkout()


def mosquitto_users(repo: Path | None = None) -> list[str]:
    """The MQTT accounts declared in ``mosquitto/users`` (each gets a generated password)."""
    lines = ((repo or checkout()) / "mosquitto" / "users").read_text().splitlines()
    return [u.strip() for u in lines if u.strip() and not u.startswith("#")]
