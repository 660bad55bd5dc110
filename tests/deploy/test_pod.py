"""The simulation pod, really played with podman: images built here from a local Debian base, the secrets made
by deploy/setup-secrets, the manifest of pod-sim.yml adapted to this machine (registry-only images replaced by
stand-ins or left out, named in the output), a free loopback port for MQTT, names prefixed so nothing of a
production pod is touched. Cold (no images, all built in the run): about 3.5 minutes; warm: about 1 minute.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from trackerdcs.client import DcsClient
from trackerdcs.config import MqttSettings
from trackerdcs_devstack.localbroker import free_port, wait_port
from trackerdcs_ops import backup, deploytools

pytestmark = [pytest.mark.podman, pytest.mark.slow, pytest.mark.serial]  # builds images: alone
REPO = Path(__file__).resolve().parents[2]
EXPECTED_LEFT_OUT = {"telegraf", "grafana", "mongodb", "grafana-secret-files"}  # registry-only images


def run_checked(argv: list[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv``, output captured; with ``check``, a non-zero exit fails the test with the command's own
    stderr and stdout in the test output (not hidden in a CalledProcessError)."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited with {result.returncode}\n--- stderr ---\n{result.stderr[-6000:]}"
            f"\n--- stdout ---\n{result.stdout[-3000:]}",
            pytrace=False,
        )
    return result


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_checked(["podman", *args], timeout=timeout, check=check)


@dataclass
class Pod:
    name: str
    prefix: str
    port: int
    ui_port: int
    secrets: Path
    manifest: Path
    containers: list[str]
    left_out: dict[str, str]
    replaced: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    played_at: float = 0.0

    def settings(self, user: str) -> MqttSettings:
        return MqttSettings(
            host="127.0.0.1", port=self.port, username=user, password_file=str(self.secrets / f"mqtt-{user}")
        )

    def container(self, name: str) -> str:
        return f"{self.name}-{name}"

    def state(self, name: str) -> str:
        return podman("inspect", "--format", "{{.State.Status}}", self.container(name)).stdout.strip()


def _skip_reason() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/setup-deploy.sh installs it)"
    info = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], capture_output=True, text=True)
    if info.returncode != 0:
        return f"podman does not work here: {info.stderr.strip()[:200]}"
    if os.geteuid() != 0:
        return "the pod test runs rootful podman (as in production); run as root"
    return None


def boot_unit_play_args(manifest: Path) -> list[str]:
    """podman arguments of the stock podman-kube@.service ExecStart for ``manifest`` (what runs at boot)."""
    unit = Path("/lib/systemd/system/podman-kube@.service")
    if unit.is_file():
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                argv = line.removeprefix("ExecStart=").split()
                assert argv[0].endswith("/podman") and argv[-1] == "%I"
                return [*argv[1:-1], str(manifest)]
    return ["play", "kube", "--replace", "--service-container=true", str(manifest)]


def _cleanup(prefix: str, pod_name: str, manifest: Path | None = None) -> None:
    if manifest is not None and manifest.exists():  # the unit's ExecStop: also removes the service container
        podman("play", "kube", "--down", str(manifest), check=False, timeout=120)
    podman("pod", "rm", "-f", "-t", "5", pod_name, check=False, timeout=120)
    volumes = podman("volume", "ls", "--format", "{{.Name}}", check=False).stdout.split()
    for volume in volumes:
        if volume.startswith(prefix):
            podman("volume", "rm", "-f", volume, check=False)
    for secret in podman("secret", "ls", "--format", "{{.Name}}", check=False).stdout.split():
        if secret.startswith(prefix):
            podman("secret", "rm", secret, check=False)


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Pod]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("pod")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    run_checked([str(REPO / "deploy" / "build-images")], timeout=900)
    timings["build_images_s"] = time.monotonic() - t0
    prefix = f"t{os.getpid()}-"
    handle: Pod | None = None
    try:
        secrets = work / "secrets"
        run_checked([str(REPO / "deploy" / "setup-secrets"), "--dir", str(secrets), "--prefix", prefix], timeout=120)
        port, ui_port = free_port(), free_port()
        local = yaml.safe_load((REPO / "deploy" / "local-images.yml").read_text())
        result = deploytools.localize(
            deploytools.render(REPO, "sim", warn=lambda _m: None),
            local_images=local,
            prefix=prefix,
            host_ports={1883: port, 1880: ui_port},
        )
        manifest = work / "pod.yml"
        manifest.write_text(deploytools.dump(result.docs))
        pod_doc = deploytools.pod_of(result.docs)
        handle = Pod(
            name=pod_doc["metadata"]["name"],
            prefix=prefix,
            port=port,
            ui_port=ui_port,
            secrets=secrets,
            manifest=manifest,
            containers=[c["name"] for c in pod_doc["spec"]["containers"]],
            left_out=result.left_out,
            replaced=result.replaced,
            timings=timings,
        )
        handle.played_at = time.monotonic()
        podman("play", "kube", str(manifest), timeout=300)
        wait_port("127.0.0.1", port, timeout=30)
        timings["play_to_mqtt_s"] = time.monotonic() - handle.played_at
        yield handle
    finally:
        if handle is not None:
            logs = {}
            for c in handle.containers:
                out = podman("logs", "--tail", "40", handle.container(c), check=False)
                logs[c] = out.stdout + out.stderr
            (artifacts / "pod-logs.json").write_text(json.dumps(logs, indent=1))
        (artifacts / "pod-timings.json").write_text(json.dumps(timings, indent=1))
        _cleanup(prefix, f"{prefix}trackerdcs-sim", work / "pod.yml")


def wait_status(client: DcsClient, topic: str, predicate, timeout: float = 30.0) -> dict:
    return client.wait_for(topic, lambda m: bool(m.payload) and predicate(m.json()), timeout=timeout).json()


@pytest.mark.timeout(120)
def test_every_container_that_can_run_here_is_up_and_the_others_are_named(pod: Pod) -> None:
    assert set(pod.left_out) <= EXPECTED_LEFT_OUT | {"node-red"}, pod.left_out
    assert {
        "mosquitto",
        "influxdb",
        "influx-tiers",
        "caen-fsm",
        "julabo-fsm",
        "ph2acf-bridge",
        "burnin",
        "audit",
        "caen-sim",
        "julabo-sim",
        "ph2acf-sim",
    } <= set(pod.containers)
    assert pod.replaced.get("influxdb") == "localhost/trackerdcs-influxdb-standin:latest"
    time.sleep(3)
    states = {c: pod.state(c) for c in pod.containers}
    assert set(states.values()) == {"running"}, states
    policies = {
        c: podman("inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", pod.container(c)).stdout.strip()
        for c in pod.containers
    }
    assert set(policies.values()) == {"always"}, policies  # a crashed container comes back by itself


@pytest.mark.timeout(180)
def test_each_image_carries_its_own_dependency_set_and_not_the_others(pod: Pod) -> None:
    """trackerdcs-<name> holds the core set plus pyproject's set <name>: its service starts (its entry module
    imports), and a library only another image needs is absent (the CAEN image has no MongoDB client, the chiller
    simulator no state-machine library, no image the development or operations tooling)."""
    cases = {
        "caen-fsm": ("caen_fsm.main", "pymongo"),  # (pyepics itself brings numpy)
        "caen-sim": ("caen_sim.main", "pymongo"),
        "julabo-fsm": ("julabo_fsm.main", "epics"),
        "julabo-sim": ("julabo_sim.main", "transitions"),
        "ph2acf-bridge": ("ph2acf_bridge.main", "softioc"),
        "ph2acf-sim": ("ph2acf_sim.server", "pymongo"),
        "burnin": ("burnin.main", "numpy"),
    }
    code = (
        "import importlib, importlib.util, sys; importlib.import_module(sys.argv[1]); "
        "present = [m for m in sys.argv[2:] if importlib.util.find_spec(m)]; print(present); sys.exit(bool(present))"
    )
    for image, (entry, foreign) in cases.items():
        done = podman(
            "run", "--rm", f"localhost/trackerdcs-{image}:latest", "/opt/trackerdcs/venv/bin/python", "-c", code,
            entry, foreign, "trackerdcs_ops", "trackerdcs_devstack", check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{image}: {done.stdout}{done.stderr}"


@pytest.mark.timeout(120)
def test_services_find_the_broker_and_their_simulated_devices(pod: Pod) -> None:
    with DcsClient(pod.settings("operator")) as client:
        client.subscribe(["+/availability", "caen/status", "julabo/status", "ph2acf/status"])
        for svc in ("caen", "julabo", "ph2acf", "audit"):
            client.wait_for(f"{svc}/availability", lambda m: m.payload == b"online", timeout=60)
        caen = wait_status(client, "caen/status", lambda s: s["connected"] and s["state"] == "OFF", 60)
        julabo = wait_status(client, "julabo/status", lambda s: s["connected"], 60)
        ph2acf = wait_status(client, "ph2acf/status", lambda s: s["state"] == "IDLE", 60)
        client.wait_for("burnin/availability", lambda m: m.payload == b"online", timeout=60)
        pod.timings["play_to_services_ready_s"] = time.monotonic() - pod.played_at
        # the sequencer reads its recipes from the ConfigMap and checks them against this stand's modules
        plan = client.command("burnin", "plan", recipe="sim-short", timeout=20)["result"]
        assert plan["steps"] == 11, plan
    assert caen["modules_total"] == 3 and caen["modules_hv_on"] == 0
    assert julabo["model"].startswith("JULABO") and julabo["state"] == "STOPPED"
    assert ph2acf["mode"] == "tcp" and ph2acf["mongo_ok"] is False  # MongoDB left out: results are spooled


@pytest.mark.timeout(180)
def test_every_containers_liveness_probe_passes_inside_the_pod(pod: Pod) -> None:
    """The pod's probes, run by podman itself (its timers need systemd, so they are triggered here)."""
    failing = {}
    for name in pod.containers:
        for _attempt in range(10):  # services need a first health publication
            result = podman("healthcheck", "run", pod.container(name), check=False, timeout=60)
            if result.returncode == 0:
                break
            time.sleep(2)
        else:
            failing[name] = (result.stdout + result.stderr).strip()
    assert not failing, failing


@pytest.mark.timeout(120)
def test_node_red_interlock_trips_on_the_stopped_chiller_and_rearms_after_start_and_acknowledge(pod: Pod) -> None:
    if "node-red" not in pod.containers:  # a failure on CI (trackerdcs_devstack.cipolicy)
        pytest.skip(f"Node-RED left out: {pod.left_out.get('node-red')}")
    ui = f"http://127.0.0.1:{pod.ui_port}"
    for path in ("/dashboard/", "/dashboard/socket.io/?EIO=4&transport=polling"):  # no login, no UI and no channel
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(ui + path, timeout=10)
        assert refused.value.code == 401 and "sid" not in refused.value.read().decode(errors="replace")
    login = base64.b64encode(f"operator:{(pod.secrets / 'ui-operator').read_text().strip()}".encode()).decode()
    page_request = urllib.request.Request(f"{ui}/dashboard/", headers={"Authorization": f"Basic {login}"})
    with urllib.request.urlopen(page_request, timeout=10) as page:
        assert page.status == 200  # the operator UI, with the login setup-secrets made, through the loopback port
    with DcsClient(pod.settings("operator")) as client:
        client.subscribe(["interlock/status", "interlock/reply", "julabo/status"])
        tripped = wait_status(client, "interlock/status", lambda s: s["state"] == "TRIPPED", 60)
        assert "chiller_not_running" in tripped["active"]
        assert client.command("julabo", "start", {}, timeout=20)["ok"]
        wait_status(client, "julabo/status", lambda s: s["state"] == "RUNNING", 30)
        # re-arming waits for the interlock's own LV-off step (10 s after HV off) to be done
        wait_status(client, "interlock/status", lambda s: s["state"] == "ACK_PENDING" and not s["lv_off_pending"], 40)
        # Node-RED answers on interlock/reply (not on the MQTT v5 response topic DcsClient.command waits for)
        client.client.publish("interlock/cmd/acknowledge", json.dumps({"operator": "pod-test"}), qos=1)
        reply = client.wait_for("interlock/reply", lambda m: m.json().get("command") == "acknowledge", 20).json()
        assert reply["ok"], reply
        wait_status(client, "interlock/status", lambda s: s["state"] == "OK", 20)
        # the pod's audit container kept the acknowledgement with its reply
        trail = client.command("audit", "query", {"since": "10m", "service": "interlock"}, timeout=20)["result"]
        acks = [r for r in trail["records"] if r["command"] == "acknowledge" and r["args"] == {"operator": "pod-test"}]
        assert acks and acks[-1]["reply"]["ok"] is True, trail


@pytest.mark.timeout(120)
def test_lv_on_sent_over_mqtt_from_the_host_switches_the_simulated_channel_on(pod: Pod) -> None:
    with DcsClient(pod.settings("operator")) as client:
        client.subscribe(["caen/status/#"])
        wait_status(client, "caen/status", lambda s: s["connected"], 60)
        t0 = time.monotonic()
        reply = client.command("caen", "lv_on", {"modules": ["module_0"]}, timeout=20)
        assert reply["ok"], reply
        lv = wait_status(client, "caen/status/channel/module_0_lv", lambda s: s["state"] == "ON" and s["vmon"] > 12, 30)
        pod.timings["lv_on_to_vmon_s"] = time.monotonic() - t0
        assert lv["on"] is True and "ON" in lv["flags"]
        module = wait_status(client, "caen/status/module/module_0", lambda s: s["state"] == "LV_ON", 10)
        assert module["lv_vmon"] > 12
        other = client.status("caen", "module/module_1")
        assert other["state"] == "OFF"


@pytest.mark.timeout(120)
def test_influx_tiers_provisions_retention_and_continuous_queries_at_first_start(pod: Pod) -> None:
    """The influx-tiers container (trackerdcs.influxtiers serve) against the pod's InfluxDB, with auth."""
    password = (pod.secrets / "influxdb-admin-password").read_text()

    def show(q: str) -> str:
        return podman(
            "exec", pod.container("influxdb"), "/usr/bin/curl", "-s", "-u", f"admin:{password}", "-G",
            "http://127.0.0.1:8086/query", "--data-urlencode", "db=trackerdcs", "--data-urlencode", f"q={q}",
            check=False,
        ).stdout  # fmt: skip

    deadline = time.monotonic() + 60
    while "cq_hour_caen_module" not in (cqs := show("SHOW CONTINUOUS QUERIES")):
        assert time.monotonic() < deadline, cqs
        time.sleep(1)
    rps = json.loads(show("SHOW RETENTION POLICIES"))["results"][0]["series"][0]["values"]
    assert {r[0]: r[1] for r in rps} == {"autogen": "720h0m0s", "minute": "17520h0m0s", "hour": "0s"}
    # its own check (`trackerdcs.influxtiers probe`: every tier and query in place) is the container's liveness
    # probe, run by test_every_containers_liveness_probe_passes_inside_the_pod


@pytest.mark.timeout(120)
def test_influxdb_stand_in_takes_writes_from_the_writer_and_only_reads_from_the_reader(pod: Pod) -> None:
    def curl(user: str, secret: str, *args: str) -> subprocess.CompletedProcess[str]:
        password = (pod.secrets / secret).read_text()
        return podman(
            "exec",
            pod.container("influxdb"),
            "/usr/bin/curl",
            "-s",
            "-o",
            "/dev/stdout",
            "-w",
            " %{http_code}",
            "-u",
            f"{user}:{password}",
            *args,
            check=False,
        )

    url = "http://127.0.0.1:8086"
    deadline = time.monotonic() + 30
    while (
        "204"
        not in (
            w := curl(
                "telegraf",
                "influxdb-telegraf-password",
                "-XPOST",
                f"{url}/write?db=trackerdcs",
                "--data-binary",
                "caen_channel,channel=m0 vmon=12.5",
            )
        ).stdout
    ):
        assert time.monotonic() < deadline, w.stdout
        time.sleep(0.5)
    q = curl(
        "grafana",
        "influxdb-grafana-password",
        "-G",
        f"{url}/query",
        "--data-urlencode",
        "db=trackerdcs",
        "--data-urlencode",
        "q=SELECT last(vmon) FROM caen_channel",
    )
    assert q.stdout.endswith("200") and "12.5" in q.stdout
    denied = curl(
        "grafana", "influxdb-grafana-password", "-XPOST", f"{url}/write?db=trackerdcs", "--data-binary", "x v=1"
    )
    assert denied.stdout.endswith("403")
    anonymous = podman(
        "exec",
        pod.container("influxdb"),
        "/usr/bin/curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-G",
        f"{url}/query",
        "--data-urlencode",
        "q=SHOW DATABASES",
        check=False,
    )
    assert anonymous.stdout == "401"


@pytest.mark.timeout(200)
def test_a_restarted_service_reads_the_crate_back_and_switches_nothing(pod: Pod) -> None:
    """module_0 fully on (LV and HV), the others off; the restarted service must report exactly that, read
    from the crate (documents stamped after the restart), and change nothing."""
    with DcsClient(pod.settings("operator")) as client:
        client.subscribe(["caen/#"])
        wait_status(client, "caen/status/channel/module_0_lv", lambda s: s["state"] == "ON", 30)
        assert client.command("caen", "hv_on", {"modules": ["module_0"]}, timeout=30)["ok"]
        wait_status(client, "caen/status/module/module_0", lambda s: s["state"] == "HV_ON", 60)
        wait_status(client, "caen/status", lambda s: s["modules_hv_on"] == 1, 20)
        podman("stop", "-t", "10", pod.container("caen-fsm"))
        client.wait_for("caen/availability", lambda m: m.payload == b"offline", timeout=20)
        restarted = time.time()
        podman("start", pod.container("caen-fsm"))
        client.wait_for("caen/availability", lambda m: m.payload == b"online", timeout=60)
        time.sleep(4)  # a few status cycles after reconnecting to the crate
        status = wait_status(client, "caen/status", lambda s: s["connected"] and s["ts"] >= restarted, 60)
        assert status["modules_hv_on"] == 1  # read back, neither switched off nor anything else switched on
        fresh = lambda state: lambda s: s["state"] == state and s["ts"] >= restarted  # noqa: E731
        wait_status(client, "caen/status/module/module_0", fresh("HV_ON"), 20)  # left as it was
        for module in ("module_1", "module_2"):
            wait_status(client, f"caen/status/module/{module}", fresh("OFF"), 20)


@pytest.mark.timeout(150)
def test_backup_of_the_running_pod_and_restore_refused_while_it_runs(pod: Pod, tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    args = ["--prefix", pod.prefix, "--pod", pod.name, "--dest", str(dest)]
    assert backup.main_backup([*args, "--keep", "2", "--components", "mosquitto,influxdb,ph2acf"]) == 0
    (folder,) = backup.list_backups(dest)
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("mosquitto", "influxdb", "ph2acf"):
        entry = manifest["components"][name]
        assert entry["kind"] == "podman-volume" and entry["paused"] is True and entry["bytes"] > 0
    assert {pod.state(c) for c in ("mosquitto", "influxdb", "ph2acf-bridge")} == {"running"}  # unpaused again
    names = tarfile_names(folder / "influxdb.tar.gz")
    assert {"meta", "data", "wal"} <= names
    assert backup.main_restore([str(folder), *args[:4], "--components", "influxdb"]) == 1  # pod running: refused


def tarfile_names(path: Path) -> set[str]:
    import tarfile

    with tarfile.open(path) as tar:
        return {n.split("/")[0] for n in tar.getnames()}


@pytest.mark.timeout(240)
def test_after_a_power_cut_the_pod_comes_back_with_everything_off(pod: Pod) -> None:
    """What the boot unit does after a power cut: the ExecStart of podman-kube@.service (podman 4.3) plays the
    same manifest again (--replace, with a service container), volumes kept. module_0's HV is on before."""
    with DcsClient(pod.settings("operator")) as client:
        before = wait_status(client, "caen/status", lambda s: s["connected"], 30)
        if before["modules_hv_on"] == 0:  # this test alone: switch something on first, or it proves nothing
            assert client.command("caen", "lv_on", {"modules": ["module_0"]}, timeout=30)["ok"]
            assert client.command("caen", "hv_on", {"modules": ["module_0"]}, timeout=30)["ok"]
            wait_status(client, "caen/status", lambda s: s["modules_hv_on"] == 1, 60)
    podman("pod", "kill", pod.name)  # no clean shutdown
    t0 = time.monotonic()
    podman(*boot_unit_play_args(pod.manifest), timeout=300)
    wait_port("127.0.0.1", pod.port, timeout=60)
    with DcsClient(pod.settings("operator")) as client:
        client.subscribe(["caen/#", "julabo/status", "ph2acf/status"])
        cut = time.time() - (time.monotonic() - t0)
        status = wait_status(client, "caen/status", lambda s: s["connected"] and s["ts"] >= cut, 90)
        pod.timings["power_cut_to_caen_ready_s"] = time.monotonic() - t0
        time.sleep(4)  # a few status cycles: nothing may come back on by itself
        status = wait_status(client, "caen/status", lambda s: s["connected"] and s["ts"] >= cut, 30)
        assert status["state"] == "OFF" and status["modules_hv_on"] == 0, status
        for module in ("module_0", "module_1", "module_2"):
            wait_status(client, f"caen/status/module/{module}", lambda s: s["state"] == "OFF" and s["ts"] >= cut, 20)
        julabo = wait_status(client, "julabo/status", lambda s: s["connected"], 60)
        assert julabo["state"] == "STOPPED"  # the chiller is not started by itself
