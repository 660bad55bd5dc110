"""The records layer: exposes a :class:`caen_sim.model.Crate` as a real EPICS IOC (pythonSoftIOC).

Record names follow the SY4527 EPICS server: ``<Sys>:<slot %02d>:<chan %03d>:<Param>`` and
``<Sys>:ClearAlarm``. Simulator-only fault injection records (not on a real crate):

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

log = logging.getLogger(__name__)

READBACKS = ("VMon", "IMon", "Pw", "Status")  # Status last: readings are fresh when state changes

#: The manual's words of each enum parameter, in the model's value order (model value 0, 1).
ENUM_WORDS: dict[str, tuple[str, str]] = {
    "Pw": ("Off", "On"),
    "PDwn": ("Kill", "Ramp"),
    "ImRange": ("High", "Low"),
    "ClearAlarm": ("No", "Yes"),
}
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
        time_scale: float = 1.0,
    ) -> None:
        self.crate = crate
        self.time_scale = time_scale  #: simulated seconds per real second
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.labels = enum_labels(enum_variant)
        self.tick_s = tick_s
        self.noise_period_s = noise_period_s
        self.records: dict[tuple[int, int], dict[str, Any]] = {}
        self._pushed: dict[tuple[int, int], dict[str, float]] = {}
        self.record_count = 0
        self._pw_puts_rec: Any = None

    # ------------------------------------------------------------------ building
    def build(self) -> int:
        """Create every record (call before ``iocInit``); returns the number of records."""
        builder.SetDeviceName(self.crate.system)
        for (slot, ch), channel in self.crate.channels.items():
            self.records[(slot, ch)] = self._channel_records(slot, ch, channel)
            self._pushed[(slot, ch)] = {p: getattr(channel, p) for p in READBACKS}
            self._pushed[(slot, ch)]["Temp"] = round(channel.Temp, 1)
        builder.boolOut(
            "ClearAlarm",
            **self._names("ClearAlarm"),
            initial_value=self.to_record("ClearAlarm", 0),
            always_update=True,
            on_update=self._clear_alarm,
        )
        self._pw_puts_rec = builder.longIn("SIM:PwOnPuts", initial_value=0)
        self.record_count += 2
        return self.record_count

    # ------------------------------------------------------------------ enum labels
    def _names(self, param: str) -> dict[str, str]:
        zero, one = self.labels[param]
        return {"ZNAM": zero, "ONAM": one}

    def to_model(self, param: str, index: Any) -> int:
        """Model value (the manual's meaning) of record index ``index`` of an enum record."""
        word = self.labels[param][int(index) != 0]
        return [w.lower() for w in ENUM_WORDS[param]].index(word.lower())

    def to_record(self, param: str, model_value: Any) -> int:
        """Record index of the model value of an enum parameter."""
        word = ENUM_WORDS[param][int(model_value) != 0]
        return [label.lower() for label in self.labels[param]].index(word.lower())

    def _channel_records(self, slot: int, ch: int, c: SimChannel) -> dict[str, Any]:
        base = f"{slot:02d}:{ch:03d}"
        sim = f"SIM:{slot:02d}:{ch:03d}"
        recs: dict[str, Any] = {}

        def writer(param: str):
            def on_update(value: Any) -> None:
                if param in ENUM_WORDS:
                    value = self.to_model(param, value)
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
        recs["Pw"] = builder.boolOut(
            f"{base}:Pw",
            **self._names("Pw"),
            initial_value=self.to_record("Pw", c.Pw),
            on_update=writer("Pw"),
            validate=pw_validate,
        )
        recs["Status"] = builder.longIn(f"{base}:Status", initial_value=c.Status)
        recs["VMon"] = builder.aIn(f"{base}:VMon", initial_value=c.VMon, EGU="V", PREC=3)
        recs["IMon"] = builder.aIn(f"{base}:IMon", initial_value=c.IMon, EGU=unit_i, PREC=4)
        analog = ["V0Set", "I0Set", "Trip"]
        analog += ["UNVThr", "OVVThr", "RUpTime", "RDwTime"] if c.kind == "lv" else ["RUp", "RDWn"]
        for param in analog:
            recs[param] = builder.aOut(
                f"{base}:{param}", initial_value=getattr(c, param), PREC=3, on_update=writer(param)
            )
        for param in ("TripInt", "TripExt"):
            recs[param] = builder.longOut(f"{base}:{param}", initial_value=getattr(c, param), on_update=writer(param))
        if c.kind == "lv":
            recs["Temp"] = builder.aIn(f"{base}:Temp", initial_value=c.Temp, EGU="C", PREC=1)
        else:
            for param in ("PDwn", "ImRange"):
                recs[param] = builder.boolOut(
                    f"{base}:{param}",
                    **self._names(param),
                    initial_value=self.to_record(param, getattr(c, param)),
                    on_update=writer(param),
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
        self.record_count += len(recs)
        return recs

    # ------------------------------------------------------------------ running
    def _clear_alarm(self, value: Any) -> None:
        if self.to_model("ClearAlarm", value):
            self.crate.clear_alarms()
            for slot, ch in self.crate.channels:
                self._push_channel(slot, ch)

    def _restore(self, slot: int, ch: int, param: str) -> None:
        rec = self.records[(slot, ch)].get(param)
        if rec is not None:
            value = getattr(self.crate.channels[(slot, ch)], param)
            rec.set(self.to_record(param, value) if param in ENUM_WORDS else value)

    def _push_channel(self, slot: int, ch: int) -> None:
        channel = self.crate.channels[(slot, ch)]
        pushed = self._pushed[(slot, ch)]
        recs = self.records[(slot, ch)]
        for param in READBACKS:
            value = getattr(channel, param)
            if pushed[param] != value:
                pushed[param] = value
                # processing posts the monitor (Pw: on_update is a no-op then)
                recs[param].set(self.to_record(param, value) if param in ENUM_WORDS else value)
        if channel.kind == "lv":
            temp = round(channel.Temp, 1)
            if pushed["Temp"] != temp:
                pushed["Temp"] = temp
                recs["Temp"].set(temp)

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
