"""The records layer: exposes a :class:`caen_sim.model.Crate` as a real EPICS IOC (pythonSoftIOC).

Record names follow the SY4527 EPICS server by default: ``<Sys>:<slot %02d>:<chan %03d>:<Param>`` and
``<Sys>:ClearAlarm``; another IOC's layout (names, separate read-backs, Status as one record per bit or as a
highest-bit enum, its labels, its crate clear) is chosen with a :class:`~caen_sim.presentations.Presentation`.
Simulator-only fault injection records (not on a real crate, the same for every presentation):

* ``<Sys>:SIM:<slot %02d>:<chan %03d>:Load``      load resistance (HV MOhm, LV Ohm); lower = more current
* ``<Sys>:SIM:<slot %02d>:<chan %03d>:Leakage``   extra current (HV uA, LV A) drawn while powered
* ``<Sys>:SIM:<slot %02d>:<chan %03d>:ForceTrip`` 1 = trip now (INTTRIP, power-down per PDwn)
* ``<Sys>:SIM:<slot %02d>:<chan %03d>:Unplug``    1 = board unplugged (UNPLUGGED bit, zero readings)
* ``<Sys>:SIM:PwOnPuts``                          number of Pw=On puts received since start

Enum records carry the manual's words (Pw Off/On, PDwn Kill/Ramp, ImRange High/Low, ClearAlarm No/Yes).
IOCs in the field agree on the words but not on their order or case, so the label list is a choice
(:data:`ENUM_VARIANTS`): a client must learn the labels from the IOC, never assume an index.

Must be imported only after the EPICS_* environment is set (the IOC reads it at init).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from softioc import builder

from .model import Crate, SimChannel
from .presentations import ENUM_WORDS, HIGHEST_LABELS, PRESENTATIONS, STATUS_BITS, Presentation

log = logging.getLogger(__name__)

READBACKS = ("VMon", "IMon", "Pw", "Status")  # Status last: readings are fresh when state changes

#: Label lists an IOC may serve: the manual's order, every list reversed, or upper-case words.
ENUM_VARIANTS = ("default", "reversed", "upper")


def enum_labels(variant: str) -> dict[str, tuple[str, str]]:
    """The (index 0, index 1) labels of every enum record for ``variant``."""
    if variant == "default":
        return dict(ENUM_WORDS)
    if variant == "reversed":
        return {p: (w[1], w[0]) for p, w in ENUM_WORDS.items()}
    if variant == "upper":
        return {p: (w[0].upper(), w[1].upper()) for p, w in ENUM_WORDS.items()}
    raise ValueError(f"unknown enum variant {variant!r}; one of {', '.join(ENUM_VARIANTS)}")


class CrateIoc:
    """Builds the records of a crate and keeps them in step with the model."""

    def __init__(
        self,
        crate: Crate,
        tick_s: float = 0.05,
        noise_period_s: float = 0.0,
        enum_variant: str = "default",
        presentation: str = "trackerdcs",
        negative_slots: frozenset[int] = frozenset(),
        time_scale: float = 1.0,
    ) -> None:
        self.crate = crate
        self.time_scale = time_scale  #: simulated seconds per real second
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.look: Presentation = PRESENTATIONS[presentation]
        words = self.look.words()
        self.labels = {p: w if enum_variant != "reversed" else (w[1], w[0]) for p, w in words.items()}
        if enum_variant == "upper":
            self.labels = {p: (w[0].upper(), w[1].upper()) for p, w in self.labels.items()}
        self.words = words  # the model's value order (0, 1) in this IOC's spelling
        if negative_slots and not self.look.negative_polarity_ok:
            raise ValueError(f"the {presentation} IOC takes no signed setpoints (negative boards)")
        self.negative_slots = negative_slots
        self.tick_s = tick_s
        self.noise_period_s = noise_period_s
        self.records: dict[tuple[int, int], dict[str, Any]] = {}
        self._pushed: dict[tuple[int, int], dict[str, float]] = {}
        self.record_count = 0
        self._pw_puts_rec: Any = None

    # ------------------------------------------------------------------ building
    def build(self) -> int:
        """Create every record (call before ``iocInit``); returns the number of records."""
        system = self.crate.system
        for (slot, ch), channel in self.crate.channels.items():
            self.records[(slot, ch)] = self._channel_records(slot, ch, channel)
            self._pushed[(slot, ch)] = {}
        clear = self.look.clear_name(system)
        if clear is not None:
            builder.boolOut(
                clear,
                **self._names("ClearAlarm"),
                initial_value=self.to_record("ClearAlarm", 0),
                always_update=True,
                on_update=self._clear_alarm,
            )
            self.record_count += 1
        self._pw_puts_rec = builder.longIn(f"{system}:SIM:PwOnPuts", initial_value=0)
        self.record_count += 1
        return self.record_count

    # ------------------------------------------------------------------ enum labels
    def _names(self, param: str) -> dict[str, str]:
        zero, one = self.labels[param]
        return {"ZNAM": zero, "ONAM": one}

    def to_model(self, param: str, index: Any) -> int:
        """Model value (the manual's meaning) of record index ``index`` of an enum record."""
        word = self.labels[param][int(index) != 0]
        return [w.lower() for w in self.words[param]].index(word.lower())

    def to_record(self, param: str, model_value: Any) -> int:
        """Record index of the model value of an enum parameter."""
        word = self.words[param][int(model_value) != 0]
        return [label.lower() for label in self.labels[param]].index(word.lower())

    def present(self, slot: int, param: str, model_value: Any) -> Any:
        """The value a record shows for a model value (enum index; signed setpoint/read-back on a negative board)."""
        if param in ENUM_WORDS:
            return self.to_record(param, model_value)
        if slot in self.negative_slots and param in SIGNED:
            return -float(model_value)
        return model_value

    def _channel_records(self, slot: int, ch: int, c: SimChannel) -> dict[str, Any]:
        look, system = self.look, self.crate.system
        sim = f"{system}:SIM:{slot:02d}:{ch:03d}"
        base = look.base(system, slot, ch)
        recs: dict[str, Any] = {}  # param -> the record read (and written, unless a separate read-back exists)
        self.writers: dict[tuple[int, int, str], Any] = getattr(self, "writers", {})

        def writer(param: str):
            def on_update(value: Any) -> None:
                if param in ENUM_WORDS:
                    value = self.to_model(param, value)
                elif param in SIGNED:
                    negative = slot in self.negative_slots
                    if (float(value) > 0 and negative) or (float(value) < 0 and not negative):
                        log.info("%s:%s refused put %r (board polarity)", base, param, value)
                        self._restore(slot, ch, param)
                        return
                    value = abs(float(value))
                if not self.crate.write(slot, ch, param, float(value)):
                    log.info("%s:%s refused put %r", base, param, value)
                    self._restore(slot, ch, param)
                self._push_channel(slot, ch)
                self.wake()  # a new ramp may end before the next coarse tick

            return on_update

        def pw_validate(_rec: Any, value: Any) -> bool:
            if self.to_model("Pw", value) and (c.tripped or c.unplugged):
                self.crate.pw_on_puts += 1
                self._pw_puts_rec.set(self.crate.pw_on_puts)
                return False  # the crate refuses Pw On on a tripped or unplugged channel
            return True

        unit_i = "uA" if c.kind == "hv" else "A"
        analog = ["V0Set", "I0Set", "Trip"]
        analog += ["UNVThr", "OVVThr", "RUpTime", "RDwTime"] if c.kind == "lv" else ["RUp", "RDWn"]
        enums = ["Pw"] + (["PDwn", "ImRange"] if c.kind == "hv" else [])
        enums = [p for p in enums if p not in look.absent]

        def initial(param: str) -> Any:
            return self.present(slot, param, getattr(c, param))

        # written records (read back through them too unless the IOC has separate read-backs)
        for param in enums:
            extra = {"validate": pw_validate} if param == "Pw" else {}
            rec = builder.boolOut(
                look.write_name(system, slot, ch, param),
                **self._names(param),
                initial_value=initial(param),
                on_update=writer(param),
                always_update=look.separate_readbacks,
                **extra,
            )
            self.writers[(slot, ch, param)] = rec
            recs[param] = rec
        for param in analog:
            rec = builder.aOut(
                look.write_name(system, slot, ch, param),
                initial_value=initial(param),
                PREC=3,
                on_update=writer(param),
                always_update=look.separate_readbacks,
            )
            self.writers[(slot, ch, param)] = rec
            recs[param] = rec
        for param in ("TripInt", "TripExt"):
            rec = builder.longOut(
                look.write_name(system, slot, ch, param),
                initial_value=getattr(c, param),
                on_update=writer(param),
                always_update=look.separate_readbacks,
            )
            self.writers[(slot, ch, param)] = rec
            recs[param] = rec
        if look.separate_readbacks:
            for param in enums:
                recs[param] = builder.boolIn(
                    look.read_name(system, slot, ch, param, True), **self._names(param), initial_value=initial(param)
                )
            for param in analog:
                recs[param] = builder.aIn(
                    look.read_name(system, slot, ch, param, True), initial_value=initial(param), PREC=3
                )
            for param in ("TripInt", "TripExt"):
                recs[param] = builder.longIn(
                    look.read_name(system, slot, ch, param, True), initial_value=initial(param)
                )

        # read-only records
        def ro(param: str) -> str:
            return look.read_name(system, slot, ch, param, False)

        recs["VMon"] = builder.aIn(ro("VMon"), initial_value=initial("VMon"), EGU="V", PREC=3)
        recs["IMon"] = builder.aIn(ro("IMon"), initial_value=c.IMon, EGU=unit_i, PREC=4)
        if c.kind == "lv":
            recs["Temp"] = builder.aIn(ro("Temp"), initial_value=c.Temp, EGU="C", PREC=1)
        if look.status == "word":
            recs["Status"] = builder.longIn(ro("Status"), initial_value=c.Status)
        elif look.status == "highest":
            recs["Status"] = builder.mbbIn(ro("Status"), *HIGHEST_LABELS, initial_value=_highest(c.Status))
        else:
            for bit, part in look.status_bits.items():
                name = f"{base}:{part}" + ("" if look.read_only_plain else look.read_suffix)
                recs[f"Status.{bit}"] = builder.boolIn(
                    name, ZNAM="0", ONAM="1", initial_value=int(bool(c.Status & (1 << STATUS_BITS[bit])))
                )

        def set_attr(attr: str, cast: Any):
            def on_update(value: Any) -> None:
                setattr(c, attr, cast(value))
                self._push_channel(slot, ch)

            return on_update

        recs["SIM:Load"] = builder.aOut(f"{sim}:Load", initial_value=c.load, PREC=3, on_update=set_attr("load", float))
        recs["SIM:Leakage"] = builder.aOut(
            f"{sim}:Leakage", initial_value=0.0, PREC=4, on_update=set_attr("extra_current", float)
        )
        recs["SIM:ForceTrip"] = builder.boolOut(
            f"{sim}:ForceTrip", initial_value=0, always_update=True, on_update=set_attr("force_trip", bool)
        )
        recs["SIM:Unplug"] = builder.boolOut(f"{sim}:Unplug", initial_value=0, on_update=set_attr("unplugged", bool))
        self.record_count += len(recs) + (len(enums) + len(analog) + 2 if look.separate_readbacks else 0)
        return recs

    # ------------------------------------------------------------------ running
    def _clear_alarm(self, value: Any) -> None:
        if self.to_model("ClearAlarm", value):
            self.crate.clear_alarms()
            for slot, ch in self.crate.channels:
                self._push_channel(slot, ch)

    def _restore(self, slot: int, ch: int, param: str) -> None:
        rec = self.writers.get((slot, ch, param))
        if rec is not None:
            rec.set(self.present(slot, param, getattr(self.crate.channels[(slot, ch)], param)))

    def _push_channel(self, slot: int, ch: int) -> None:
        """Post every read record whose value changed (Status last: readings are fresh when the state changes)."""
        channel = self.crate.channels[(slot, ch)]
        pushed = self._pushed[(slot, ch)]
        recs = self.records[(slot, ch)]
        params = list(READBACKS[:-1])
        if channel.kind == "lv":
            params.append("Temp")
        if self.look.separate_readbacks:  # read-backs of written parameters follow the model
            params += [p for p in recs if p not in READBACKS and not p.startswith(("SIM:", "Status")) and p != "Temp"]
        for param in params:
            value = getattr(channel, param)
            value = round(value, 1) if param == "Temp" else self.present(slot, param, value)
            if pushed.get(param) != value:
                pushed[param] = value
                # processing posts the monitor (Pw: on_update is a no-op then)
                recs[param].set(value)
        status = channel.Status
        if pushed.get("Status") != status:
            pushed["Status"] = status
            if self.look.status == "word":
                recs["Status"].set(status)
            elif self.look.status == "highest":
                recs["Status"].set(_highest(status))
            else:  # one record per bit: bits being set first (ON last of them), then those being cleared
                bits = sorted(self.look.status_bits, key=lambda b: (not status & (1 << STATUS_BITS[b]), b == "ON"))
                for bit in bits:
                    value = int(bool(status & (1 << STATUS_BITS[bit])))
                    if recs[f"Status.{bit}"].get() != value:
                        recs[f"Status.{bit}"].set(value)

    def wake(self) -> None:
        """Tick now rather than at the next scheduled tick (safe from any thread)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def next_sleep_s(self) -> float:
        """Real seconds to the next tick: ``tick_s``, or earlier when a ramp ends sooner (then at its end)."""
        ramp_end = self.crate.next_event_s() / max(self.time_scale, 1e-9)
        return max(min(self.tick_s, ramp_end + 1e-4), 1e-4)

    async def run(self) -> None:
        """Tick the model and push changed readbacks forever (runs in the dispatcher's event loop). Model time
        runs ``time_scale`` times faster than real time."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        last = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.next_sleep_s())
            self._wake.clear()
            now = time.monotonic()
            dt = (now - last) * self.time_scale
            share = (now - last) / self.noise_period_s if self.noise_period_s > 0 else 0.0  # noise in real time
            self.crate.tick(dt, noise_share=share)
            last = now
            for slot, ch in self.crate.channels:
                self._push_channel(slot, ch)
            if self._pw_puts_rec.get() != self.crate.pw_on_puts:
                self._pw_puts_rec.set(self.crate.pw_on_puts)


#: Parameters a negative board shows and takes with a minus sign (IOCs that take signed setpoints).
SIGNED = ("V0Set", "VMon")


def _highest(status: int) -> int:
    """The highest-bit enum value of a Status word: highest set bit + 1, 0 when none is set."""
    return min(status.bit_length(), len(HIGHEST_LABELS) - 1)  # an mbbi has 16 states: bit 15 shows as 15
