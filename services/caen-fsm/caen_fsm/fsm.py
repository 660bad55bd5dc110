"""The hierarchical state machines of the crate: channel -> module (LV+HV pair) -> system (sans-I/O).

:class:`Plant` is fed with PV values and connection changes (:meth:`Plant.apply`) and with operator commands
(:meth:`Plant.command`); it never touches the network. It answers with :class:`Outcome` objects listing the
puts to perform, the events to publish and the channels/modules whose status changed.

The machines are ``transitions`` machines, one per level, shared by all models of that level:

* channel states (:class:`ChannelState`) are derived from the decoded Status bits and the CA connection;
* module states (:class:`ModuleState`) are derived from the two channel states; the operator commands
  (:class:`Command`) are triggers of the module machine whose sources encode the safety rules
  (HV on only from LV_ON / HV states; nothing from TRIPPED or DISCONNECTED except switching off);
* the system state (:class:`SystemState`) is derived from the module states.

Safety rules implemented here:

* ``hv_on`` is refused (for the whole request) when any requested module does not have its LV on;
* ``lv_off`` on a module whose HV is not off first switches HV off and only switches LV off once the HV
  channel reads OFF below ``hv_safe_voltage`` (sequenced by :meth:`Plant.apply`, not blocking);
* if a module's LV goes off, trips or is unplugged while its HV is switched on, HV is switched off
  ("interlock" event);
* nothing is ever switched on except by ``lv_on``/``hv_on``: connection, reconnection and updates only read;
* after a (re)connect a channel stays DISCONNECTED until every one of its PVs has sent a value since: nothing
  cached from before a disconnect is kept, published or acted on;
* enum PVs (Pw, PDwn, ImRange, ClearAlarm) are written and read by label, with the IOC's own label list
  (:mod:`caen_fsm.enums`); a label the IOC does not offer refuses the command.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from transitions import Machine

from .config import CaenConfig, ChannelConfig
from .enums import EnumReading, LabelError, UnitsReading
from .flavour import BIT_NUMBERS, SERVICE_UNITS, Flavour
from .pvnames import PARAMS, canonical_param
from .states import ChannelState, Command, Kind, ModuleState, SystemState
from .status_bits import channel_state, decode


class CommandRefused(Exception):
    """An operator command cannot be carried out; the message is meant for the operator."""


@dataclass(frozen=True)
class Put:
    """Write ``value`` to PV ``pv``."""

    pv: str
    value: float | int


@dataclass
class Event:
    """An event for ``<root>/event``."""

    kind: str
    message: str
    severity: str = "info"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What the caller must do after feeding the plant."""

    puts: list[Put] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    channels: set[str] = field(default_factory=set)
    modules: set[str] = field(default_factory=set)
    system: bool = False
    result: dict[str, Any] = field(default_factory=dict)
    #: Modules a command could not act on, each with the reason (the others in ``result`` were acted on).
    refused: dict[str, str] = field(default_factory=dict)
    #: The operator's answer when part of the command was refused (the puts are still to be carried out).
    refusal: str | None = None

    @property
    def accepted(self) -> list[str]:
        """The modules the command acted on."""
        return list(self.result.get("modules", []))

    def merge(self, other: Outcome) -> Outcome:
        self.puts += other.puts
        self.events += other.events
        self.channels |= other.channels
        self.modules |= other.modules
        self.system = self.system or other.system
        self.refused |= other.refused
        self.refusal = self.refusal or other.refusal
        return self


# ---------------------------------------------------------------------------------------------- derivations
def module_state(lv: ChannelState, hv: ChannelState) -> ModuleState:
    """The state of a module from the states of its LV and HV channels."""
    C = ChannelState
    if C.DISCONNECTED in (lv, hv) or C.UNPLUGGED in (lv, hv):
        return ModuleState.DISCONNECTED
    if C.TRIPPED in (lv, hv):
        return ModuleState.TRIPPED
    if C.ERROR in (lv, hv):
        return ModuleState.MIXED
    if hv == C.OFF:
        return {
            C.OFF: ModuleState.OFF,
            C.ON: ModuleState.LV_ON,
            C.RAMP_UP: ModuleState.LV_RAMP_UP,
            C.RAMP_DOWN: ModuleState.LV_RAMP_DOWN,
        }[lv]
    if lv == C.ON:
        return {C.ON: ModuleState.HV_ON, C.RAMP_UP: ModuleState.HV_RAMP_UP, C.RAMP_DOWN: ModuleState.HV_RAMP_DOWN}[hv]
    return ModuleState.MIXED  # HV powered without LV fully on


_RAMPING = {ModuleState.LV_RAMP_UP, ModuleState.LV_RAMP_DOWN, ModuleState.HV_RAMP_UP, ModuleState.HV_RAMP_DOWN}


def system_state(states: Iterable[ModuleState]) -> SystemState:
    """The crate state from its module states."""
    states = list(states)
    if not states or ModuleState.DISCONNECTED in states:
        return SystemState.DISCONNECTED
    if ModuleState.TRIPPED in states:
        return SystemState.TRIPPED
    unique = set(states)
    if unique == {ModuleState.OFF}:
        return SystemState.OFF
    if unique == {ModuleState.LV_ON}:
        return SystemState.LV_ON
    if unique == {ModuleState.HV_ON}:
        return SystemState.HV_ON
    if unique & _RAMPING:
        return SystemState.RAMPING
    return SystemState.MIXED


# ---------------------------------------------------------------------------------------------- models
class ChannelModel:
    """One channel: its configuration, latest PV values and connection (model of the channel machine)."""

    state: ChannelState

    def __init__(self, cfg: ChannelConfig, flavour: Flavour, system: str) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.flavour = flavour
        params = [p for p in PARAMS[cfg.kind] if p not in flavour.absent]
        where = (system, cfg.slot, cfg.channel)
        #: the PV each parameter is read from ("Status.<BIT>" keys: one PV per Status bit)
        self.read_pvs: dict[str, str] = {p: flavour.read_pv(*where, p) for p in params if p != "Status"}
        self.read_pvs.update(flavour.status_pvs(*where))
        #: the PV each writable parameter is written to
        self.write_pvs: dict[str, str] = {
            p: flavour.write_pv(*where, p) for p in params if PARAMS[cfg.kind][p].writable
        }
        #: every PV subscribed: the read PVs, and the write PVs of enums written elsewhere than read ("<P>@w":
        #: their labels are learnt from the PV written, never assumed equal to the read-back's)
        self.pvs: dict[str, str] = dict(self.read_pvs)
        for param, pv in self.write_pvs.items():
            if PARAMS[cfg.kind][param].enum is not None and pv != self.read_pvs.get(param):
                self.pvs[f"{param}@w"] = pv
        self.values: dict[str, Any] = {}  # only values read since the PV's latest connect
        self.labels: dict[str, tuple[str, ...]] = {}  # enum labels as the IOC gave them (same lifetime)
        self.units: dict[str, str] = {}  # EGU as the IOC gave them (same lifetime)
        #: parameters whose EGU must be read before the channel is known (units from the IOC)
        self.egu_params = frozenset(p for p in SERVICE_UNITS if p in self.read_pvs) if flavour.units == "egu" else ()
        self.bits: dict[str, bool] = {}  # bits form: each Status bit PV's value (same lifetime)
        self.disconnected: set[str] = set(self.pvs.values())
        self.fresh: set[str] = set()  # PVs with a value since their latest connect
        self.overrides: dict[str, Any] = {}  # runtime 'set' values, re-applied before switching on

    @property
    def connected(self) -> bool:
        """Every PV connected *and* read since it (re)connected: only then is the channel known."""
        return not self.disconnected and len(self.fresh) == len(self.pvs) and len(self.units) >= len(self.egu_params)

    def lose(self, pv: str, param: str) -> None:
        """The PV disconnected: forget what it said (a value from before a disconnect is never current)."""
        self.disconnected.add(pv)
        self.fresh.discard(pv)
        self.values.pop(param, None)
        self.labels.pop(param, None)
        self.units.pop(param, None)
        if param.startswith("Status."):
            self.bits.pop(param[len("Status.") :], None)
            self.values.pop("Status", None)

    def take(self, param: str, value: Any) -> bool | None:
        """Store one PV value; True when the Status word changed, None when an enum came without labels."""
        if isinstance(value, EnumReading):
            self.labels[param] = value.labels
            value = value.index
        elif (param in PARAMS[self.cfg.kind] and PARAMS[self.cfg.kind][param].enum is not None) or param.endswith("@w"):
            return None
        form = self.flavour.status.form
        if param.startswith("Status."):
            self.bits[param[len("Status.") :]] = int(value) != 0
            if len(self.bits) < len(self.flavour.status.bits):
                return False  # the word is known once every bit is
            word = sum(1 << BIT_NUMBERS[b] for b, v in self.bits.items() if v)
            self.values["Status"] = word
            return True
        if param == "Status" and form == "highest":
            index = int(value) - self.flavour.status.offset
            self.values["Status.highest"] = int(value)
            self.values["Status"] = 1 << index if index >= 0 else 0
            return True
        self.values[param] = value
        return param == "Status"

    def derive(self) -> ChannelState:
        return channel_state(self.values.get("Status"), self.connected, partial=self.flavour.partial_status)

    def label(self, param: str) -> str | None:
        """The label an enum PV reads (None when not read or not an enum)."""
        labels, value = self.labels.get(param), self.values.get(param)
        if labels is None or value is None or not 0 <= int(value) < len(labels):
            return None
        return labels[int(value)]

    @property
    def on(self) -> bool:
        return self.flavour.word("Pw", self.label("Pw")) == "On"

    def write_labels(self, param: str) -> tuple[str, ...] | None:
        """The labels of the PV ``param`` is written to."""
        return self.labels.get(f"{param}@w" if f"{param}@w" in self.pvs else param)

    def encode(self, param: str, value: Any) -> float | int:
        """The number to put on ``param`` for ``value`` (enum labels: their index in the IOC's list of the PV
        written, through the flavour's aliases; signed parameters: with the board's sign)."""
        spec = PARAMS[self.cfg.kind][param]
        if spec.enum is not None:
            pv, labels = self.write_pvs[param], self.write_labels(param)
            if labels is None:
                raise LabelError(f"{pv}: enum labels not known yet (the PV has not sent its control information)")
            index = self.flavour.find(param, labels, str(value))
            if index is None:
                raise LabelError(
                    f"{pv}: the IOC offers {', '.join(labels) or 'no labels'}; '{value}' is not one of them"
                )
            return index
        if spec.integer:
            return int(value)
        return float(value) * (self.cfg.polarity if param in self.cfg.signed else 1)

    def pw_put(self, on: bool) -> Put:
        """The put switching this channel on or off (raises :class:`LabelError` if Pw's labels are unknown)."""
        return Put(self.write_pvs["Pw"], self.encode("Pw", "On" if on else "Off"))

    def snapshot(self) -> dict[str, Any]:
        """The published channel document. A channel that is not fully known (a PV lost, or not read since it
        reconnected) publishes no readings at all: while a crate goes away its PVs are lost one by one, and a
        value of a PV whose loss has not arrived yet must not be shown beside a DISCONNECTED state."""
        known = self.connected
        v = self.values if known else {}
        return {
            "channel": self.name,
            "module": self.cfg.module,
            "kind": self.cfg.kind.value,
            "slot": self.cfg.slot,
            "ch": self.cfg.channel,
            "state": self.state.value,
            "on": self.on if known else False,
            "vmon": _num(v.get("VMon")),
            "imon": _num(v.get("IMon")),
            "v0set": _num(v.get("V0Set")),
            "i0set": _num(v.get("I0Set")),
            "status": None if v.get("Status") is None else int(v["Status"]),
            "flags": decode(v.get("Status")),
            "pdwn": self.label("PDwn") if known else None,
            "imrange": self.label("ImRange") if known else None,
        }

    def desired(self) -> dict[str, Any]:
        return {**self.cfg.settings, **self.overrides}


class ModuleModel:
    """A tracker module (model of the module machine)."""

    state: ModuleState

    def __init__(self, name: str, lv: ChannelModel, hv: ChannelModel, sequenced: set[str] | None = None) -> None:
        self.name = name
        self.lv = lv
        self.hv = hv
        self._sequenced = set() if sequenced is None else sequenced  # shared: names with an LV-off pending
        self._lv_off_pending_since: float | None = None
        self.interlock_armed = True

    @property
    def lv_off_pending_since(self) -> float | None:
        """When the pending LV-off sequence started (None: none pending)."""
        return self._lv_off_pending_since

    @lv_off_pending_since.setter
    def lv_off_pending_since(self, value: float | None) -> None:
        self._lv_off_pending_since = value
        if value is None:
            self._sequenced.discard(self.name)
        else:
            self._sequenced.add(self.name)

    def derive(self) -> ModuleState:
        return module_state(self.lv.state, self.hv.state)

    def lv_is_on(self) -> bool:
        return self.lv.state == ChannelState.ON

    def no_lv_off_pending(self) -> bool:
        return self.lv_off_pending_since is None

    def snapshot(self) -> dict[str, Any]:
        return {
            "module": self.name,
            "state": self.state.value,
            "lv_channel": self.lv.name,
            "hv_channel": self.hv.name,
            "lv_vmon": _num(self.lv.values.get("VMon")),
            "lv_imon": _num(self.lv.values.get("IMon")),
            "hv_vmon": _num(self.hv.values.get("VMon")),
            "hv_imon": _num(self.hv.values.get("IMon")),
            # the bias a switch-on ramps to: a client that drives the module (the burn-in's IV scan restores it)
            # needs no subscription to the channel documents
            "hv_v0set": _num(self.hv.values.get("V0Set")),
        }


class SystemModel:
    """The crate as a whole (model of the system machine)."""

    state: SystemState


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


_ALL_MODULE_STATES = list(ModuleState)
_SWITCHABLE = [s for s in ModuleState if s not in (ModuleState.TRIPPED, ModuleState.DISCONNECTED)]
_HV_ALLOWED = [ModuleState.LV_ON, ModuleState.HV_RAMP_UP, ModuleState.HV_ON, ModuleState.HV_RAMP_DOWN]
_CONNECTED = [s for s in ModuleState if s != ModuleState.DISCONNECTED]

#: The command transitions of the module machine. Destinations are None: the state follows the hardware.
MODULE_COMMANDS = [
    {"trigger": Command.LV_ON.value, "source": _SWITCHABLE, "dest": None},  # also cancels a pending LV-off
    {
        "trigger": Command.HV_ON.value,
        "source": _HV_ALLOWED,
        "dest": None,
        "conditions": ["lv_is_on", "no_lv_off_pending"],
    },
    {"trigger": Command.HV_OFF.value, "source": _CONNECTED, "dest": None},
    {"trigger": Command.LV_OFF.value, "source": _CONNECTED, "dest": None},
]


# ---------------------------------------------------------------------------------------------- the plant
class Plant:
    """All channels, modules and the system, with their machines and the safety logic."""

    def __init__(self, config: CaenConfig) -> None:
        self.config = config
        self.flavour = config.flavour
        self.channels = {name: ChannelModel(c, config.flavour, config.system) for name, c in config.channels.items()}
        self._sequenced: set[str] = set()  # modules with an LV-off sequence pending (kept by ModuleModel)
        self.modules = {
            name: ModuleModel(name, self.channels[m.lv], self.channels[m.hv], self._sequenced)
            for name, m in config.modules.items()
        }
        self.system = SystemModel()
        self.pv_index: dict[str, tuple[ChannelModel, str]] = {}
        for ch in self.channels.values():
            for param, pv in ch.pvs.items():
                self.pv_index[pv] = (ch, param)
        self.clear_alarm_pv = config.flavour.clear_pv(config.system)  # None: the IOC has no crate-level clear
        self.channel_machine = Machine(
            model=list(self.channels.values()), states=ChannelState, initial=ChannelState.DISCONNECTED
        )
        self.module_machine = Machine(
            model=list(self.modules.values()),
            states=ModuleState,
            initial=ModuleState.DISCONNECTED,
            transitions=MODULE_COMMANDS,
        )
        self.system_machine = Machine(model=self.system, states=SystemState, initial=SystemState.DISCONNECTED)
        self.ever_connected = False
        self._connected = False
        self._module_of = {ch: m.name for m in self.modules.values() for ch in (m.lv.name, m.hv.name)}
        self.interlock_state = "MISSING"  # the permit as last evaluated (published in the system status)
        self.clear_alarm_reading: Any = None  # latest ClearAlarm reading (EnumReading or number)
        self._unlabelled_reported: set[str] = set()
        self._enforced_at: dict[str, float] = {}  # module -> when the interlock last switched it off

    # ------------------------------------------------------------------ inputs
    @property
    def pv_names(self) -> list[str]:
        return [*self.pv_index, *([self.clear_alarm_pv] if self.clear_alarm_pv else [])]

    @property
    def write_only_pvs(self) -> list[str]:
        """PVs only written (an IOC with separate read-backs): connected, never subscribed."""
        read = set(self.pv_index)
        written = (pv for ch in self.channels.values() for pv in ch.write_pvs.values())
        return list(dict.fromkeys(pv for pv in written if pv not in read))

    @property
    def egu_pvs(self) -> set[str]:
        """PVs whose engineering units are read (with their values) and checked at start."""
        if self.flavour.units != "egu":
            return set()
        return {ch.read_pvs[p] for ch in self.channels.values() for p in SERVICE_UNITS if p in ch.read_pvs}

    def apply(
        self,
        values: Iterable[tuple[str, Any]] = (),
        connections: Iterable[tuple[str, bool]] = (),
        now: float = 0.0,
    ) -> Outcome:
        """Feed PV values and connection changes (and the time, for sequence timeouts); get what to do."""
        out = Outcome()
        touched: set[str] = set()
        rederive: set[str] = set()  # channels whose state may have changed (Status or readiness)
        before: dict[str, bool] = {}  # readiness of each touched channel before this batch
        for pv, conn in connections:
            entry = self.pv_index.get(pv)
            if entry is None:
                if pv == self.clear_alarm_pv and not conn:
                    self.clear_alarm_reading = None
                continue
            ch, param = entry
            before.setdefault(ch.name, ch.connected)
            if conn:
                ch.disconnected.discard(pv)  # connected, but not known until it sends a value
            else:
                ch.lose(pv, param)
            touched.add(ch.name)
        for pv, value in values:
            entry = self.pv_index.get(pv)
            if entry is None:
                if pv == self.clear_alarm_pv:
                    self.clear_alarm_reading = value
                continue
            ch, param = entry
            if pv in ch.disconnected:
                continue  # an update overtaken by the loss of its PV: nothing from before a disconnect
            before.setdefault(ch.name, ch.connected)
            if isinstance(value, UnitsReading):
                ch.units[param] = value.units  # not a value: the PV is fresh only once its value came
                touched.add(ch.name)
                continue
            status_changed = ch.take(param, value)
            if status_changed is None:
                self._unlabelled(pv, out)
                continue  # an enum without labels cannot be decoded: the channel stays unknown
            ch.fresh.add(pv)
            touched.add(ch.name)
            if status_changed:
                rederive.add(ch.name)
        readiness_changed = False
        for name, was in before.items():
            if self.channels[name].connected != was:
                rederive.add(name)
                readiness_changed = True
        out.channels |= touched
        changed = False
        for name in rederive:  # the channel state depends only on Status and the readiness
            changed |= self._observe_channel(self.channels[name], out)
        modules = {self._module_of[n] for n in touched if n in self._module_of}
        modules |= self._sequenced
        for name in modules:
            changed |= self._observe_module(self.modules[name], out, now)
        if readiness_changed:
            self._connected = all(c.connected for c in self.channels.values())
        if changed or readiness_changed or connections or not self.ever_connected:
            self._observe_system(out)
        return out

    def _unlabelled(self, pv: str, out: Outcome) -> None:
        if pv in self._unlabelled_reported:
            return
        self._unlabelled_reported.add(pv)
        out.events.append(
            Event(
                "enum_unknown",
                f"{pv} sent a value without enum labels: its channel stays unknown (no index is guessed)",
                "alarm",
                {"pv": pv},
            )
        )

    def _observe_channel(self, ch: ChannelModel, out: Outcome) -> bool:
        new = ch.derive()
        if new == ch.state:
            return False
        if new != ch.state:
            old = ch.state
            ch.trigger(f"to_{new.name}")
            if new == ChannelState.TRIPPED:
                out.events.append(
                    Event(
                        "trip",
                        f"channel {ch.name} tripped ({', '.join(decode(ch.values.get('Status')))})",
                        "alarm",
                        {"channel": ch.name, "module": ch.cfg.module, "flags": decode(ch.values.get("Status"))},
                    )
                )
            elif new == ChannelState.UNPLUGGED:
                out.events.append(
                    Event("unplugged", f"channel {ch.name} reads UNPLUGGED", "alarm", {"channel": ch.name})
                )
            elif new == ChannelState.ERROR:
                out.events.append(
                    Event(
                        "channel_error",
                        f"channel {ch.name} reports {', '.join(decode(ch.values.get('Status')))}",
                        "alarm",
                        {"channel": ch.name, "flags": decode(ch.values.get("Status")), "from": old.value},
                    )
                )
        return True

    def _observe_module(self, m: ModuleModel, out: Outcome, now: float) -> bool:
        new = m.derive()
        changed = new != m.state
        if changed:
            old = m.state
            m.trigger(f"to_{new.name}")
            out.modules.add(m.name)
            out.events.append(
                Event(
                    "state_change",
                    f"module {m.name}: {old.value} -> {new.value}",
                    "info",
                    {"module": m.name, "from": old.value, "to": new.value},
                )
            )
        else:
            out.modules.add(m.name)  # readings changed
        # interlock: HV must not stay on without LV
        lv_lost = m.lv.state in (ChannelState.OFF, ChannelState.TRIPPED, ChannelState.RAMP_DOWN, ChannelState.UNPLUGGED)
        if lv_lost and m.hv.connected and m.hv.on:
            if m.interlock_armed:
                m.interlock_armed = False
                self._off(m.hv, out)
                out.events.append(
                    Event(
                        "interlock",
                        f"module {m.name}: LV is {m.lv.state.value} while HV is on; switching HV off",
                        "alarm",
                        {"module": m.name, "lv_state": m.lv.state.value},
                    )
                )
        else:
            m.interlock_armed = True
        # LV-off sequence: LV goes off once HV is really off
        if m.lv_off_pending_since is not None:
            if not (m.lv.connected and m.hv.connected):
                m.lv_off_pending_since = None
                out.events.append(
                    Event(
                        "sequence_aborted",
                        f"module {m.name}: LV-off sequence aborted, channel disconnected (LV left as is)",
                        "warning",
                        {"module": m.name},
                    )
                )
            elif self._hv_is_off(m):
                m.lv_off_pending_since = None
                self._off(m.lv, out)
                out.events.append(
                    Event("lv_off_done", f"module {m.name}: HV is off, LV switched off", "info", {"module": m.name})
                )
            elif now - m.lv_off_pending_since > self.config.lv_off_timeout_s:
                m.lv_off_pending_since = None
                out.events.append(
                    Event(
                        "sequence_aborted",
                        f"module {m.name}: HV did not reach 0 V within {self.config.lv_off_timeout_s:g} s; LV left on",
                        "alarm",
                        {"module": m.name, "hv_vmon": _num(m.hv.values.get("VMon"))},
                    )
                )
        return changed

    @staticmethod
    def _off(ch: ChannelModel, out: Outcome) -> None:
        """Switch ``ch`` off; an alarm event if its Pw labels are unknown (nothing can be written then)."""
        try:
            out.puts.append(ch.pw_put(False))
        except LabelError as exc:
            out.events.append(Event("switch_off_failed", str(exc), "alarm", {"channel": ch.name}))

    def _hv_is_off(self, m: ModuleModel) -> bool:
        vmon = m.hv.values.get("VMon")
        return (
            m.hv.state in (ChannelState.OFF, ChannelState.TRIPPED)
            and not m.hv.on
            and vmon is not None
            and abs(float(vmon)) <= self.config.hv_safe_voltage
        )

    def _observe_system(self, out: Outcome) -> None:
        if self.modules:
            new = system_state(m.state for m in self.modules.values())
        else:
            new = SystemState.DISCONNECTED if not self.connected else SystemState.MIXED
        connected = self.connected
        first = connected and not self.ever_connected
        if first:
            self.ever_connected = True
            out.events.append(Event("connected", f"all {len(self.pv_index)} PVs connected", "info"))
        if new != self.system.state:
            old = self.system.state
            self.system.trigger(f"to_{new.name}")
            out.system = True
            if new == SystemState.DISCONNECTED and self.ever_connected:
                lost = sum(1 for c in self.channels.values() if not c.connected)
                out.events.append(
                    Event(
                        "disconnected",
                        f"crate unreachable ({lost} channels disconnected)",
                        "alarm",
                        {"channels_disconnected": lost},
                    )
                )
            elif old == SystemState.DISCONNECTED and self.ever_connected and connected and not first:
                out.events.append(Event("reconnected", f"crate reachable again, state {new.value}", "info"))
        if self.modules_summary() != getattr(self, "_last_summary", None):
            self._last_summary = self.modules_summary()
            out.system = True

    @property
    def connected(self) -> bool:
        """Every PV of every channel connected (recomputed when connections change)."""
        return self._connected

    def modules_summary(self) -> tuple[int, int, int]:
        ms = self.modules.values()
        return (
            len(self.modules),
            sum(1 for m in ms if m.state == ModuleState.HV_ON),
            sum(1 for m in ms if m.state == ModuleState.TRIPPED),
        )

    def system_snapshot(self) -> dict[str, Any]:
        total, hv_on, tripped = self.modules_summary()
        return {
            "state": self.system.state.value,
            "connected": self.connected,
            "interlock": self.interlock_state,
            "modules_total": total,
            "modules_hv_on": hv_on,
            "modules_tripped": tripped,
            # word | bits | highest: "highest" = only the highest Status bit is known (see caen_fsm.flavour)
            "status_form": self.flavour.status.form,
        }

    # ------------------------------------------------------------------ commands
    def resolve_modules(self, names: list[str] | None) -> list[ModuleModel]:
        """The modules named (all when None); unknown names refuse the command."""
        if names is None:
            if not self.modules:
                raise CommandRefused("no modules configured")
            return list(self.modules.values())
        if not names:
            raise CommandRefused("empty module list (omit 'modules' to address all modules)")
        unknown = [n for n in names if n not in self.modules]
        if unknown:
            raise CommandRefused(
                f"unknown module(s): {', '.join(unknown)}; known: {', '.join(sorted(self.modules)) or 'none'}"
            )
        return [self.modules[n] for n in dict.fromkeys(names)]

    def command(self, cmd: Command, names: list[str] | None, now: float = 0.0) -> Outcome:
        """Decide a module command. Switching on is all or nothing: :class:`CommandRefused` (then nothing is
        done). Switching off is best effort: the outcome acts on every reachable module and lists the others
        in ``refused`` (module -> reason) with the operator's answer in ``refusal``; its puts are still due."""
        modules = self.resolve_modules(names)
        out = Outcome()
        if cmd in (Command.LV_ON, Command.HV_ON):
            refused = [m for m in modules if not getattr(m, f"may_{cmd.value}")()]
            if refused:
                raise CommandRefused(self._why(cmd, refused))
            for m in modules:
                m.trigger(cmd.value)
                ch = m.lv if cmd == Command.LV_ON else m.hv
                if cmd == Command.LV_ON and m.lv_off_pending_since is not None:
                    m.lv_off_pending_since = None
                    out.events.append(Event("sequence_aborted", f"module {m.name}: LV-off cancelled by lv_on"))
                try:
                    out.puts += self.settings_puts(ch)
                    out.puts.append(ch.pw_put(True))
                except LabelError as exc:
                    raise CommandRefused(f"{cmd.value} refused for {m.name}: {exc}") from None
            out.result = {"modules": [m.name for m in modules]}
            return out
        # switching off: best effort on every reachable module, report the unreachable ones
        reachable = [
            m
            for m in modules
            if getattr(m, f"may_{cmd.value}")() and m.hv.connected and (cmd == Command.HV_OFF or m.lv.connected)
        ]
        unreachable = {m.name: self._unreachable_reason(m) for m in modules if m not in reachable}
        sequenced: list[str] = []
        for m in reachable:
            m.trigger(cmd.value)
            self._off(m.hv, out)
            if cmd == Command.LV_OFF:
                if self._hv_is_off(m):
                    self._off(m.lv, out)
                else:
                    if m.lv_off_pending_since is None:
                        m.lv_off_pending_since = now
                    sequenced.append(m.name)
        out.result = {"modules": [m.name for m in reachable]}
        if sequenced:
            out.result["waiting_for_hv_off"] = sequenced
            out.events.append(
                Event(
                    "lv_off_sequence",
                    f"HV ramping down before LV off: {', '.join(sequenced)}",
                    "info",
                    {"modules": sequenced},
                )
            )
        if unreachable:
            out.result["unreachable"] = list(unreachable)
            out.refused = unreachable
            out.refusal = (
                f"{cmd.value} sent to {len(reachable)} module(s) but NOT to disconnected module(s): "
                + ", ".join(f"{name} ({why})" for name, why in unreachable.items())
            )
        return out

    @staticmethod
    def _unreachable_reason(m: ModuleModel) -> str:
        """Why a switch-off cannot reach module ``m``."""
        lost = [ch.name for ch in (m.lv, m.hv) if not ch.connected]
        if lost:
            return f"{', '.join(lost)} disconnected"
        return f"module {m.state.value}: LV {m.lv.state.value}, HV {m.hv.state.value}"

    def enforce_off(self, lv: bool, now: float, why: str, resend_s: float = 5.0) -> Outcome:
        """Switch HV off on every channel that is on (and LV too if ``lv``: HV first, as ``lv_off`` does),
        again every ``resend_s`` while a channel still reads on. Used for the interlock permit."""
        out = Outcome()
        acted: list[str] = []

        def due(name: str) -> bool:
            last = self._enforced_at.get(name)
            return last is None or now - last >= resend_s

        for m in self.modules.values():
            if not due(m.name):
                continue
            hit = False
            if m.hv.connected and m.hv.on:
                self._off(m.hv, out)
                hit = True
            if lv and m.lv.connected and m.lv.on and m.lv_off_pending_since is None:
                if self._hv_is_off(m) and not hit:
                    self._off(m.lv, out)
                else:
                    m.lv_off_pending_since = now  # LV follows once HV reads off (see apply)
                hit = True
            if hit:
                self._enforced_at[m.name] = now
                acted.append(m.name)
        for ch in self.channels.values():  # channels outside modules
            if ch.name in self._module_of or not due(ch.name) or not (ch.connected and ch.on):
                continue
            if ch.cfg.kind == Kind.HV or lv:
                self._off(ch, out)
                self._enforced_at[ch.name] = now
                acted.append(ch.name)
        if acted:
            what = "HV and LV" if lv else "HV"
            out.events.append(
                Event(
                    "interlock_enforce",
                    f"{why}: switching {what} off ({', '.join(acted)})",
                    "alarm",
                    {"modules": acted, "lv": lv},
                )
            )
            out.result = {"switched_off": acted}
        return out

    def reset_enforcement(self) -> None:
        """Forget when channels were last switched off by :meth:`enforce_off` (a new demand acts at once)."""
        self._enforced_at.clear()

    def _why(self, cmd: Command, refused: list[ModuleModel]) -> str:
        def reason(m: ModuleModel) -> str:
            if m.state == ModuleState.TRIPPED:
                return f"{m.name} (TRIPPED: clear_alarms first)"
            if m.state == ModuleState.DISCONNECTED:
                return f"{m.name} (DISCONNECTED)"
            if m.lv_off_pending_since is not None:
                return f"{m.name} (LV-off sequence in progress)"
            return f"{m.name} (LV is {m.lv.state.value}, module {m.state.value})"

        listing = ", ".join(reason(m) for m in refused)
        if cmd == Command.HV_ON:
            return f"hv_on refused: LV must be on first; not possible for module(s): {listing}"
        return f"{cmd.value} refused for module(s): {listing}"

    def settings_puts(self, ch: ChannelModel) -> list[Put]:
        """Puts bringing the channel's settings to the configured/overridden values (only those that differ)."""
        if not self.config.apply_settings_on_switch_on:
            return []
        puts = []
        for param, value in ch.desired().items():
            raw = ch.encode(param, value)
            current = ch.values.get(param)
            if current is None or abs(float(current) - float(raw)) > 1e-9 * max(1.0, abs(float(raw))):
                puts.append(Put(ch.write_pvs[param], raw))
        return puts

    def set_param(self, ch: ChannelModel, param: str, value: Any) -> Outcome:
        """Validate against the configured limits (numbers) or the IOC's labels (enums) and write one
        parameter (remembered as an override, re-applied before switching on)."""
        canonical = canonical_param(param, ch.cfg.kind)
        spec = PARAMS[ch.cfg.kind].get(canonical) if canonical else None
        if canonical in ch.cfg.absent:
            raise CommandRefused(f"{ch.name}: this IOC (flavour {self.flavour.name}) has no {canonical} parameter")
        if spec is not None and spec.enum is not None and spec.writable and canonical != "Pw":
            if not isinstance(value, str):
                raise CommandRefused(f"{ch.name}: {canonical} takes a label (a string), got {value!r}")
            checked: Any = value
        else:
            try:
                checked = ch.cfg.check(param, value)
            except ValueError as exc:
                raise CommandRefused(str(exc)) from None
        if not ch.connected:
            raise CommandRefused(f"{ch.name} is disconnected")
        assert canonical is not None
        try:
            raw = ch.encode(canonical, checked)
        except LabelError as exc:
            raise CommandRefused(str(exc)) from None
        if spec is not None and spec.enum is not None:
            checked = (ch.write_labels(canonical) or ())[int(raw)]  # as the IOC spells it
        ch.overrides[canonical] = checked
        out = Outcome(puts=[Put(ch.write_pvs[canonical], raw)])
        out.result = {"channel": ch.name, "param": canonical, "value": checked, "pv": ch.write_pvs[canonical]}
        return out

    def clear_alarms(self) -> Outcome:
        tripped = [c.name for c in self.channels.values() if c.state == ChannelState.TRIPPED]
        reading = self.clear_alarm_reading
        if self.clear_alarm_pv is None:
            raise CommandRefused(
                f"this IOC (flavour {self.flavour.name}) has no crate-level clear: clear the trip at the crate"
            )
        if reading is None:
            raise CommandRefused(f"{self.clear_alarm_pv} is not connected")
        if isinstance(reading, EnumReading):
            value = self.flavour.find("ClearAlarm", reading.labels, "Yes")
            if value is None:
                raise CommandRefused(
                    f"{self.clear_alarm_pv}: the IOC offers {', '.join(reading.labels)}; 'Yes' is not one of them"
                )
        else:
            value = 1  # a plain number: 1 clears
        out = Outcome(puts=[Put(self.clear_alarm_pv, value)])
        out.result = {"tripped_channels": tripped}
        return out
