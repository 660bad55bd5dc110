"""Simulated environment sensors (temperature + relative humidity) publishing ``env/<sensor>``.

Real stands publish the same payload from their sensor gateways (user ``sensors``). The simulation stack runs
this so the dew-point interlock and the burn-in sequencer have inputs: ``{"temperature": °C, "humidity": %RH,
"ts": ...}``.

* Air sensors (``--sensor``): a slow drift plus noise around ``--temperature``. Their humidity starts at
  ``--humidity`` and falls under dry air towards ``--dry-humidity`` with the time constant ``--dry-tau``
  (``--no-dry-air``: it stays where it started), so a cold step can be seen held until the air is dry.
* Carrier sensors (``--carrier``): clipped to the module carriers, their temperature follows the chiller's bath
  (read from julabo-sim's control port, ``--chiller-control``) with the time constant ``--carrier-tau``,
  settling a little towards the air (``--carrier-coupling``): about 2 K above a -36 C bath, as the heat the
  modules dissipate keeps a real carrier above its coolant.
* ``--time-scale K``: simulated seconds per real second (drying, carrier lag, drift), as in the device
  simulators; the documents' ``ts`` stay wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass

from trackerdcs.config import MqttSettings
from trackerdcs.logsetup import setup_logging
from trackerdcs.service import build_client, connect_properties

log = logging.getLogger("envsim")


def reading(base_temp: float, base_rh: float, t: float, rng: random.Random) -> dict[str, float]:
    """One plausible reading: a slow daily-like drift plus sensor noise (``t`` in simulated seconds)."""
    temp = base_temp + 0.3 * math.sin(t / 600.0) + rng.gauss(0, 0.02)
    rh = max(0.0, min(100.0, base_rh + 0.5 * math.sin(t / 900.0) * base_rh / 5.0 + rng.gauss(0, 0.01 * base_rh)))
    return {"temperature": round(temp, 3), "humidity": round(rh, 3)}


@dataclass(frozen=True)
class DryAir:
    """Relative humidity of a box flushed with dry air: exponential fall from ``start`` to ``floor``."""

    start: float = 5.0  #: %RH when the flow starts (the box was just closed)
    floor: float = 0.2  #: %RH the dry air reaches (about -50 C dew point at 20 C)
    tau_s: float = 900.0  #: simulated seconds
    flowing: bool = True

    def humidity(self, t: float) -> float:
        """%RH ``t`` simulated seconds after the start."""
        if not self.flowing or self.start <= self.floor:
            return self.start
        if self.tau_s <= 0:
            return self.floor
        return self.floor + (self.start - self.floor) * math.exp(-max(t, 0.0) / self.tau_s)


def follow(temperature: float, target: float, dt: float, tau_s: float) -> float:
    """One step of a first-order lag (a carrier following the chiller's bath)."""
    if tau_s <= 0:
        return target
    return temperature + (target - temperature) * (1.0 - math.exp(-dt / tau_s))


def carrier_target(bath: float | None, ambient: float, coupling: float) -> float:
    """Where a carrier settles: on the bath, pulled towards the air by the heat that leaks in (the modules' own
    power and the box): ``ambient + coupling * (bath - ambient)``. No bath reading: the air temperature."""
    if bath is None:
        return ambient
    return ambient + coupling * (bath - ambient)


class ChillerLink:
    """Reads the bath temperature from julabo-sim's control port (``state``), one connection kept open."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self._sock: socket.socket | None = None
        self._warned = False

    def bath(self) -> float | None:
        try:
            if self._sock is None:
                self._sock = socket.create_connection(self.address, timeout=2.0)
            self._sock.sendall(b"state\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise OSError("closed")
                data += chunk
            doc = json.loads(data.decode(errors="replace").splitlines()[-1])
            self._warned = False
            value = doc.get("bath_temp")
            return float(value) if isinstance(value, (int, float)) else None
        except (OSError, ValueError) as exc:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if not self._warned:
                log.warning("chiller simulator at %s:%d not readable (%s)", *self.address, exc)
                self._warned = True
            return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="envsim", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sensor", action="append", default=None, help="air sensor name (repeatable; default box)")
    p.add_argument("--temperature", type=float, default=20.0, help="mean air temperature, °C")
    p.add_argument("--humidity", type=float, default=5.0, help="relative humidity at start, %%RH (box just closed)")
    p.add_argument("--dry-humidity", type=float, default=0.2, help="%%RH the dry air reaches (default 0.2)")
    p.add_argument("--dry-tau", type=float, default=900.0, help="time constant of the drying, simulated s")
    p.add_argument("--no-dry-air", dest="dry_air", action="store_false", help="no dry air: humidity stays")
    p.add_argument("--interval", type=float, default=2.0, help="real seconds between air readings")
    p.add_argument("--carrier", action="append", default=[], help="carrier sensor following the chiller")
    p.add_argument("--carrier-tau", type=float, default=120.0, help="carrier time constant, simulated s")
    p.add_argument(
        "--carrier-coupling",
        type=float,
        default=0.96,
        help="carrier = air + coupling x (bath - air) when settled (default 0.96: 2 K above a -36 C bath)",
    )
    p.add_argument("--carrier-interval", type=float, default=1.0, help="real seconds between carrier readings")
    p.add_argument("--chiller-control", metavar="[HOST:]PORT", help="julabo-sim's control port (for carriers)")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(name="envsim")
    sensors = args.sensor or ["box"]
    scale = max(args.time_scale, 1e-6)
    dry = DryAir(args.humidity, args.dry_humidity, args.dry_tau, args.dry_air)
    link = None
    if args.chiller_control:
        host, _, port = args.chiller_control.rpartition(":")
        link = ChillerLink(host or "127.0.0.1", int(port))
    settings = MqttSettings.from_config({})
    client = build_client(settings, settings.client_id or "trackerdcs-envsim")
    client.connect_async(settings.host, settings.port, clean_start=True, properties=connect_properties(settings))
    client.loop_start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    rng = random.Random(1)
    t0 = last = time.monotonic()
    next_air = next_carrier = t0
    carrier_temp: float | None = None
    while not stop.is_set():
        now = time.monotonic()
        sim_t = (now - t0) * scale
        if now >= next_air:
            next_air += args.interval
            for name in sensors:
                doc = {**reading(args.temperature, dry.humidity(sim_t), sim_t, rng), "ts": time.time()}
                client.publish(f"env/{name}", json.dumps(doc), qos=0, retain=True)
        if args.carrier and now >= next_carrier:
            next_carrier += args.carrier_interval
            bath = link.bath() if link is not None else None
            target = carrier_target(bath, args.temperature, args.carrier_coupling)
            carrier_temp = target if carrier_temp is None else follow(carrier_temp, target, (now - last) * scale,
                                                                       args.carrier_tau)  # fmt: skip
            last = now
            for name in args.carrier:
                doc = {"temperature": round(carrier_temp, 3), "humidity": round(dry.humidity(sim_t), 3),
                       "ts": time.time()}  # fmt: skip
                client.publish(f"env/{name}", json.dumps(doc), qos=0, retain=True)
        wake = min(next_air, next_carrier if args.carrier else next_air)
        stop.wait(max(wake - time.monotonic(), 0.0))
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
