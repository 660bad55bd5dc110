"""The bridge's configuration (YAML sections ``ph2acf:`` and ``storage:``), validated up front."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from trackerdcs.config import ConfigError, section
from trackerdcs.configmodel import ConfigModel, MqttSection, validate

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


# ---------------------------------------------------------------------------------------------------- the file
# The YAML as typed models (strict types, unknown keys refused, see trackerdcs.configmodel), one field per line.


class SubprocessSection(ConfigModel):
    """``ph2acf.subprocess``: how the Ph2_ACF executable is run (defaults follow the flavour)."""

    executable: str = ""
    args: list[str] = []
    env: dict[str, str | int | float] = {}
    abort_grace_s: float = Field(10.0, gt=0)


class TcpSection(ConfigModel):
    """``ph2acf.tcp``: the RunController / MiddlewareController server (mode tcp)."""

    host: str = "127.0.0.1"
    port: int = Field(5000, gt=0, lt=65536)
    release: str = ""
    poll_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    abort_wait_s: float = Field(3600.0, gt=0)


class Ph2acfSection(ConfigModel):
    """``ph2acf:``: the runs the bridge starts and where Ph2_ACF lives."""

    root: str = "ph2acf"
    stand: str = "teststand"
    mode: Literal["subprocess", "tcp"] = "subprocess"
    flavour: Literal["it", "ot"] = "it"
    base_dir: str = ""
    workdir: str = "."
    config_file: str = "CMSIT.xml"
    config_dirs: list[str] = []
    calibrations: list[str] = []
    max_run_s: float = Field(24 * 3600.0, gt=0)
    refuse_when_interlock_tripped: bool = True
    caen_root: str = "caen"
    julabo_root: str = "julabo"
    env_root: str = "env"
    subprocess: SubprocessSection = SubprocessSection()
    tcp: TcpSection = TcpSection()


class MongoSection(ConfigModel):
    """``storage.mongo``: MongoDB for run documents (no uri or an empty one: archive only)."""

    uri: str | None = None
    database: str = "trackerdcs"
    timeout_ms: int = Field(2000, gt=0)
    gridfs_threshold_bytes: int = Field(1_000_000, ge=0)


class StorageSection(ConfigModel):
    """``storage:``: where runs are kept (the archive always, MongoDB when reachable)."""

    archive_dir: str = "ph2acf-archive"
    spool_dir: str = "ph2acf-spool"
    state_dir: str = "ph2acf-state"
    replay_interval_s: float = Field(30.0, gt=0)
    mongo: MongoSection = MongoSection()


class Ph2acfFile(ConfigModel):
    """The ph2acf-bridge configuration file."""

    mqtt: MqttSection = MqttSection()
    ph2acf: Ph2acfSection = Ph2acfSection()
    storage: StorageSection = StorageSection()


def load_settings(config: Mapping[str, Any]) -> BridgeSettings:
    """Build :class:`BridgeSettings` from a loaded YAML mapping; raises ConfigError with the reason."""
    tcp_section = section(section(config, "ph2acf"), "tcp")
    for removed, why in (
        ("header", "the framing follows ph2acf.tcp.release (a wrong framing kills the Ph2_ACF server)"),
        ("progress_query", "Ph2_ACF servers have no 'Progress?' command (an unknown command kills them)"),
    ):
        if removed in tcp_section:
            raise ConfigError(f"ph2acf.tcp.{removed} is no longer accepted: {why}")
    file = validate(Ph2acfFile, config)
    ph2, storage = file.ph2acf, file.storage
    sub = SubprocessSettings(
        executable=ph2.subprocess.executable or DEFAULT_EXECUTABLE[ph2.flavour],
        args=list(ph2.subprocess.args) or list(DEFAULT_ARGS[ph2.flavour]),
        env={str(k): str(v) for k, v in ph2.subprocess.env.items()},
        abort_grace_s=ph2.subprocess.abort_grace_s,
    )
    tcp = TcpSettings(**ph2.tcp.model_dump())
    mongo = MongoSettings(**storage.mongo.model_dump())
    if mongo.uri == "":
        mongo.uri = None
    settings = BridgeSettings(
        root=ph2.root,
        stand=ph2.stand,
        mode=ph2.mode,
        flavour=ph2.flavour,
        base_dir=ph2.base_dir,
        workdir=Path(ph2.workdir),
        config_file=ph2.config_file,
        config_dirs=[Path(p) for p in ph2.config_dirs],
        calibrations=list(ph2.calibrations),
        max_run_s=ph2.max_run_s,
        refuse_when_interlock_tripped=ph2.refuse_when_interlock_tripped,
        caen_root=ph2.caen_root,
        julabo_root=ph2.julabo_root,
        env_root=ph2.env_root,
        subprocess=sub,
        tcp=tcp,
        archive_dir=Path(storage.archive_dir),
        spool_dir=Path(storage.spool_dir),
        state_dir=Path(storage.state_dir),
        replay_interval_s=storage.replay_interval_s,
        mongo=mongo,
    )
    known = list(calibrations(settings.flavour))  # type: ignore[arg-type]
    if settings.mode == "tcp":
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
    if settings.mode == "subprocess" and not (
        settings.base_dir or sub.env.get("PH2ACF_BASE_DIR") or os.environ.get("PH2ACF_BASE_DIR")
    ):
        raise ConfigError(
            "ph2acf.base_dir is not set and PH2ACF_BASE_DIR is not in the environment: Ph2_ACF's programs crash "
            "without it (it is what Ph2_ACF's setup.sh exports); set ph2acf.base_dir to the Ph2_ACF installation"
        )
    return settings
