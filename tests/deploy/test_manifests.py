"""The deployment description: the pod manifests, their operational rules, configs, secrets and Kubernetes form.

These run without podman; tests/deploy/test_pod.py plays the pod for real.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from trackerdcs.config import MqttSettings, expand_env
from trackerdcs_ops import deploytools

REPO = Path(__file__).resolve().parents[2]


def _quiet(_message: str) -> None:
    pass


def rendered(profile: str) -> list[dict]:
    return deploytools.render(REPO, profile, warn=_quiet)


def site_env(name: str) -> dict[str, str]:
    return deploytools._read_env_file(REPO / "deploy" / name)


@pytest.mark.parametrize(
    ("generated", "profile", "form"),
    [
        ("pod.yml", "production", "podman"),
        ("pod-sim.yml", "sim", "podman"),
        ("deploy/k8s/trackerdcs.yml", "production", "kubernetes"),
        ("deploy/k8s/trackerdcs-sim.yml", "sim", "kubernetes"),
    ],
)
def test_checked_in_manifests_match_their_sources(generated: str, profile: str, form: str) -> None:
    """pod.yml & co. are generated; a stale one would deploy old configs.

    Fix: python -m trackerdcs_ops.deploytools write"""
    docs = rendered(profile)
    docs = deploytools.for_podman(docs) if form == "podman" else deploytools.to_kubernetes(docs)
    on_disk = [d for d in yaml.safe_load_all((REPO / generated).read_text()) if d]

    def by_name(items: list[dict]) -> dict[str, dict]:
        return {f"{d['kind']}/{d['metadata']['name']}": d for d in items}

    want, have = by_name(docs), by_name(on_disk)
    stale = sorted(name for name in want.keys() | have.keys() if want.get(name) != have.get(name))
    assert not stale, f"{generated} is stale in {stale}: run `python -m trackerdcs_ops.deploytools write` and commit"


@pytest.mark.parametrize("profile", ["production", "sim"])
def test_every_container_has_probes_limits_volumes_and_secrets_done_right(profile: str) -> None:
    assert deploytools.check_pod(rendered(profile)) == []


def test_the_rule_check_catches_each_kind_of_mistake() -> None:
    docs = rendered("production")
    pod = deploytools.pod_of(docs)
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    del containers["caen-fsm"]["livenessProbe"]
    del containers["julabo-fsm"]["resources"]["limits"]["memory"]
    containers["mosquitto"]["ports"][0]["hostIP"] = "0.0.0.0"
    containers["ph2acf-bridge"]["command"][0] = "ph2acf-bridge"
    containers["grafana"]["env"].append({"name": "GF_SECURITY_ADMIN_PASSWORD", "value": "admin"})
    containers["mosquitto"]["livenessProbe"]["exec"]["command"] = ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/1883"]
    pod["spec"]["restartPolicy"] = "Never"
    docs = [d for d in docs if d["metadata"].get("name") != "trackerdcs-influxdb-data"]
    problems = "\n".join(deploytools.check_pod(docs))
    for expected in (
        "caen-fsm: no livenessProbe",
        "julabo-fsm: needs cpu and memory limits",
        "mosquitto: hostPort 1883 must be bound to 127.0.0.1",
        "ph2acf-bridge: command 'ph2acf-bridge' must be an absolute path",
        "grafana: GF_SECURITY_ADMIN_PASSWORD given as a plain value",
        "restartPolicy must be Always",
        "mosquitto: livenessProbe arguments must not contain spaces",
        "no PVC trackerdcs-influxdb-data",
    ):
        assert expected in problems


def test_every_stateful_service_keeps_its_data_on_a_persistent_volume() -> None:
    pod = deploytools.pod_of(rendered("production"))
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    claims = {
        c["name"]: [
            volumes[m["name"]]["persistentVolumeClaim"]["claimName"]
            for m in c.get("volumeMounts", [])
            if "persistentVolumeClaim" in volumes[m["name"]]
        ]
        for c in pod["spec"]["containers"]
    }
    for name in ("mosquitto", "influxdb", "grafana", "node-red", "mongodb", "ph2acf-bridge"):
        assert claims[name] == [f"trackerdcs-{name.removesuffix('-bridge')}-data"]


def test_podman_manifests_leave_volume_creation_to_podman() -> None:
    """podman 4.3 refuses to replay a PVC whose volume exists: the pod must come back after a reboot."""
    for name in ("pod.yml", "pod-sim.yml"):
        kinds = {d["kind"] for d in yaml.safe_load_all((REPO / name).read_text()) if d}
        assert kinds == {"ConfigMap", "Pod"}


def test_simulation_profile_adds_the_simulators_and_points_the_services_at_them() -> None:
    prod, sim = deploytools.pod_of(rendered("production")), deploytools.pod_of(rendered("sim"))
    names = [c["name"] for c in sim["spec"]["containers"]]
    assert names == [c["name"] for c in prod["spec"]["containers"]] + ["caen-sim", "julabo-sim", "ph2acf-sim"]
    env = site_env("site-sim.env")
    assert env["EPICS_CA_ADDR_LIST"] == "127.0.0.1"
    assert env["JULABO_CONNECTION"].startswith("socket://127.0.0.1:")
    julabo_sim = next(c for c in sim["spec"]["containers"] if c["name"] == "julabo-sim")
    assert env["JULABO_CONNECTION"].rsplit(":", 1)[1] in julabo_sim["command"]
    assert site_env("site.env")["EPICS_CA_ADDR_LIST"] != "127.0.0.1"


@pytest.mark.parametrize("site", ["site.env", "site-sim.env"])
def test_the_shipped_service_configs_are_accepted_by_the_services(site: str) -> None:
    from caen_fsm.config import parse_config
    from julabo_fsm.app import JulaboConfig
    from ph2acf_bridge.settings import load_settings

    env = {**site_env(site), "MONGODB_ROOT_PASSWORD": "x"}
    configs = {}
    for name in ("caen-fsm", "julabo-fsm", "ph2acf-bridge"):
        text = (REPO / "deploy" / "config" / f"{name}.yml").read_text()
        configs[name] = yaml.safe_load(expand_env(text, env))
        mqtt = MqttSettings.from_config(configs[name]["mqtt"], env={})
        assert mqtt.password_file is None, "the pod gives the password as DCS_MQTT_PASSWORD (a password_file wins)"
        assert (mqtt.host, mqtt.port) == ("127.0.0.1", 1883)
    assert parse_config(configs["caen-fsm"]).modules
    assert JulaboConfig.from_config(configs["julabo-fsm"])
    settings = load_settings(configs["ph2acf-bridge"])
    assert settings.mode == "tcp"
    assert settings.spool_dir.is_relative_to("/var/lib/trackerdcs/ph2acf")  # on the ph2acf-data volume


def _secrets_made_by_setup_script() -> dict[str, set[str]]:
    text = (REPO / "deploy" / "setup-secrets").read_text().replace("\\\n", " ")
    made: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = re.match(r"\s*make_secret (\S+) (.*)", line)
        if m and m.group(1) != "trackerdcs-mqtt":
            made[m.group(1)] = {pair.split("=")[0] for pair in m.group(2).split()}
    users = {u for u in (REPO / "mosquitto" / "users").read_text().split() if not u.startswith("#")}
    made["trackerdcs-mqtt"] = {"passwd", *users}
    return made


def test_setup_secrets_creates_every_secret_key_the_pod_reads() -> None:
    made = _secrets_made_by_setup_script()
    for profile in ("production", "sim"):
        for name, keys in deploytools.secret_keys(rendered(profile)).items():
            assert name in made, f"{name} is read by the pod but not created by deploy/setup-secrets"
            assert keys <= made[name], f"{name}: keys {keys - made[name]} missing"


def test_no_secret_material_in_the_manifests() -> None:
    for name in ("pod.yml", "pod-sim.yml", "deploy/k8s/trackerdcs.yml"):
        docs = [d for d in yaml.safe_load_all((REPO / name).read_text()) if d]
        assert not [d for d in docs if d["kind"] == "Secret"]
        assert "$7$" not in (REPO / name).read_text()  # no mosquitto password hash


def test_localizing_replaces_or_leaves_out_missing_images_and_isolates_names() -> None:
    local = yaml.safe_load((REPO / "deploy" / "local-images.yml").read_text())
    available = {
        "localhost/trackerdcs-mosquitto:latest",
        "localhost/trackerdcs-base:latest",
        "localhost/trackerdcs-caen-fsm:latest",
        "localhost/trackerdcs-debian:bookworm",
    }
    result = deploytools.localize(
        rendered("sim"), local_images=local, image_exists=available.__contains__, prefix="t-", host_ports={1883: 41883}
    )
    pod = deploytools.pod_of(result.docs)
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == [
        "mosquitto", "caen-fsm", "julabo-fsm", "ph2acf-bridge", "burnin", "audit", "caen-sim", "julabo-sim",
        "ph2acf-sim",
    ]  # fmt: skip
    assert result.replaced["julabo-fsm"] == "localhost/trackerdcs-base:latest"
    assert "caen-fsm" not in result.replaced
    assert set(result.left_out) == {
        "influxdb", "influx-tiers", "telegraf", "grafana", "node-red", "mongodb", "grafana-secret-files",
    }  # fmt: skip
    assert result.left_out["influx-tiers"] == "serves influxdb, which is left out"
    assert "Telegraf is not packaged" in result.left_out["telegraf"]
    assert pod["metadata"]["name"] == "t-trackerdcs-sim"
    assert all(ref["name"].startswith("t-trackerdcs-") for ref in deploytools._secret_refs(pod))
    assert all(d["metadata"]["name"].startswith("t-") for d in result.docs if d["kind"] == "ConfigMap")
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [
        "t-trackerdcs-mosquitto-data", "t-trackerdcs-ph2acf-data", "t-trackerdcs-burnin-data", "t-trackerdcs-audit-data"
    ]  # fmt: skip
    assert pod["spec"]["containers"][0]["ports"][0] == {
        "name": "mqtt",
        "containerPort": 1883,
        "hostPort": 41883,
        "hostIP": "127.0.0.1",
    }
    assert "initContainers" not in pod["spec"] or pod["spec"]["initContainers"] == []


def test_kubernetes_form_is_one_recreated_replica_with_services_and_registry_images() -> None:
    docs = deploytools.to_kubernetes(rendered("production"))
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Deployment") == 1 and "Pod" not in kinds
    assert kinds.count("PersistentVolumeClaim") == 8
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    spec = deployment["spec"]["template"]["spec"]
    for c in [*spec["containers"], *spec["initContainers"]]:
        assert not c["image"].startswith("localhost/")
        assert all("hostPort" not in p and "hostIP" not in p for p in c.get("ports", []))
    service = next(d for d in docs if d["kind"] == "Service")
    assert sorted(p["port"] for p in service["spec"]["ports"]) == [1880, 1883, 3000]


def test_kubernetes_manifests_pass_strict_schema_validation(tmp_path: Path) -> None:
    """kubectl --dry-run=client needs an API server for discovery, which we cannot run here; instead the
    kustomize build (kubectl's own, offline) is validated against the Kubernetes 1.37 JSON schemas."""
    validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    kubectl = shutil.which("kubectl")
    if kubectl:
        built = subprocess.run(
            [kubectl, "kustomize", str(REPO / "deploy" / "k8s")], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        docs = [d for d in yaml.safe_load_all(built) if d]
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"trackerdcs"}
    else:
        docs = [
            d
            for f in ("namespace.yml", "trackerdcs.yml")
            for d in yaml.safe_load_all((REPO / "deploy" / "k8s" / f).read_text())
            if d
        ]
    docs += [d for d in yaml.safe_load_all((REPO / "deploy" / "k8s" / "trackerdcs-sim.yml").read_text()) if d]
    for doc in docs:
        validate.validate(doc, "1.37.0", strict=True)  # raises ValidationError with the path of the problem
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 3
    with pytest.raises(validate.ValidationError):
        validate.validate(broken, "1.37.0", strict=True)


def test_boot_units_play_the_manifest_build_and_play_writes() -> None:
    deploy = REPO / "deploy"
    default = re.search(r"^manifest=(\S+)$", (deploy / "build-and-play").read_text(), re.M).group(1)
    quadlet = (deploy / "systemd" / "trackerdcs.kube").read_text()
    assert f"Yaml={default}\n" in quadlet
    assert re.search(r"^Restart=always$", quadlet, re.M)
    escaped = default.replace("-", "\\x2d").replace("/", "-")  # systemd-escape of an absolute path
    dropin = deploy / "systemd" / f"podman-kube@{escaped}.service.d" / "trackerdcs.conf"
    assert dropin.is_file()
    assert "Restart=on-failure" in dropin.read_text()
