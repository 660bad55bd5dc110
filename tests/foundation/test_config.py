"""Configuration: YAML with ${ENV} references, MQTT settings from file and environment, secrets from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackerdcs.config import ConfigError, MqttSettings, expand_env, load_yaml


def test_environment_references_are_expanded_with_defaults():
    assert expand_env("${HOST:-127.0.0.1}:${PORT}", {"PORT": "1884"}) == "127.0.0.1:1884"
    with pytest.raises(ConfigError, match="PORT is not set"):
        expand_env("${PORT}", {})


def test_mqtt_settings_come_from_the_file_then_the_environment(tmp_path: Path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    settings = MqttSettings.from_config({"host": "broker", "username": "caen", "password_file": str(secret)}, env={})
    assert (settings.host, settings.port, settings.resolved_password()) == ("broker", 1883, "s3cret")
    settings = MqttSettings.from_config({"host": "broker"}, env={"DCS_MQTT_HOST": "127.0.0.1", "DCS_MQTT_PORT": "1"})
    assert (settings.host, settings.port) == ("127.0.0.1", 1)


def test_a_password_in_the_environment_beats_the_password_file_named_in_yaml():
    settings = MqttSettings.from_config({"password_file": "/run/secrets/none"}, env={"DCS_MQTT_PASSWORD": "pw"})
    assert settings.resolved_password() == "pw"


def test_bad_settings_are_refused_with_the_reason(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown key"):
        MqttSettings.from_config({"hots": "x"}, env={})
    with pytest.raises(ConfigError, match=r"mqtt\.port: input should be less than 65536"):
        MqttSettings.from_config({"port": 70000}, env={})
    with pytest.raises(ConfigError, match="cannot read secret"):
        MqttSettings.from_config({"password_file": str(tmp_path / "missing")}, env={}).resolved_password()
    bad = tmp_path / "bad.yml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_yaml(bad)
