"""caen-fsm wiring: MQTT :class:`~trackerdcs.service.Service` + :class:`~caen_fsm.fsm.Plant` + CA adapter."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from typing import Any

from trackerdcs import latencytrace
from trackerdcs.commands import Arg, CommandError
from trackerdcs.config import MqttSettings
from trackerdcs.service import Service

from . import selfcheck
from .ca_adapter import CaAdapter
from .config import CaenConfig
from .fsm import ChannelModel, CommandRefused, Event, Outcome, Plant
from .permit import Permit, PermitView
from .pvnames import PARAMS, SETTABLE, canonical_param
from .states import COMPLETIONS, Command, Kind

log = logging.getLogger(__name__)

#: Most CA updates applied under the plant lock at once after the first full connect (50,000 while connecting).
STEADY_MAX_BATCH = 256
ALL_SETTABLE = sorted({*SETTABLE[Kind.LV], *SETTABLE[Kind.HV]})
#: Parameters whose increase can raise a channel's output voltage (refused without the interlock permit).
RAISING = ("V0Set", "I0Set")
#: How often the interlock permit is re-evaluated without a message (staleness, resending off).
PERMIT_TICK_S = 0.25


class CaenApp:
    """The caen-fsm service: commands in, puts out, CA updates in, status and events out."""

    def __init__(self, config: CaenConfig, settings: MqttSettings) -> None:
        self.config = config
        self.plant = Plant(config)
        self.lock = threading.RLock()
        self.service = Service(
            "caen",
            settings,
            root=config.root,
            heartbeat_s=config.heartbeat_s,
            deadbands=config.deadbands,
        )
        write_only = self.plant.write_only_pvs
        self.adapter = CaAdapter(
            [*self.plant.pv_names, *write_only], self._on_ca, ctrl_pvs=self.plant.egu_pvs, put_only=write_only
        )
        self.service.health.extra.update(
            {
                "pvs_total": len(self.adapter.pvnames),
                "pvs_connected": 0,
                "ca_updates": 0,
                "ca_puts": 0,
                "flavour": config.flavour.name,
                "status_form": config.flavour.status.form,
            }
        )
        self.selfcheck: selfcheck.SelfCheck | None = None
        self.exit_code = 0  # non-zero: the self-check refused the start (returned by the process)
        self.permit = Permit(config.interlock)
        self._permit_lock = threading.Lock()  # guards self.permit (fed on the MQTT thread)
        self._enforce_lock = threading.Lock()  # one evaluation at a time (MQTT thread or the permit loop)
        self._permit_wake = threading.Event()
        self._permit_thread: threading.Thread | None = None
        self._last_view: PermitView | None = None
        self._heard = False  # the interlock was heard (fresh status) at least once
        self._lost_reported = False
        self._stop = threading.Event()
        self._register_commands()
        self.started = time.monotonic()
        self.connected_after_s: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        fl = self.config.flavour
        log.info("IOC flavour %s (%s); Status form %s", fl.name, fl.description or "site flavour", fl.status.form)
        if fl.partial_status:
            log.warning(
                "IOC flavour %s gives the channel Status as a highest-bit enum: only the highest set bit is known "
                "(a condition bit such as OVC hides whether the output is on: such a channel reads ERROR; a trip "
                "under a higher fault bit reads ERROR, not TRIPPED). Nothing is guessed; prefer an IOC giving the "
                "raw word.",
                fl.name,
            )
        il = self.config.interlock
        if il.required:
            self.service.subscribe(il.status_topic, self._on_permit_status)
            self.service.subscribe(il.availability_topic, self._on_permit_availability)
            if il.chiller_topic:
                self.service.subscribe(il.chiller_topic, self._on_chiller_status)
            log.info(
                "interlock permit: power-on only while %s is fresh (< %g s) and OK; when it goes silent: %s",
                il.status_topic,
                il.stale_s,
                il.on_silent,
            )
        else:
            log.warning(
                "interlock permit NOT enforced (interlock.required: false): lv_on/hv_on are accepted without an "
                "interlock. Only for a bench without chiller; never on a cooled stand."
            )
        self.service.start()
        self.adapter.start()
        with self.lock:
            self.plant.interlock_state = self._view().state.value
            self._publish(self.plant.apply(now=time.monotonic()), everything=True)
        self._permit_thread = threading.Thread(target=self._permit_loop, name="interlock-permit", daemon=True)
        self._permit_thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._permit_wake.set()
        if self._permit_thread is not None:
            self._permit_thread.join(timeout=5)
        self.adapter.stop()
        self.service.stop()

    # ------------------------------------------------------------------ interlock permit
    def _on_permit_status(self, msg) -> None:
        latencytrace.mark(f"msg {msg.topic}")
        with self._permit_lock:
            self.permit.on_status(bytes(msg.payload), time.monotonic())
        self._enforce_now()

    def _on_permit_availability(self, msg) -> None:
        with self._permit_lock:
            self.permit.on_availability(bytes(msg.payload))
        self._enforce_now()

    def _on_chiller_status(self, msg) -> None:
        latencytrace.mark(f"msg {msg.topic}")
        with self._permit_lock:
            self.permit.on_chiller(bytes(msg.payload), time.monotonic())
        self._enforce_now()

    def _enforce_now(self) -> None:
        """Evaluate the permit on the MQTT thread, as the message arrives: a trip is acted on without a hand-over
        to another thread (milliseconds on a busy machine). The permit loop still ticks for staleness/resends."""
        try:
            self._enforce_permit()
        except Exception:
            log.exception("interlock permit evaluation failed")
            self._permit_wake.set()  # the loop tries again

    def _view(self) -> PermitView:
        with self._permit_lock:
            return self.permit.view(time.monotonic(), time.time())

    def _permit_loop(self) -> None:
        while not self._stop.is_set():
            self._permit_wake.wait(PERMIT_TICK_S)
            self._permit_wake.clear()
            if self._stop.is_set():
                return
            try:
                self._enforce_permit()
            except Exception:
                log.exception("interlock permit evaluation failed")
            self._selfcheck_missing()

    # ------------------------------------------------------------------ start-up self-check
    def _selfcheck_missing(self) -> None:
        """The IOC answers but some PVs never connect (no connection event for connect_timeout_s): refuse."""
        if self.selfcheck is not None or self.adapter.connected_count == 0 or self.plant.connected:
            return
        if time.monotonic() - self.adapter.last_change < self.config.connect_timeout_s:
            return
        missing = [pv for pv in self.adapter.pvnames if not self.adapter.is_connected(pv)]
        if missing:
            with self.lock:
                self._run_selfcheck(missing)

    def _run_selfcheck(self, missing: list[str] | None = None) -> None:
        check = self.selfcheck = selfcheck.run(self.plant, missing)
        for line in selfcheck.log_lines(check):
            log.info("%s", line)
        for warning in check.warnings:
            log.warning("IOC self-check: %s", warning)
        self.service.health.extra["selfcheck"] = check.health()
        self._publish_health()
        if check.ok:
            return
        message = check.error()
        log.error("%s; refusing to run", message)
        self.service.event("selfcheck_failed", message, severity="alarm", problems=check.problems[:12])
        self.exit_code = 3
        threading.Thread(target=self._refuse, name="selfcheck-refuse", daemon=True).start()

    def _publish_health(self) -> None:
        try:
            self.service._publish_health()  # at once: what was learnt is wanted now, not at the next interval
        except Exception:
            log.exception("health publish failed")

    def _refuse(self) -> None:
        """Let the event and health go out, then end the process as a signal would (exit status 3)."""
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    def _enforce_permit(self) -> None:
        """Follow the permit: an event at each change; HV off (and LV, HV first, for chiller reasons) while the
        interlock demands it; HV off when the interlock goes silent (``on_silent: hv_off``, the default)."""
        with self._enforce_lock:
            self._enforce_permit_locked()

    def _enforce_permit_locked(self) -> None:
        il = self.config.interlock
        view = self._view()
        last, self._last_view = self._last_view, view
        now = time.monotonic()
        if not view.silent:
            self._heard = True
        # silent: after having been heard, or never heard within stale_s of the start
        lost = view.silent and (self._heard or now - self.started > il.stale_s)
        with self.lock:
            out = Outcome()
            if last is None or last.state != view.state or last.reasons != view.reasons:
                self.plant.interlock_state = view.state.value
                self.plant.reset_enforcement()  # a new demand switches off at once, not after resend_s
                out.system = True
                if not lost:
                    out.events.append(self._permit_event(view))
            if lost and not self._lost_reported:
                what = "HV switched off" if il.on_silent == "hv_off" else "nothing switched"
                out.events.append(
                    Event(
                        "interlock_lost",
                        f"interlock not heard ({view.state.value}: {view.detail}); power-on refused, {what}",
                        "alarm",
                        {"interlock": view.state.value, "reasons": []},
                    )
                )
            self._lost_reported = lost
            if view.demands_off:
                why = f"interlock {view.state.value} ({', '.join(view.reasons) or 'no reason given'})"
                if view.chiller_fault:
                    why = f"{view.chiller_fault}; {why}"
                out.merge(self.plant.enforce_off(bool(view.lv_reasons), now, why, il.resend_s))
            elif lost and il.on_silent == "hv_off":
                out.merge(self.plant.enforce_off(False, now, f"interlock {view.state.value}", il.resend_s))
            self._execute(out)
            snapshots = self._snapshots(out)
        self._send(snapshots, out)

    @staticmethod
    def _permit_event(view: PermitView) -> Event:
        data = {"interlock": view.state.value, "reasons": list(view.reasons)}
        if view.granted:
            return Event("interlock_permit", f"interlock {view.state.value}: power-on permitted", "info", data)
        return Event("interlock_permit", view.refusal("power-on"), "warning" if view.silent else "info", data)

    # ------------------------------------------------------------------ CA updates
    def _on_ca(self, values: list[tuple[str, Any]], conns: list[tuple[str, bool]]) -> None:
        with self.lock:
            out = self.plant.apply(values, conns, now=time.monotonic())
            self._execute(out)
            snapshots = self._snapshots(out)
        if self.connected_after_s is None and self.plant.connected:
            self.connected_after_s = time.monotonic() - self.started
            log.info("all %d PVs connected after %.2f s", len(self.adapter.pvnames), self.connected_after_s)
            if self.selfcheck is None:
                with self.lock:
                    self._run_selfcheck()
            # The channel/PV objects live for the whole run: move them out of the collector's way so that
            # full collections do not stall command handling (p99 latency).
            gc.collect()
            gc.freeze()
            # From now on updates trickle in (noise, readbacks): hand them over in small batches so that a
            # command never waits long for the plant lock and a readback is published soon after it arrives.
            self.adapter.max_batch = STEADY_MAX_BATCH
        self._send(snapshots, out)
        self.service.health.extra.update(
            {
                "pvs_total": len(self.adapter.pvnames),
                "pvs_connected": self.adapter.connected_count,
                "ca_updates": self.adapter.updates,
                "ca_puts": self.adapter.puts,
                "connect_s": None if self.connected_after_s is None else round(self.connected_after_s, 3),
            }
        )

    def _execute(self, out: Outcome) -> None:
        for put in out.puts:
            self.adapter.put(put.pv, put.value)
        if out.puts:
            self.adapter.flush()

    def _snapshots(self, out: Outcome, everything: bool = False) -> list[tuple[str | None, dict[str, Any]]]:
        p = self.plant
        channels = p.channels.keys() if everything else out.channels
        modules = p.modules.keys() if everything else out.modules
        snaps: list[tuple[str | None, dict[str, Any]]] = [(f"channel/{n}", p.channels[n].snapshot()) for n in channels]
        snaps += [(f"module/{n}", p.modules[n].snapshot()) for n in modules]
        if everything or out.system:
            snaps.append((None, p.system_snapshot()))
        return snaps

    def _send(self, snapshots: list[tuple[str | None, dict[str, Any]]], out: Outcome, force: bool = False) -> int:
        sent = 0
        for sub, snap in snapshots:
            sent += self.service.publish_status(snap, sub, force=force)
        for ev in out.events:
            self.service.event(ev.kind, ev.message, severity=ev.severity, **ev.data)
        return sent

    def _publish(self, out: Outcome, everything: bool = False, force: bool = False) -> int:
        return self._send(self._snapshots(out, everything), out, force=force)

    # ------------------------------------------------------------------ commands
    def _register_commands(self) -> None:
        svc = self.service
        modules_arg = Arg("modules", list, required=False, item_kind=str, help="module names; omit for all")
        for cmd in Command:
            svc.add_command(
                cmd.value,
                self._module_command(cmd),
                [modules_arg],
                help=f"{cmd.value} for modules",
                completion=COMPLETIONS[cmd],
            )
        svc.add_command(
            "set",
            self._cmd_set,
            [
                Arg("channel", str, required=False),
                Arg("module", str, required=False),
                Arg("kind", str, required=False, choices=("lv", "hv")),
                Arg("param", str),
                Arg("value", "any"),
            ],
            help="write one parameter of a channel (checked against configured limits)",
        )
        svc.add_command("clear_alarms", self._cmd_clear_alarms, help="clear latched trips (ClearAlarm)")
        svc.add_command("refresh", self._cmd_refresh, help="republish every status now")
        svc.add_command("reconnect", self._cmd_reconnect, help="restart the search of disconnected PVs")

    def _run(self, decide) -> dict[str, Any]:
        """Decide under the plant lock, put, then publish. A refusal (nothing done) becomes a CommandError; so
        does a partial one, after the accepted part has been carried out and published."""
        with self.lock:
            try:
                out = decide()
            except CommandRefused as exc:
                raise CommandError(str(exc)) from None
            self._execute(out)
            snapshots = self._snapshots(out)
        self._send(snapshots, out)
        if out.refusal is not None:
            raise CommandError(out.refusal)
        return out.result

    def _module_command(self, cmd: Command):
        switches_on = cmd in (Command.LV_ON, Command.HV_ON)

        def decide(args: dict[str, Any]) -> Outcome:
            if switches_on:
                view = self._view()
                if not view.granted:
                    raise CommandRefused(view.refusal(cmd.value))
            return self.plant.command(cmd, args.get("modules"), now=time.monotonic())

        def handler(args: dict[str, Any]) -> dict[str, Any]:
            return self._run(lambda: decide(args))

        return handler

    def _cmd_set(self, args: dict[str, Any]) -> dict[str, Any]:
        def decide() -> Outcome:
            ch = self._target_channel(args)
            param = canonical_param(args["param"], ch.cfg.kind)
            if param == "Pw":
                raise CommandRefused("Pw cannot be set directly: use lv_on/lv_off/hv_on/hv_off")
            value = args["value"]
            if param in PARAMS[ch.cfg.kind]:
                spec = PARAMS[ch.cfg.kind][param]
                # no conversion of the JSON type: "12" is not a number, 1 is not an enum label
                value = Arg("value", str if spec.enum else int if spec.integer else float).coerce(value)
                if param in RAISING:
                    self._refuse_raise_without_permit(ch, param, value)
            elif isinstance(value, (dict, list)) or value is None:
                raise CommandRefused("'value' must be a number or an enum label")
            return self.plant.set_param(ch, args["param"], value)

        return self._run(decide)

    def _refuse_raise_without_permit(self, ch: ChannelModel, param: str, value: float) -> None:
        """Raising a set value (V0Set, I0Set) needs the interlock permit; lowering it never does."""
        view = self._view()
        if view.granted:
            return
        current = ch.values.get(param)
        if current is not None and param in ch.cfg.signed:
            current = abs(float(current))  # a negative board reads its setpoint negative
        if current is None or abs(float(value)) > float(current):
            raise CommandRefused(view.refusal(f"raising {ch.name} {param} to {value:g}"))

    def _target_channel(self, args: dict[str, Any]):
        p = self.plant
        if args.get("channel") is not None:
            if args.get("module") is not None:
                raise CommandRefused("give either 'channel' or 'module'+'kind', not both")
            ch = p.channels.get(args["channel"])
            if ch is None:
                raise CommandRefused(f"unknown channel '{args['channel'][:80]}'")
            return ch
        if args.get("module") is None or args.get("kind") is None:
            raise CommandRefused("'set' needs 'channel', or 'module' and 'kind' (lv|hv)")
        module = p.modules.get(args["module"])
        if module is None:
            raise CommandRefused(f"unknown module '{args['module'][:80]}'; known: {', '.join(sorted(p.modules))}")
        return module.lv if args["kind"] == "lv" else module.hv

    def _cmd_clear_alarms(self, args: dict[str, Any]) -> dict[str, Any]:
        return self._run(self.plant.clear_alarms)

    def _cmd_refresh(self, args: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            snapshots = self._snapshots(Outcome(), everything=True)
        sent = self._send(snapshots, Outcome(), force=True)
        return {"published": sent, "state": self.plant.system.state.value}

    def _cmd_reconnect(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"recreated_channels": self.adapter.reconnect(), "connected": self.adapter.connected_count}
