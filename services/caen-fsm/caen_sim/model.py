"""A time-stepped model of a CAEN SY4527/SY5527 crate: LV and HV channels, ramps, trips, faults (pure, no I/O).

The model knows nothing about EPICS: :mod:`caen_sim.ioc` exposes it as records. Each channel behaves as the
manual describes:

* ``Pw`` On ramps the output towards ``V0Set`` at ``RUp`` V/s (HV) or in ``RUpTime`` (LV); Off ramps down at
  ``RDWn`` V/s / in ``RDwTime``. ``Status`` bits ON, RUP, RDW follow.
* The load is a resistance (``load``: MOhm for HV -> uA, Ohm for LV -> A) plus an injected extra current.
  When the current would exceed ``I0Set`` the channel goes constant-current (OVC bit, voltage sags); after
  ``Trip`` seconds in over-current (``Trip`` >= 1000 = never) it trips: INTTRIP latched, Pw Off, output
  killed (``PDwn`` Kill, and always for LV) or ramped down at ``RDWn`` (``PDwn`` Ramp).
* A tripped channel refuses Pw On until ``clear_alarms``. An unplugged channel reads UNPLUGGED and zero.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .sensor_physics import SensorParams, follow, leakage_ua
from .simconfig import SimPhysics

# Status bits (same numbering as the service's decoder, kept separate on purpose: this is the "device").
ON, RUP, RDW, OVC, OVV, UNV, EXTTRIP, MAXV, EXT_DIS, INTTRIP, CALERR, UNPLUGGED = (1 << n for n in range(12))
NEVER_TRIP = 1000.0
EPS_V = 1e-6

#: Board maximum voltage per kind (MAXV bit when V0Set exceeds it).
MAX_VOLTAGE = {"lv": 15.0, "hv": 1000.0}


@dataclass
class SimChannel:
    """One output channel. Parameter attributes carry the PV parameter names."""

    kind: str  # "lv" | "hv"
    Pw: int = 0
    V0Set: float = 0.0
    I0Set: float = 0.0
    VMon: float = 0.0
    IMon: float = 0.0
    Trip: float = 10.0
    TripInt: int = 0
    TripExt: int = 0
    UNVThr: float = 0.0
    OVVThr: float = 0.0
    RUpTime: float = 0.1
    RDwTime: float = 0.1
    Temp: float = 30.0
    RUp: float = 50.0
    RDWn: float = 50.0
    PDwn: int = 0  # 0 Kill, 1 Ramp
    ImRange: int = 0  # 0 High, 1 Low
    load: float = 0.0  # HV MOhm (uA = V / MOhm), LV Ohm; <= 0 means open circuit
    extra_current: float = 0.0
    force_trip: bool = False
    unplugged: bool = False
    tripped: bool = False
    lv_time_unit_s: float = 1.0  # RUpTime/RDwTime unit in seconds (UNCONFIRMED on the real crate)
    _ramp: int = 0  # +1 up, -1 down, 0 steady
    _ovc: bool = False
    _ovc_time: float = 0.0
    _v_true: float = 0.0
    noise: tuple[float, float] = (0.0, 0.0)  # (V, current) standard deviation of the readback noise
    sensor: SensorParams | None = None  # HV: a silicon sensor's leakage I(V, T) on top of the load (uA)
    sensor_temp: float = 20.0  # degC of that sensor
    _noise_v: float = 0.0
    _noise_i: float = 0.0

    def __post_init__(self) -> None:
        if self.load == 0.0:
            self.load = 1000.0 if self.kind == "hv" else 6.0
        if self.kind == "lv" and self.V0Set == 0.0 and self.I0Set == 0.0:
            self.V0Set, self.I0Set = 12.0, 3.0
        elif self.kind == "hv" and self.V0Set == 0.0 and self.I0Set == 0.0:
            self.V0Set, self.I0Set = 100.0, 10.0

    # ------------------------------------------------------------------ writes
    WRITABLE = [
        "Pw",
        "V0Set",
        "I0Set",
        "Trip",
        "TripInt",
        "TripExt",
        "UNVThr",
        "OVVThr",
        "RUpTime",
        "RDwTime",
        "RUp",
        "RDWn",
        "PDwn",
        "ImRange",
    ]

    def write(self, param: str, value: float) -> bool:
        """Apply a put; returns False when the device refuses it (e.g. Pw On while tripped or unplugged)."""
        if param not in self.WRITABLE:
            return False
        if self.kind == "lv" and param in ("RUp", "RDWn", "PDwn", "ImRange"):
            return False
        if self.kind == "hv" and param in ("UNVThr", "OVVThr", "RUpTime", "RDwTime"):
            return False
        if param == "Pw":
            on = int(value) != 0
            if on and (self.tripped or self.unplugged):
                return False
            self.Pw = int(on)
            self.tick(0.0)  # Status (ON/RUP/RDW) reflects the new target at once
            return True
        if param in ("TripInt", "TripExt", "PDwn", "ImRange"):
            setattr(self, param, int(value))
            return True
        if float(value) < 0:
            return False
        setattr(self, param, float(value))
        if param in ("V0Set", "I0Set"):
            self.tick(0.0)
        return True

    # ------------------------------------------------------------------ dynamics
    def _rates(self) -> tuple[float, float]:
        if self.kind == "hv":
            return max(self.RUp, 0.0), max(self.RDWn, 0.0)
        up_t = max(self.RUpTime * self.lv_time_unit_s, 1e-3)
        dn_t = max(self.RDwTime * self.lv_time_unit_s, 1e-3)
        span = max(self.V0Set, 1.0)
        return span / up_t, span / dn_t

    def tick(self, dt: float, rng: random.Random | None = None) -> None:
        """Advance the channel by ``dt`` seconds."""
        if self.unplugged:
            self.Pw, self._ramp, self._ovc, self._v_true = 0, 0, False, 0.0
            self.VMon = self.IMon = 0.0
            return
        if self.force_trip:  # fault injection: trip now, as an over-current lasting Trip seconds would
            self.force_trip = False
            if self.Pw:
                self._trip()
        target = min(self.V0Set, MAX_VOLTAGE[self.kind]) if self.Pw else 0.0
        up, down = self._rates()
        v = self._v_true
        if v < target - EPS_V:
            v = min(target, v + up * dt)
        elif v > target + EPS_V:
            v = max(target, v - down * dt)
        self._ramp = 1 if v < target - EPS_V else (-1 if v > target + EPS_V else 0)
        # load current and current limit
        extra = self.extra_current
        if self.sensor is not None:
            extra += leakage_ua(v, self.sensor_temp, self.sensor)
        current = (v / self.load if self.load > 0 else 0.0) + (extra if self.Pw or v > 0 else 0.0)
        self._ovc = bool(self.Pw) and current > max(self.I0Set, 0.0)
        if self._ovc:
            self._ramp = 0
            # constant current: the output sags to what the load allows at I0Set
            room = max(self.I0Set - extra, 0.0)
            v = min(v, room * self.load) if self.load > 0 else v
            current = self.I0Set
            self._ovc_time += dt
            if self.Trip < NEVER_TRIP and self._ovc_time >= self.Trip:
                self._trip()
                v = self._v_true
                current = v / self.load if self.load > 0 else 0.0
        else:
            self._ovc_time = 0.0
        self._v_true = v
        self.VMon = v
        self.IMon = current
        if self.kind == "lv":
            self.Temp = 30.0 + 2.0 * current
        if rng is not None and (self.noise[0] or self.noise[1]):
            # measurement noise: new offsets only on noisy ticks, held in between
            self._noise_v = rng.gauss(0.0, self.noise[0])
            self._noise_i = rng.gauss(0.0, self.noise[1])
        self.VMon = v + self._noise_v
        self.IMon = current + self._noise_i

    def ramp_left_s(self) -> float:
        """Seconds of simulated time until the output reaches its target at the present ramp rate (0: steady)."""
        if self.unplugged or self._ramp == 0:
            return 0.0
        target = min(self.V0Set, MAX_VOLTAGE[self.kind]) if self.Pw else 0.0
        up, down = self._rates()
        rate = up if self._ramp > 0 else down
        return abs(target - self._v_true) / rate if rate > 0 else 0.0

    def _trip(self) -> None:
        self.tripped = True
        self.force_trip = False
        self.Pw = 0
        self._ovc = False
        self._ovc_time = 0.0
        if self.kind == "lv" or self.PDwn == 0:
            self._v_true = 0.0
            self._ramp = 0
        else:
            self._ramp = -1

    def clear_alarm(self) -> None:
        """ClearAlarm: release the latched trip (the channel stays off)."""
        self.tripped = False

    @property
    def Status(self) -> int:
        if self.unplugged:
            return UNPLUGGED
        word = 0
        if self.Pw:
            word |= ON
        if self._ramp > 0:
            word |= RUP
        elif self._ramp < 0:
            word |= RDW
        if self._ovc:
            word |= OVC
        if self.tripped:
            word |= INTTRIP
        if self.V0Set > MAX_VOLTAGE[self.kind]:
            word |= MAXV
        if self.kind == "lv" and self.Pw and self._ramp == 0:
            if self.OVVThr > 0 and self.VMon > self.OVVThr:
                word |= OVV
            if self.UNVThr > 0 and self.VMon < self.UNVThr:
                word |= UNV
        return word


@dataclass
class Board:
    slot: int
    kind: str
    channels: int


@dataclass
class Crate:
    """A crate: boards by slot, channels by (slot, channel)."""

    system: str
    boards: list[Board]
    lv_time_unit_s: float = 1.0
    seed: int = 1
    channels: dict[tuple[int, int], SimChannel] = field(default_factory=dict)
    pw_on_puts: int = 0
    bath_temp: float | None = None  #: the chiller's bath (degC) the modules follow; None: they keep theirs
    module_tau_s: float = 300.0  #: time constant of a module's temperature towards the bath

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._noise_credit = 0.0
        self._cursor = 0
        for board in self.boards:
            for ch in range(board.channels):
                self.channels[(board.slot, ch)] = SimChannel(board.kind, lv_time_unit_s=self.lv_time_unit_s)
        self._order = list(self.channels)

    def apply_physics(self, physics: SimPhysics) -> None:
        """Give every HV channel its configured sensor and every module the initial temperature."""
        for (slot, ch), channel in self.channels.items():
            if channel.kind == "hv":
                channel.sensor = physics.sensor_for(slot, ch)
                channel.sensor_temp = physics.initial_temp_c
        self.module_tau_s = physics.module_tau_s

    def next_event_s(self) -> float:
        """Simulated seconds until the first running ramp ends (inf when nothing ramps): the IOC ticks then, so
        a ramp's end is seen when it happens rather than at the next coarse tick."""
        left = [c.ramp_left_s() for c in self.channels.values()]
        return min((x for x in left if x > 0), default=float("inf"))

    def write(self, slot: int, ch: int, param: str, value: float) -> bool:
        """A put on a channel parameter; counts Pw On requests (for tests: nobody switched on by itself)."""
        channel = self.channels[(slot, ch)]
        if param == "Pw" and int(value) != 0:
            self.pw_on_puts += 1
        return channel.write(param, value)

    def clear_alarms(self) -> None:
        for channel in self.channels.values():
            channel.clear_alarm()

    def tick(self, dt: float, noise_share: float = 0.0) -> None:
        """Advance every channel by ``dt``; a rotating ``noise_share`` of the channels gets fresh readback
        noise (like a crate polling its boards one after the other rather than all at once)."""
        self._noise_credit += noise_share * len(self.channels)
        fresh = int(self._noise_credit)
        self._noise_credit -= fresh
        order = self._order
        noisy = {order[(self._cursor + i) % len(order)] for i in range(min(fresh, len(order)))}
        self._cursor = (self._cursor + fresh) % max(len(order), 1)
        bath = self.bath_temp
        for key, channel in self.channels.items():
            if bath is not None and channel.kind == "hv":
                channel.sensor_temp = follow(channel.sensor_temp, bath, dt, self.module_tau_s)
            channel.tick(dt, self.rng if key in noisy else None)


def parse_slots(spec: str) -> list[Board]:
    """Boards from ``"0-4:lv:8,12-15:hv:12"`` (slot or slot range : kind : channels per board)."""
    boards = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            slots, kind, count = part.split(":")
            lo, _, hi = slots.partition("-")
            first, last = int(lo), int(hi or lo)
            kind = kind.strip().lower()
            if kind not in ("lv", "hv") or first > last or int(count) <= 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"bad board spec {part!r}; expected e.g. 0-4:lv:8 or 12:hv:12") from None
        boards.extend(Board(s, kind, int(count)) for s in range(first, last + 1))
    return boards


#: The prototype test stand: LV in slots 0-4 (8 channels), HV in slots 12-15 (12 channels).
DEFAULT_SLOTS = "0-4:lv:8,12-15:hv:12"
