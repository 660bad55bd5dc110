"""A real Mosquitto on loopback with the project's ACL and generated passwords.

Used by the simulation stack (``dcs-sim``) and by the test fixtures. It runs the ``mosquitto`` binary
of the machine with the repository's ``mosquitto/acl`` and a password file made by
``mosquitto/make-passwd`` from secrets kept in ``secrets_dir`` (outside git).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from trackerdcs.config import MqttSettings
from trackerdcs_ops.checkout import checkout, mosquitto_users

from .supervisor import stop_process

REPO = checkout()
MOSQUITTO_DIR = REPO / "mosquitto"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


def users() -> list[str]:
    """The MQTT users declared in mosquitto/users."""
    return mosquitto_users(REPO)


class LocalBroker:
    """Mosquitto on 127.0.0.1 with authentication, the ACL and persistence in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        secrets_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """``tls``: (CA certificate, server certificate, server key) to serve MQTT over TLS only."""
        self.tls = tls
        self.workdir = Path(workdir)
        self.secrets_dir = Path(secrets_dir)
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"

    def prepare(self) -> None:
        """Write the config and the password file (generating missing passwords)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        passwd = self.workdir / "passwd"
        subprocess.run(
            [str(MOSQUITTO_DIR / "make-passwd"), str(self.secrets_dir), str(passwd)],
            check=True,
            capture_output=True,
        )
        self.conf.write_text(
            "\n".join(
                [
                    f"user {getpass.getuser()}",  # mosquitto started as root would otherwise drop to 'mosquitto'
                    "per_listener_settings false",
                    "allow_anonymous false",
                    f"password_file {passwd}",
                    f"acl_file {MOSQUITTO_DIR / 'acl'}",
                    "persistence true",
                    f"persistence_location {self.workdir / 'data'}/",
                    "autosave_interval 1",
                    "max_queued_messages 10000",
                    "set_tcp_nodelay true",
                    "max_inflight_messages 100",
                    f"log_dest file {self.log}",
                    "log_type all",
                    "connection_messages true",
                    f"listener {self.port} {self.host}",
                    *(
                        [f"cafile {self.tls[0]}", f"certfile {self.tls[1]}", f"keyfile {self.tls[2]}"]
                        if self.tls
                        else []
                    ),
                    "",
                ]
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until it accepts connections."""
        if not self.conf.exists():
            self.prepare()
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        """Stop the broker cleanly (it saves its persistence file)."""
        stop_process(self.proc, timeout=5)
        self.proc = None

    def restart(self, kill: bool = True) -> None:
        """Kill (or stop) and start again on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def password(self, user: str) -> str:
        return (self.secrets_dir / f"mqtt-{user}").read_text().strip()

    def settings(self, user: str | None, **overrides: object) -> MqttSettings:
        """Connection settings for ``user`` (None: anonymous)."""
        settings = MqttSettings(host=self.host, port=self.port)
        if user is not None:
            settings.username = user
            settings.password_file = str(self.secrets_dir / f"mqtt-{user}")
        for key, value in overrides.items():
            setattr(settings, key, value)
        return settings

    def env(self, user: str) -> dict[str, str]:
        """``DCS_MQTT_*`` environment for a child process connecting as ``user``."""
        return {
            "DCS_MQTT_HOST": self.host,
            "DCS_MQTT_PORT": str(self.port),
            "DCS_MQTT_USERNAME": user,
            "DCS_MQTT_PASSWORD_FILE": str(self.secrets_dir / f"mqtt-{user}"),
        }

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()


def running_in_ci() -> bool:
    """True when the ``CI`` environment variable says so (``true``/``1``, any case), as CI services set it."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
