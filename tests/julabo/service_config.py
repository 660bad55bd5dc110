"""The julabo-fsm configuration the tests run against a simulator: the default pacing, short timeouts and back-off."""

from __future__ import annotations


def julabo_config(connection: str, **overrides: object) -> dict:
    """A ``julabo:`` config section for ``connection`` (pty path or ``socket://``), with ``overrides``."""
    section = {
        "connection": connection,
        "model": "hightech",
        "limits": {"setpoint_min": -30.0, "setpoint_max": 40.0},
        "poll_interval_s": 0.5,
        "reply_timeout_s": 0.3,
        "max_missed": 3,
        "reconnect_min_s": 0.3,
        "reconnect_max_s": 1.0,
        **overrides,
    }
    return {"julabo": section}
