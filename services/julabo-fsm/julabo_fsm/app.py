"""julabo-fsm: the Julabo chiller on MQTT. Wires the config, the link, the I/O driver and the Service."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trackerdcs.commands import Arg, CommandError
from trackerdcs.completion import Completion
from trackerdcs.config import ConfigError, MqttSettings, section
from trackerdcs.configmodel import validate
from trackerdcs.deadband import Deadband
from trackerdcs.service import Service

from .config import JulaboFile
from .driver import SETPOINT_READING, SETPOINT_SETTING, ChillerDriver, DriverConfig
from .fsm import State
from .link import SerialLink
from .protocol import ModelMap, Reading, Setting, model_map

log = logging.getLogger(__name__)

DEADBANDS = {
    "bath_temp": Deadband(absolute=0.02),
    "external_temp": Deadband(absolute=0.02),
    "heating_power": Deadband(absolute=1.0),
    # A new read time alone is no reason to publish: it goes out with the next change or heartbeat (and a
    # value that becomes stale turns null, which is a change).
    **{f"{name}_read_at": Deadband(absolute=math.inf) for name in ("bath_temp", "external_temp", "heating_power")},
    "status_read_at": Deadband(absolute=math.inf),
}


@dataclass
class JulaboConfig:
    """The ``julabo:`` section of the service config (see example.yml)."""

    connection: str
    model: str = "hightech"
    setpoint_min: float = -40.0
    setpoint_max: float = 40.0
    reply_timeout_s: float = 0.5
    serial: dict[str, Any] = field(default_factory=dict)
    driver: DriverConfig = field(default_factory=DriverConfig)
    root: str = "julabo"
    heartbeat_s: float = 30.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> JulaboConfig:
        """Validate a loaded YAML mapping (:class:`julabo_fsm.config.JulaboFile`) into the service's config."""
        if not isinstance(cfg.get("julabo"), Mapping):
            section(cfg, "julabo", required=True)  # the usual message for a missing or non-mapping section
        sec = validate(JulaboFile, cfg).julabo
        driver_fields = set(DriverConfig.__dataclass_fields__)
        out = cls(
            connection=sec.connection,
            model=sec.model,
            setpoint_min=sec.limits.setpoint_min,
            setpoint_max=sec.limits.setpoint_max,
            reply_timeout_s=sec.reply_timeout_s,
            serial=sec.serial.model_dump(exclude_none=True),
            driver=DriverConfig(**{k: v for k, v in sec.model_dump().items() if k in driver_fields}),
            root=sec.root,
            heartbeat_s=sec.heartbeat_s,
        )
        if out.setpoint_min >= out.setpoint_max:
            raise ConfigError("julabo.limits: setpoint_min must be below setpoint_max")
        if out.driver.pacing_s < 0.25:
            log.warning("pacing_s=%s is below the 250 ms the chiller needs: expect lost replies", out.driver.pacing_s)
        return out


class JulaboApp:
    """The running service: MQTT endpoint plus the chiller driver."""

    def __init__(self, config: JulaboConfig, mqtt: MqttSettings) -> None:
        self.config = config
        self.model: ModelMap = model_map(config.model)
        self.service = Service(config.root, mqtt, root=config.root, heartbeat_s=config.heartbeat_s, deadbands=DEADBANDS)
        serial_opts = {
            k: config.serial[k] for k in ("baudrate", "bytesize", "parity", "stopbits", "rtscts") if k in config.serial
        }
        self.link = SerialLink(
            config.connection, pacing_s=config.driver.pacing_s, reply_timeout_s=config.reply_timeout_s, **serial_opts
        )
        self.driver = ChillerDriver(self.link, self.model, config.driver, self)
        self.service.health.extra.update({"connection": config.connection, "model_map": self.model.name})
        self._register()

    # ------------------------------------------------------------------ Listener
    def snapshot(self, payload: dict[str, Any], force: bool) -> None:
        self.service.health.extra.update(
            {
                "link": self.driver.counters,
                "last_cycle_s": self.driver.last_cycle_s,
                "link_error": self.driver.last_error,
            }
        )
        self.service.publish_status(payload, force=force)

    def event(self, kind: str, message: str, severity: str, **data: Any) -> None:
        self.service.event(kind, message, severity=severity, **data)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.service.start()
        self.driver.start()

    def stop(self) -> None:
        self.driver.stop()
        self.service.stop()

    # ------------------------------------------------------------------ commands
    def _register(self) -> None:
        svc = self.service
        lo, hi = self.config.setpoint_min, self.config.setpoint_max
        svc.add_command(
            "start",
            self.cmd_start,
            help="start the circulator (remote mode, no alarm)",
            completion=Completion(
                done=(State.RUNNING.value,),
                failed=(State.ALARM.value, State.ERROR.value, State.DISCONNECTED.value),
                timeout_s=30.0,
                show=("bath_temp", "setpoint"),
                description="the chiller reads RUNNING",
            ),
        )
        svc.add_command(
            "stop",
            self.cmd_stop,
            help="stop the circulator",
            completion=Completion(
                done=(State.STOPPED.value,),
                failed=(State.ERROR.value, State.DISCONNECTED.value),
                timeout_s=30.0,
                show=("bath_temp",),
                description="the chiller reads STOPPED",
            ),
        )
        setpoint = Arg("index", int, minimum=1, maximum=3, help="setpoint 1, 2 or 3")
        svc.add_command(
            "set_setpoint",
            self.cmd_set_setpoint,
            (setpoint, Arg("value", float, minimum=lo, maximum=hi, help="degC")),
            help=f"write setpoint 1-3 in degC (configured limits {lo}..{hi})",
        )
        svc.add_command(
            "select_setpoint", self.cmd_select_setpoint, (setpoint,), help="make setpoint 1, 2 or 3 the active one"
        )
        svc.add_command(
            "control_sensor",
            self.cmd_control_sensor,
            (Arg("sensor", str, choices=("internal", "external")),),
            help="regulate on the internal (bath) or the external sensor",
        )
        svc.add_command(
            "pump_stage", self.cmd_pump_stage, (Arg("stage", int, minimum=1, maximum=4),), help="pump stage 1-4"
        )
        svc.add_command("refresh", self.cmd_refresh, help="re-read every value now and republish the status")
        svc.add_command("reconnect", self.cmd_reconnect, help="drop the link and connect again now")

    def _usable(self) -> None:
        """Refusals that need no I/O: the chiller must be reachable and in remote mode."""
        if not self.driver.connected:
            raise CommandError(self.driver.not_connected_message())
        self.driver.require_remote()

    def cmd_start(self, args: dict[str, Any]) -> dict[str, Any]:
        self._usable()
        d = self.driver

        def action() -> dict[str, Any]:
            d.require_startable()
            report = d.start_verified()
            d.publish(force=True)
            return {"state": d.state.value, "status_text": report.text}

        return d.call(action)

    def cmd_stop(self, args: dict[str, Any]) -> dict[str, Any]:
        d = self.driver

        def action() -> dict[str, Any]:
            # Sent even if the chiller seems in manual mode: stopping is never refused here. Verified by
            # STATUS and IN_MODE_05, sent again if not confirmed; a stop that still fails is an alarm event.
            report = d.stop_verified()
            d.publish(force=True)
            return {"state": d.state.value, "status_text": report.text}

        return d.call(action)

    def cmd_set_setpoint(self, args: dict[str, Any]) -> dict[str, Any]:
        self._usable()
        index, value = args["index"], round(args["value"], 2)
        d = self.driver

        def action() -> dict[str, Any]:
            got = d.write_verified(SETPOINT_SETTING[index], value, SETPOINT_READING[index])
            d.publish()
            return {"index": index, "value": got}

        return d.call(action)

    def cmd_select_setpoint(self, args: dict[str, Any]) -> dict[str, Any]:
        self._usable()
        index = args["index"]
        d = self.driver

        def action() -> dict[str, Any]:
            d.write_verified(Setting.ACTIVE_SETPOINT, index - 1, Reading.ACTIVE_SETPOINT)
            d.publish()
            return {"active_setpoint": index, "setpoint": d.values.get(SETPOINT_READING[index])}

        return d.call(action)

    def cmd_control_sensor(self, args: dict[str, Any]) -> dict[str, Any]:
        self._usable()
        external = args["sensor"] == "external"
        d = self.driver

        def action() -> dict[str, Any]:
            if external and d.readback(Reading.EXTERNAL_TEMP) is None:
                raise CommandError(
                    "no external Pt100 connected (IN_PV_02 reads ---.--): controlling on it would alarm the chiller"
                )
            d.write_verified(Setting.CONTROL_SENSOR, int(external), Reading.CONTROL_SENSOR)
            d.publish()
            return {"control_sensor": args["sensor"]}

        return d.call(action)

    def cmd_pump_stage(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.model.can_write(Setting.PUMP_STAGE):
            raise CommandError(f"model '{self.model.name}' has no pump-stage command")
        self._usable()
        stage = args["stage"]
        d = self.driver

        def action() -> dict[str, Any]:
            got = d.write_verified(Setting.PUMP_STAGE, stage, Reading.PUMP_STAGE)
            d.publish()
            return {"pump_stage": stage if got is None else int(got)}

        return d.call(action)

    def cmd_refresh(self, args: dict[str, Any]) -> dict[str, Any]:
        d = self.driver

        def action() -> dict[str, Any]:
            snapshot = d.refresh_all()
            self.service.publish_status(snapshot, force=True)
            return snapshot

        return d.call(action)

    def cmd_reconnect(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.driver.request_reconnect()
