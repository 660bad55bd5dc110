"""The bridge's configuration (YAML sections ``ph2acf:`` and ``storage:``), validated up front."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trackerdcs.config import ConfigError, section

from .calibrations import calibrations, tcp_names

#: ``tcp.release`` values: which MiddlewareController the bridge talks to, and the framing it speaks.
TCP_RELEASES = {"2019-2020": "len4", "2021-2022": "len8"}
PROTOBUF_RELEASES = ("2023+", "protobuf", "current")

DEFAULT_ARGS = {
    "it": ["-f", "{config_file}", "-c", "{calibration}"],
    "ot": ["-b", "-f", "{config_file}", "-c", "{calibration}"],
}
DEFAULT_EXECUTABLE = {"it": "CMSITminiDAQ", "ot": "runCalibration"}


@dataclass
class SubprocessSettings:
    executable: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    abort_grace_s: float = 10.0


@dataclass
class TcpSettings:
    host: str = "127.0.0.1"
    port: int = 5000
    release: str = ""
    poll_s: float = 1.0
    timeout_s: float = 10.0
    abort_wait_s: float = 3600.0

    @property
    def framing(self) -> str:
        """``len4`` or ``len8``: decided by the release, never guessed on the wire."""
        return TCP_RELEASES[self.release]


@dataclass
class MongoSettings:
    uri: str | None = None
    database: str = "trackerdcs"
    timeout_ms: int = 2000
    gridfs_threshold_bytes: int = 1_000_000


@dataclass
class BridgeSettings:
    root: str = "ph2acf"
    stand: str = "teststand"
    mode: str = "subprocess"
    flavour: str = "it"
    base_dir: str = ""
    workdir: Path = Path(".")
    config_file: str = "CMSIT.xml"
    config_dirs: list[Path] = field(default_factory=list)
    calibrations: list[str] = field(default_factory=list)
    max_run_s: float = 24 * 3600.0
    refuse_when_interlock_tripped: bool = True
    caen_root: str = "caen"
    julabo_root: str = "julabo"
    env_root: str = "env"
    subprocess: SubprocessSettings = field(default_factory=SubprocessSettings)
    tcp: TcpSettings = field(default_factory=TcpSettings)
    archive_dir: Path = Path("ph2acf-archive")
    spool_dir: Path = Path("ph2acf-spool")
    state_dir: Path = Path("ph2acf-state")
    replay_interval_s: float = 30.0
    mongo: MongoSettings = field(default_factory=MongoSettings)

    @property
    def allowed_config_dirs(self) -> list[Path]:
        return [self.workdir.resolve(), *(p.resolve() for p in self.config_dirs)]


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_settings(config: Mapping[str, Any]) -> BridgeSettings:
    """Build :class:`BridgeSettings` from a loaded YAML mapping; raises ConfigError with the reason."""
    ph2 = dict(section(config, "ph2acf"))
    storage = dict(section(config, "storage"))
    sub = _build(SubprocessSettings, section(ph2, "subprocess"), "ph2acf.subprocess")
    tcp_section = dict(section(ph2, "tcp"))
    for removed, why in (
        ("header", "the framing follows ph2acf.tcp.release (a wrong framing kills the Ph2_ACF server)"),
        ("progress_query", "Ph2_ACF servers have no 'Progress?' command (an unknown command kills them)"),
    ):
        if removed in tcp_section:
            raise ConfigError(f"ph2acf.tcp.{removed} is no longer accepted: {why}")
    tcp = _build(TcpSettings, tcp_section, "ph2acf.tcp")
    mongo = _build(MongoSettings, section(storage, "mongo"), "storage.mongo")
    ph2.pop("subprocess", None)
    ph2.pop("tcp", None)
    storage.pop("mongo", None)
    for key in storage:
        if key not in ("archive_dir", "spool_dir", "state_dir", "replay_interval_s"):
            raise ConfigError(f"storage: unknown key {key}")
    settings = _build(BridgeSettings, {**ph2, **storage}, "ph2acf")
    settings.subprocess, settings.tcp, settings.mongo = sub, tcp, mongo
    if settings.mode not in ("subprocess", "tcp"):
        raise ConfigError(f"ph2acf.mode must be 'subprocess' or 'tcp', got {settings.mode!r}")
    if settings.flavour not in ("it", "ot"):
        raise ConfigError(f"ph2acf.flavour must be 'it' or 'ot', got {settings.flavour!r}")
    known = list(calibrations(settings.flavour))  # type: ignore[arg-type]
    if settings.mode == "tcp":
        tcp.release = str(tcp.release or "")
        if tcp.release in PROTOBUF_RELEASES:
            raise ConfigError(
                f"ph2acf.tcp.release {tcp.release!r}: protobuf-era MiddlewareControllers are not supported over TCP "
                "(their message layout is not public enough to be spoken safely); use mode: subprocess"
            )
        if tcp.release not in TCP_RELEASES:
            raise ConfigError(
                f"ph2acf.tcp.release must be one of {', '.join(TCP_RELEASES)} (the Ph2_ACF release of the server: "
                f"it decides the packet framing, and a wrong one kills the server), got {tcp.release!r}"
            )
        wire = tcp_names(tcp.release, settings.flavour)  # type: ignore[arg-type]
        known = [c for c in known if c in wire]
    if not settings.calibrations:
        settings.calibrations = list(known)
    unknown = [c for c in settings.calibrations if c not in known]
    if unknown:
        where = f"flavour {settings.flavour}" + (f" over TCP (release {tcp.release})" if settings.mode == "tcp" else "")
        raise ConfigError(f"ph2acf.calibrations: {', '.join(unknown)} not known for {where}")
    for name in ("workdir", "archive_dir", "spool_dir", "state_dir"):
        setattr(settings, name, Path(getattr(settings, name)))
    settings.config_dirs = [Path(p) for p in settings.config_dirs]
    if not sub.executable:
        sub.executable = DEFAULT_EXECUTABLE[settings.flavour]
    if not sub.args:
        sub.args = list(DEFAULT_ARGS[settings.flavour])
    sub.env = {str(k): str(v) for k, v in (sub.env or {}).items()}
    settings.base_dir = str(settings.base_dir or "")
    if settings.mode == "subprocess" and not (
        settings.base_dir or sub.env.get("PH2ACF_BASE_DIR") or os.environ.get("PH2ACF_BASE_DIR")
    ):
        raise ConfigError(
            "ph2acf.base_dir is not set and PH2ACF_BASE_DIR is not in the environment: Ph2_ACF's programs crash "
            "without it (it is what Ph2_ACF's setup.sh exports); set ph2acf.base_dir to the Ph2_ACF installation"
        )
    try:
        tcp.port = int(tcp.port)
        tcp.abort_wait_s = float(tcp.abort_wait_s)
        mongo.timeout_ms = int(mongo.timeout_ms)
        mongo.gridfs_threshold_bytes = int(mongo.gridfs_threshold_bytes)
        settings.max_run_s = float(settings.max_run_s)
        settings.replay_interval_s = float(settings.replay_interval_s)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"ph2acf: {exc}") from None
    if mongo.uri == "":
        mongo.uri = None
    return settings
