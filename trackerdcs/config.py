"""Configuration loading shared by every service: YAML files, environment overrides, secrets from files.

Secrets never live in the YAML: a password is given as ``password_file`` (a path, e.g. a podman secret
mounted under ``/run/secrets``) or through the environment (``DCS_MQTT_PASSWORD``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in ``text`` from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set and has no default")

    return _ENV_REF.sub(repl, text)


def load_yaml(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with ``${ENV}`` references expanded."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(expand_env(text, env))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def read_secret(path: str | os.PathLike[str]) -> str:
    """Return the content of a secret file without its trailing newline."""
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from None


@dataclass
class MqttSettings:
    """How a process reaches the broker. Built from a config section plus ``DCS_MQTT_*`` overrides."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    client_id: str | None = None
    keepalive: int = 10
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    # 0: the broker keeps no session for a disconnected service, so commands are never queued for a service that
    # is down and carried out when it comes back (the service re-subscribes on every connect).
    session_expiry_s: int = 0

    def resolved_password(self) -> str | None:
        """The password, read from ``password_file`` when one is given."""
        if self.password_file:
            return read_secret(self.password_file)
        return self.password

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, env: Mapping[str, str] | None = None) -> MqttSettings:
        """Build settings from a ``mqtt:`` config mapping, then apply ``DCS_MQTT_<FIELD>`` env overrides.

        The mapping is checked strictly (:class:`trackerdcs.configmodel.MqttSection`); an environment value is
        text, read as what its key expects (``DCS_MQTT_PORT=1884``, ``DCS_MQTT_TLS_INSECURE=false``)."""
        from .configmodel import MqttSection, from_environment, validate

        env = os.environ if env is None else env
        values = validate(MqttSection, section, prefix="mqtt").model_dump()
        for name in values:
            key = f"DCS_MQTT_{name.upper()}"
            if key in env and env[key] != "":
                values[name] = from_environment(MqttSection, name, key, env[key])
        if env.get("DCS_MQTT_PASSWORD") and not env.get("DCS_MQTT_PASSWORD_FILE"):
            values["password_file"] = None  # a password given in the environment beats the file named in YAML
        return cls(**values)


def section(config: Mapping[str, Any], name: str, required: bool = False) -> dict[str, Any]:
    """Return ``config[name]`` as a dict (empty if absent and not required)."""
    value = config.get(name)
    if value is None:
        if required:
            raise ConfigError(f"missing section '{name}'")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"section '{name}' must be a mapping")
    return value
