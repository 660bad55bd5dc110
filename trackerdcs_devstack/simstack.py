"""``dcs-sim``: the whole stack in simulation mode on this machine, on loopback only.

Starts a real Mosquitto (authentication + ACL, passwords generated into ``<var>/secrets``), the simulated
devices (CAEN crate as an EPICS IOC, Julabo chiller on a pty and TCP, Ph2_ACF RunController, environment
sensors), the three device services against them, the burn-in sequencer, and Node-RED if
``node-red/node_modules`` is installed. Logs go to ``<var>/logs/<name>.log``; a crashed process is restarted.
Ctrl-C (or SIGTERM) stops everything, services first.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from trackerdcs.client import DcsClient
from trackerdcs.logsetup import setup_logging
from trackerdcs_ops.uiusers import SIM_USERS, ensure_sim_users

from .localbroker import REPO, LocalBroker, free_port, wait_port
from .supervisor import ProcessSpec, Supervisor

log = logging.getLogger("dcs-sim")

SERVICES = {"caen": "caen-fsm", "julabo": "julabo-fsm", "ph2acf": "ph2acf-bridge"}
#: What to do when the stack runs without Node-RED (caen-fsm holds the interlock permit: no interlock, no power).
NO_INTERLOCK_HINT = "interlock status MISSING. Install Node-RED (scripts/setup.sh sim) to power modules"


def _port_open(port: int) -> bool:
    try:
        wait_port("127.0.0.1", port, timeout=0.05)
        return True
    except TimeoutError:
        return False


def _online(monitor: DcsClient, service: str) -> bool:
    message = monitor.latest(f"{service}/availability").get(f"{service}/availability")
    return message is not None and message.payload == b"online"


#: The chiller's serial pacing (s) and julabo-fsm's status cycle at time scale 1; both shrink with the scale.
CHILLER_PACING_S = 0.25
JULABO_FSM_PACING_S = 0.27


def scaled_julabo_config(source: Path, target: Path, scale: float) -> Path:
    """``source`` (a julabo-fsm YAML, ``${ENV}`` references kept) with the serial pacing and the status cycle
    shortened ``scale`` times, written to ``target``: a time-scaled chiller answers faster, like everything
    else in the scaled simulation. Scale 1: ``source`` itself."""
    if scale <= 1.0:
        return source
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    jul = raw.setdefault("julabo", {})
    jul["pacing_s"] = round(max(JULABO_FSM_PACING_S / scale, 0.01), 4)
    jul["poll_interval_s"] = round(max(float(jul.get("poll_interval_s", 1.0)) / scale, 0.05), 4)
    target.write_text(
        f"# written by dcs-sim --time-scale {scale:g} from {source}: pacing and status cycle {scale:g}x shorter\n"
        + yaml.safe_dump(raw, sort_keys=False)
    )
    return target


def envsim_args(
    program: str, args: argparse.Namespace, julabo_ctl: int, air_interval: float, carrier_interval: float
) -> list[str]:
    """env-sim: the box and room air sensors (drying under dry air) and a carrier sensor following the chiller."""
    return [
        program, "--sensor", "box", "--sensor", "room",
        "--carrier", "carrier", "--chiller-control", f"127.0.0.1:{julabo_ctl}", "--time-scale", str(args.time_scale),
        "--interval", f"{air_interval:g}", "--carrier-interval", f"{carrier_interval:g}",
        "--humidity", f"{args.humidity:g}", *(() if args.dry_air else ("--no-dry-air",)),
    ]  # fmt: skip


def build_specs(args: argparse.Namespace, var: Path, broker: LocalBroker, monitor: DcsClient) -> list[ProcessSpec]:
    """The simulated devices, then the services, then Node-RED: the start order."""
    bindir = Path(sys.executable).parent
    scale = args.time_scale
    chiller_scale = args.chiller_time_scale if args.chiller_time_scale is not None else scale
    exe = lambda name: str(bindir / name)  # noqa: E731
    ca_port, julabo_port, julabo_ctl, ph2acf_port = (free_port() for _ in range(4))
    ports = {
        "mqtt": broker.port, "caen_ca": ca_port, "julabo_tcp": julabo_port, "julabo_control": julabo_ctl,
        "ph2acf_tcp": ph2acf_port, "node_red": args.node_red_port,
    }  # fmt: skip
    (var / "ports.json").write_text(json.dumps(ports, indent=2) + "\n")
    ca_env = {"EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CA_ADDR_LIST": f"127.0.0.1:{ca_port}"}
    ph2acf_work = var / "ph2acf" / "run"
    ph2acf_work.mkdir(parents=True, exist_ok=True)
    ph2acf_env = {
        "PH2ACF_SIM_WORKDIR": str(ph2acf_work),
        "PH2ACF_SIM_PORT": str(ph2acf_port),
        "PH2ACF_DATA": str(var / "ph2acf" / "data"),
        "PH2ACF_SIM_DURATION": str(args.run_seconds / scale),  # simulated seconds, like the other devices
    }
    caen_cfg = str(Path(args.caen_config).resolve())
    julabo_cfg = scaled_julabo_config(Path(args.julabo_config).resolve(), var / "julabo-fsm.yml", scale)
    air_interval = min(2.0, max(0.1, 20.0 / scale))  # a reading per 20 simulated seconds at most, 2 s at least
    carrier_interval = min(1.0, max(0.02, 1.0 / scale))
    specs = [
        ProcessSpec(
            "caen-sim",
            [
                exe("caen-sim"),
                "--config",
                caen_cfg,
                "--port",
                str(ca_port),
                "--interface",
                "127.0.0.1",
                "--noise-hz",
                "1",
                "--time-scale",
                str(scale),
                "--julabo-control",
                f"127.0.0.1:{julabo_ctl}",
                *(("--sim-config", str(Path(args.caen_sim_config).resolve())) if args.caen_sim_config else ()),
            ],
            env={"EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CA_ADDR_LIST": "127.0.0.1"},
            ready=lambda: _port_open(ca_port),
        ),
        ProcessSpec(
            "julabo-sim",
            [
                exe("julabo-sim"),
                "--host",
                "127.0.0.1",
                "--tcp-port",
                str(julabo_port),
                "--control-port",
                str(julabo_ctl),
                "--pty-link",
                str(var / "ttyJULABO"),
                "--time-scale",
                str(chiller_scale),
                "--pacing",
                str(max(CHILLER_PACING_S / max(scale, 1.0), 0.005)),
            ],
            ready=lambda: _port_open(julabo_port),
        ),
        ProcessSpec(
            "ph2acf-sim",
            [
                exe("ph2acf-sim"),
                "--host",
                "127.0.0.1",
                "--port",
                str(ph2acf_port),
                "--workdir",
                str(ph2acf_work),
                "--write-example-xml",
                "CMSIT.xml",
            ],
            env=ph2acf_env,
            ready=lambda: _port_open(ph2acf_port),
        ),
        ProcessSpec(
            "envsim",
            envsim_args(exe("env-sim"), args, julabo_ctl, air_interval, carrier_interval),
            env={**broker.env("sensors"), "DCS_MQTT_CLIENT_ID": "envsim"},
        ),
        ProcessSpec(  # first of the MQTT programs: the audit trail records every command from the start
            "audit",
            [exe("dcs-audit"), "--config", str(REPO / "deploy/config/audit.yml")],
            env={**broker.env("audit"), "AUDIT_DIR": str(var / "audit")},
            ready=lambda: _online(monitor, "audit"),
        ),
        ProcessSpec(
            "caen-fsm",
            [exe("caen-fsm"), "--config", caen_cfg],
            env={**broker.env("caen"), **ca_env},
            ready=lambda: _online(monitor, "caen"),
        ),
        ProcessSpec(
            "julabo-fsm",
            [exe("julabo-fsm"), "--config", str(julabo_cfg)],
            env={**broker.env("julabo"), "JULABO_CONNECTION": f"socket://127.0.0.1:{julabo_port}"},
            ready=lambda: _online(monitor, "julabo"),
        ),
        ProcessSpec(
            "ph2acf-bridge",
            [exe("ph2acf-bridge"), "--config", str(REPO / "services/ph2acf-bridge/sim.yml")],
            env={**broker.env("ph2acf"), **ph2acf_env, "PYTHONMALLOC": "malloc"},  # as in the pod
            ready=lambda: _online(monitor, "ph2acf"),
        ),
    ]
    if args.burnin:
        specs.append(
            ProcessSpec(
                "burnin",
                [exe("burnin"), "--config", str(Path(args.burnin_config).resolve())],
                env={
                    **broker.env("burnin"),
                    "BURNIN_TIME_SCALE": str(scale),
                    "BURNIN_DATA": str(var / "burnin"),
                    "BURNIN_RECIPES": str(REPO / "services/burnin/recipes"),
                },
                ready=lambda: _online(monitor, "burnin"),
            )
        )
    node_red = REPO / "node-red"
    if args.node_red and (node_red / "node_modules" / "node-red").is_dir() and shutil.which("node"):
        specs.append(node_red_spec(var, broker, args.node_red_port))
    elif args.node_red:
        log.warning("Node-RED not installed (run scripts/setup.sh sim); starting without interlocks and UI")
    if not any(spec.name == "node-red" for spec in specs):
        log.warning("no interlock (Node-RED not started): caen-fsm refuses lv_on/hv_on, %s", NO_INTERLOCK_HINT)
    return specs


def node_red_spec(var: Path, broker: LocalBroker, port: int) -> ProcessSpec:
    """Node-RED with the project's flows, its own user dir under ``var`` and the nodered MQTT account."""
    user_dir = var / "node-red"
    user_dir.mkdir(parents=True, exist_ok=True)
    secret = var / "secrets" / "node-red-credential-secret"
    if not secret.exists():
        secret.write_text(os.urandom(24).hex())
        secret.chmod(0o600)
    admin_password = var / "secrets" / "node-red-admin"
    admin_hash = var / "secrets" / "node-red-admin.bcrypt"
    if not admin_hash.exists():
        admin_password.write_text(base64.b32encode(os.urandom(15)).decode().lower())
        admin_password.chmod(0o600)
        digest = subprocess.run(
            [str(REPO / "node-red" / "hash-password")], input=admin_password.read_text(), capture_output=True,
            text=True, check=True,
        ).stdout.strip()  # fmt: skip
        admin_hash.write_text(digest + "\n")
    ui_users = ensure_sim_users(var / "secrets")
    env = {
        "NODE_RED_USER_DIR": str(user_dir),
        "NODE_RED_PORT": str(port),
        "NODE_RED_HOST": "127.0.0.1",
        "NODE_RED_CREDENTIAL_SECRET": secret.read_text().strip(),
        "NODE_RED_ADMIN_USER": "admin",
        "NODE_RED_ADMIN_HASH_FILE": str(admin_hash),
        "NODE_RED_UI_USERS_FILE": str(ui_users),
        "MQTT_HOST": broker.host,
        "MQTT_PORT": str(broker.port),
        "MQTT_USER": "nodered",
        "MQTT_PASSWORD": broker.password("nodered"),
    }
    return ProcessSpec(
        "node-red",
        [str(REPO / "node-red" / "run")],
        env=env,
        ready=lambda: _port_open(port),
        ready_timeout_s=60,
    )


def write_client_config(var: Path, broker: LocalBroker) -> Path:
    """``<var>/dcs.yml``: what ``dcs`` needs to log in as operator (export DCS_CONFIG=...)."""
    path = var / "dcs.yml"
    path.write_text(
        "# written by dcs-sim: export DCS_CONFIG=" + str(path) + "\n"
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n  username: operator\n"
        f"  password_file: {broker.secrets_dir / 'mqtt-operator'}\n"
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dcs-sim", description=__doc__)
    parser.add_argument("--var", default=str(REPO / "var" / "sim"), help="state, logs and secrets (default var/sim)")
    parser.add_argument("--mqtt-port", type=int, default=1883, help="broker port on 127.0.0.1 (default 1883)")
    parser.add_argument("--node-red-port", type=int, default=1880, help="Node-RED port on 127.0.0.1 (default 1880)")
    parser.add_argument("--no-node-red", dest="node_red", action="store_false", help="do not start Node-RED")
    parser.add_argument("--run-seconds", type=float, default=20.0, help="length of a simulated calibration run")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per real second for every simulator and the sequencer's clock (default 1: a\n"
        "real stand's pace; e.g. 300 runs the standard burn-in in a few minutes)",
    )
    parser.add_argument(
        "--chiller-time-scale",
        type=float,
        default=None,
        help="the chiller simulator's own time scale (default: --time-scale)",
    )
    parser.add_argument("--caen-config", default=str(REPO / "services/caen-fsm/example.yml"), help="caen-fsm YAML")
    parser.add_argument(
        "--caen-sim-config",
        default=str(REPO / "services/caen-fsm/caen-sim.yml"),
        help="caen-sim physics YAML (sensor leakage, module temperature); '' for none",
    )
    parser.add_argument("--julabo-config", default=str(REPO / "services/julabo-fsm/sim.yml"), help="julabo-fsm YAML")
    parser.add_argument("--burnin-config", default=str(REPO / "services/burnin/sim.yml"), help="burnin YAML")
    parser.add_argument("--humidity", type=float, default=5.0, help="box humidity at start, %%RH (envsim)")
    parser.add_argument("--no-dry-air", dest="dry_air", action="store_false", help="the box humidity stays")
    parser.add_argument("--no-burnin", dest="burnin", action="store_false", help="do not start the burn-in sequencer")
    parser.add_argument("--check", action="store_true", help="start everything, report, stop (a smoke test)")
    args = parser.parse_args(argv)
    if args.time_scale <= 0 or (args.chiller_time_scale is not None and args.chiller_time_scale <= 0):
        parser.error("time scales must be above 0")
    setup_logging(name="dcs-sim")
    var = Path(args.var).resolve()
    (var / "logs").mkdir(parents=True, exist_ok=True)
    if _port_open(args.mqtt_port):
        log.error("port %d is in use: is another broker or dcs-sim running? Use --mqtt-port.", args.mqtt_port)
        return 1
    broker = LocalBroker(var / "mosquitto", var / "secrets", port=args.mqtt_port)
    broker.prepare()
    broker.start()
    supervisor = Supervisor(var / "logs")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    code = 0
    try:
        with DcsClient(broker.settings("monitor")) as monitor:
            monitor.subscribe(["+/availability"])
            for spec in build_specs(args, var, broker, monitor):
                supervisor.start(spec)
            config = write_client_config(var, broker)
            ports = json.loads((var / "ports.json").read_text())
            print(
                f"\ntrackerdcs simulation stack is up (logs in {var / 'logs'}).\n"
                f"  MQTT broker   127.0.0.1:{broker.port}   users/passwords in {broker.secrets_dir}\n"
                + (
                    f"  Operator UI   http://127.0.0.1:{args.node_red_port}/dashboard/stand   (logins "
                    + ", ".join(f"{name} ({role})" for name, role in SIM_USERS.items())
                    + f";\n                passwords in {var / 'secrets'}/ui-<name>)\n"
                    f"  Burn-in page  http://127.0.0.1:{args.node_red_port}/dashboard/burnin\n"
                    f"  Node-RED      http://127.0.0.1:{args.node_red_port}/  (user admin, password in "
                    f"{var / 'secrets' / 'node-red-admin'})\n"
                    if "node-red" in supervisor.running
                    else "  INTERLOCK     none (Node-RED not running): caen-fsm REFUSES lv_on/hv_on,\n"
                    f"                {NO_INTERLOCK_HINT}.\n"
                )
                + f"  Audit trail   {var / 'audit'}/audit-<date>.jsonl   (dcs audit --since 1h)\n"
                + f"  Simulators    ports in {var / 'ports.json'}; warm the chiller (fault injection):\n"
                f"                echo 'bath 30' > /dev/tcp/127.0.0.1/{ports['julabo_control']}   (bash)\n"
                f"  Try:          export DCS_CONFIG={config} PATH={Path(sys.executable).parent}:$PATH\n"
                "                dcs status --detail\n"
                + (
                    "  Burn-in       dcs burnin plan sim-short   (a two-plateau demo recipe), then\n"
                    "                dcs burnin start sim-short operator=<you>\n"
                    if "burnin" in supervisor.running
                    else ""
                )
                + "  Ctrl-C stops the stack.\n",
                flush=True,
            )
            while not stop.is_set() and not args.check:
                supervisor.poll()
                stop.wait(1.0)
    except RuntimeError as exc:
        log.error("%s", exc)
        code = 1
    finally:
        supervisor.stop_all()
        broker.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
