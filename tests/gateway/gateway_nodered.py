"""Start the real Node-RED of node-red/ (settings.js, flows.json) against a test broker."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

from trackerdcs_devstack.localbroker import REPO, LocalBroker, free_port, wait_port
from trackerdcs_devstack.supervisor import stop_process
from trackerdcs_ops.uiusers import hash_password

NODE_RED = REPO / "node-red"
#: UI logins every test Node-RED gets: name -> role
UI_ROLES = {"alice": "operator", "victor": "viewer", "erin": "expert"}


def node_red_ready() -> str | None:
    """None if Node-RED can run here, else why not."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_RED / "node_modules" / ".bin" / "node-red").exists():
        return "node-red/node_modules missing: run scripts/setup-gateway.sh"
    return None


class NodeRed:
    """node-red/run with a temporary user dir, its own credential secret and MQTT client id."""

    def __init__(self, broker: LocalBroker, workdir: Path, client_id: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        user_dir = workdir / "userdir"
        user_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(NODE_RED / "flows.json", user_dir / "flows.json")
        # operator UI logins (name -> password), one per role, as the simulation stack makes them
        self.ui_passwords = {name: f"{name}-pw-{os.urandom(6).hex()}" for name in UI_ROLES}
        users = workdir / "ui-users"
        users.write_text(
            "".join(f"{name} {UI_ROLES[name]} {hash_password(pw)}\n" for name, pw in self.ui_passwords.items())
        )
        self.env = {
            **os.environ,
            **broker.env("nodered"),
            "NODE_RED_USER_DIR": str(user_dir),
            "NODE_RED_FLOW_FILE": str(user_dir / "flows.json"),
            "NODE_RED_CREDENTIAL_SECRET": os.urandom(16).hex(),
            "NODE_RED_HOST": "127.0.0.1",
            "NODE_RED_PORT": str(self.port),
            "MQTT_CLIENT_ID": client_id,
            "NODE_RED_UI_USERS_FILE": str(users),
            **env,
        }
        self.log_path = workdir / "node-red.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(NODE_RED / "run")], env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_port("127.0.0.1", self.port, 40)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"Node-RED did not start:\n{self.log()}") from None

    def basic_auth(self, name: str) -> str:
        """The ``Authorization`` header value of UI user ``name``."""
        token = base64.b64encode(f"{name}:{self.ui_passwords[name]}".encode()).decode()
        return f"Basic {token}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        stop_process(self.proc)
        if getattr(self, "_log", None):
            self._log.close()
