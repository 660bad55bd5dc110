"""Every service reads its YAML strictly: a wrong type or an unknown key stops it with one line naming the file,
the key and what was expected (exit status 2), instead of a traceback or, worse, a setting silently not applied.

The three mistakes seen on real stands, for every service where they can happen:

- a word where a number belongs (``heartbeat_s: abc``) ended in a Python traceback;
- a quoted ``'false'`` for a switch was read as true (``bool('false')`` is True);
- a misspelled section (``limts:``) was ignored, so a limit the operator believed in was not applied.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from trackerdcs.config import ConfigError, MqttSettings

pytestmark = pytest.mark.fast


def _caen(cfg: dict[str, Any]) -> Any:
    from caen_fsm.config import parse_config

    return parse_config(cfg)


def _julabo(cfg: dict[str, Any]) -> Any:
    from julabo_fsm.app import JulaboConfig

    return JulaboConfig.from_config(cfg)


def _ph2acf(cfg: dict[str, Any]) -> Any:
    from ph2acf_bridge.settings import load_settings

    return load_settings(cfg)


def _burnin(cfg: dict[str, Any]) -> Any:
    from burnin.settings import parse_settings

    return parse_settings(cfg)


#: service -> (its loader, a minimal valid config, its main() module, the app it would build when the config is good)
SERVICES: dict[str, tuple[Callable[[dict[str, Any]], Any], dict[str, Any], str, str]] = {
    "caen-fsm": (
        _caen,
        {"channels": [{"module": "module_0", "lv": [0, 0], "hv": [12, 0]}]},
        "caen_fsm.main",
        "caen_fsm.app.CaenApp",
    ),
    "julabo-fsm": (
        _julabo,
        {"julabo": {"connection": "socket://127.0.0.1:1"}},
        "julabo_fsm.main",
        "julabo_fsm.main.JulaboApp",
    ),
    "ph2acf-bridge": (
        _ph2acf,
        {"ph2acf": {"base_dir": "/opt/Ph2_ACF"}},
        "ph2acf_bridge.main",
        "ph2acf_bridge.main.Bridge",
    ),
    "burnin": (_burnin, {"modules": {"module_0": {}}}, "burnin.main", "burnin.app.BurninApp"),
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with ``value`` at the dotted ``path``."""
    out = yaml.safe_load(yaml.safe_dump(base))
    node = out
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out


# (service, dotted key, bad value, words the one-line error must contain besides the key)
WORD_FOR_A_NUMBER = [
    ("caen-fsm", "service.heartbeat_s", "abc", "number"),
    ("caen-fsm", "interlock.stale_s", "abc", "number"),
    ("caen-fsm", "mqtt.port", "abc", "integer"),
    ("julabo-fsm", "julabo.heartbeat_s", "abc", "number"),
    ("julabo-fsm", "julabo.poll_interval_s", "abc", "number"),
    ("julabo-fsm", "julabo.max_missed", "three", "integer"),
    ("julabo-fsm", "mqtt.keepalive", "abc", "integer"),
    ("ph2acf-bridge", "ph2acf.tcp.poll_s", "abc", "number"),
    ("ph2acf-bridge", "storage.replay_interval_s", "abc", "number"),
    ("ph2acf-bridge", "ph2acf.max_run_s", "abc", "number"),
    ("burnin", "stale_s", "abc", "number"),
    ("burnin", "limits.setpoint_min", "abc", "number"),
]

QUOTED_FALSE = [
    ("caen-fsm", "service.apply_settings_on_switch_on", "false", "true or false"),
    ("caen-fsm", "interlock.required", "false", "true or false"),
    ("julabo-fsm", "julabo.restore_after_power_failure", "false", "true or false"),
    ("ph2acf-bridge", "ph2acf.refuse_when_interlock_tripped", "false", "true or false"),
    ("burnin", "require_interlock", "false", "true or false"),
    ("burnin", "mqtt.tls_insecure", "false", "true or false"),
]

MISSPELLED_KEY = [
    ("caen-fsm", "limts", {"hv": {"V0Set": 300}}, "unknown key"),
    ("caen-fsm", "service.heartbeat", 10, "unknown key"),
    ("julabo-fsm", "limts", {"setpoint_min": -20}, "unknown key"),
    ("julabo-fsm", "julabo.limits.setpoint_mni", -20, "unknown key"),
    ("ph2acf-bridge", "strage", {"archive_dir": "/x"}, "unknown key"),
    ("ph2acf-bridge", "ph2acf.refuse_when_interlock_triped", False, "unknown key"),
    ("burnin", "limts", {"setpoint_min": -20}, "unknown key"),
    ("burnin", "modules.module_0.hv_limit", 300, "unknown key"),
]

CASES = WORD_FOR_A_NUMBER + QUOTED_FALSE + MISSPELLED_KEY


def _ids(case: tuple) -> str:
    return f"{case[0]}:{case[1]}={case[2]!r}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_the_loader_refuses_the_mistake_naming_the_key_and_the_expected_type(case: tuple) -> None:
    service, key, value, expected = case
    load, base, _, _ = SERVICES[service]
    config = _with(base, key, value)
    with pytest.raises(ConfigError) as refused:
        if key.startswith("mqtt."):
            MqttSettings.from_config(config["mqtt"], env={})
        load(config)
    message = str(refused.value)
    assert key in message, message
    assert expected in message, message
    assert "\n" not in message


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_the_service_stops_with_one_line_naming_the_file_and_exit_status_2(
    case: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    service, key, value, expected = case
    _, base, main_module, app = SERVICES[service]

    def accepted(*_: Any, **__: Any) -> None:
        raise AssertionError(f"{service} accepted {key}: {value!r}")

    monkeypatch.setattr(app, accepted)
    monkeypatch.setattr("trackerdcs.servicemain.setup_logging", lambda *_, **__: None)  # pytest keeps the root logger
    path = tmp_path / f"{service}.yml"
    path.write_text(yaml.safe_dump(_with(base, key, value)))
    status = importlib.import_module(main_module).main(["--config", str(path)])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and key in err and expected in err, err
    assert "Traceback" not in err


def test_an_unknown_key_is_shown_with_the_keys_that_exist_there() -> None:
    """The operator who wrote ``limts:`` sees ``limits`` in the same line, at any depth."""
    load, base, _, _ = SERVICES["caen-fsm"]
    with pytest.raises(ConfigError, match=r"^limts: unknown key \(known: mqtt, .*\blimits\b.*\)$"):
        load(_with(base, "limts", {}))
    with pytest.raises(ConfigError, match=r"^limits\.hv\.V0Set\.mx: unknown key \(known: min, max\)$"):
        load(_with(base, "limits", {"hv": {"V0Set": {"mx": 300}}}))
    with pytest.raises(ConfigError, match=r"^limits\.hv\.V0Set: expected a number or a mapping, got '300'$"):
        load(_with(base, "limits", {"hv": {"V0Set": "300"}}))


def test_the_shipped_and_deployed_configs_load() -> None:
    """Strictness refuses nothing the project itself ships."""
    from trackerdcs.config import load_yaml

    repo = Path(__file__).parents[2]
    for service, paths in SHIPPED.items():
        if service not in SERVICES:
            continue
        load = SERVICES[service][0]
        for rel in paths:
            config = load_yaml(repo / rel, env={"PH2ACF_BASE_DIR": "/opt/Ph2_ACF"})
            MqttSettings.from_config(config.get("mqtt"), env={})
            assert load(config) is not None, rel


def test_the_environment_still_overrides_mqtt_settings_with_its_strings() -> None:
    """``DCS_MQTT_*`` values are text by nature: they are read as what the key expects, and refused if nonsense."""
    settings = MqttSettings.from_config(
        {"tls_insecure": True}, env={"DCS_MQTT_PORT": "1884", "DCS_MQTT_TLS_INSECURE": "false"}
    )
    assert settings.port == 1884 and settings.tls_insecure is False
    with pytest.raises(ConfigError, match="DCS_MQTT_KEEPALIVE"):
        MqttSettings.from_config({}, env={"DCS_MQTT_KEEPALIVE": "soon"})


SHIPPED = {
    "caen-fsm": ["services/caen-fsm/example.yml", "deploy/config/caen-fsm.yml"],
    "julabo-fsm": ["services/julabo-fsm/example.yml", "deploy/config/julabo-fsm.yml"],
    "ph2acf-bridge": ["services/ph2acf-bridge/example.yml", "services/ph2acf-bridge/sim.yml"],
    "burnin": ["services/burnin/sim.yml", "deploy/config/burnin.yml"],
    "dcs-audit": ["deploy/config/audit.yml"],
}


def test_the_published_schemas_are_current() -> None:
    """docs/config-schema/*.json are what the models say (regenerate: python -m trackerdcs.configschema)."""
    from trackerdcs import configschema

    repo = Path(__file__).parents[2]
    assert set(configschema.SERVICES) == set(SHIPPED)
    assert configschema.stale(repo / "docs" / "config-schema") == []


def test_the_published_schemas_accept_the_shipped_files_and_refuse_a_misspelled_key() -> None:
    """An editor or CI checking a file against the published schema agrees with the service."""
    import json

    import jsonschema

    from trackerdcs.config import load_yaml

    repo = Path(__file__).parents[2]
    for service, paths in SHIPPED.items():
        schema = json.loads((repo / "docs" / "config-schema" / f"{service}.json").read_text())
        validator = jsonschema.Draft202012Validator(schema)
        for rel in paths:
            config = load_yaml(repo / rel, env={})
            assert not list(validator.iter_errors(config)), rel
            assert list(validator.iter_errors({**config, "limts": {}})), f"{rel} with limts:"


def test_a_file_can_be_checked_before_it_is_deployed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trackerdcs.configschema import main

    repo = Path(__file__).parents[2]
    assert main(["check", "julabo-fsm", str(repo / "services/julabo-fsm/example.yml")]) == 0
    bad = tmp_path / "julabo.yml"
    bad.write_text("julabo:\n  connection: /dev/ttyUSB0\n  restore_after_power_failure: 'false'\n")
    assert main(["check", "julabo-fsm", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"julabo-fsm: configuration error: {bad}: julabo.restore_after_power_failure: expected true or false, "
        "got 'false'"
    )
