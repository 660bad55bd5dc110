"""``caen-sim``: a simulated CAEN SY4527 mainframe served as a real EPICS Channel Access IOC.

Examples::

    caen-sim --port 5064 --system cleanroom --slots 0-4:lv:8,12-15:hv:12
    caen-sim --port 5070 --config services/caen-fsm/example.yml      # boards derived from caen-fsm config
    caen-sim --config services/caen-fsm/example.yml --sim-config services/caen-fsm/caen-sim.yml \
             --julabo-control 127.0.0.1:5080 --time-scale 100        # sensors, modules following the chiller
    caen-sim --flavour slac-caenhvasyn                                # the same crate as another IOC shows it

Runs until SIGTERM/SIGINT. Prints ``caen-sim ready: <n> records on port <p>`` once serving.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence

from trackerdcs.config import ConfigError, load_yaml
from trackerdcs.logsetup import setup_logging

from .model import DEFAULT_SLOTS, Board, Crate, parse_slots
from .presentations import PRESENTATIONS
from .simconfig import SimConfigError, SimPhysics, bath_from_state, parse_sim_config

ENUM_VARIANTS = ("default", "reversed", "upper")  # see caen_sim.ioc.enum_labels (imported after EPICS env)

log = logging.getLogger("caen_sim")


def boards_from_config(cfg: dict) -> tuple[str | None, list[Board]]:
    """Crate layout from a YAML: ``boards: [{slot, kind, channels}]`` or a caen-fsm config (``channels:``)."""
    if "boards" in cfg:
        boards = []
        for i, b in enumerate(cfg["boards"] or []):
            try:
                boards.append(Board(int(b["slot"]), str(b["kind"]).lower(), int(b["channels"])))
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"boards[{i}]: needs slot, kind (lv|hv) and channels") from None
        return cfg.get("system"), boards
    if "channels" in cfg:
        per_slot: dict[int, tuple[str, int]] = {}
        for kind, slot, chan in _channel_addresses(cfg["channels"]):
            have, top = per_slot.get(slot, (kind, 0))
            if have != kind:
                raise ConfigError(f"slot {slot} mixes LV and HV channels")
            per_slot[slot] = (kind, max(top, chan + 1))
        boards = [Board(s, k, max(n, 8 if k == "lv" else 12)) for s, (k, n) in sorted(per_slot.items())]
        return str(cfg.get("system", cfg.get("sysname", "cleanroom"))), boards
    raise ConfigError("simulator config needs 'boards:' or a caen-fsm 'channels:' list")


def _channel_addresses(channels: object) -> list[tuple[str, int, int]]:
    """(kind, slot, channel) of every channel in a caen-fsm ``channels:`` list or mapping: module entries
    ``{lv: <address>, hv: <address>}`` and lone channels ``{kind: lv|hv, slot|board: .., channel|chan: ..}``,
    an address being ``[slot, channel]`` or ``{board|slot: .., chan|channel: ..}``. Read here on its own
    (the simulator shares no code with the service)."""
    entries = list(channels.values()) if isinstance(channels, dict) else channels
    if not isinstance(entries, list):
        raise ConfigError("channels: must be a mapping or a list")

    def address(raw: object, where: str) -> tuple[int, int]:
        if isinstance(raw, (list, tuple)) and len(raw) == 2:
            slot, chan = raw
        elif isinstance(raw, dict):
            slot, chan = raw.get("board", raw.get("slot")), raw.get("chan", raw.get("channel"))
        else:
            raise ConfigError(f"{where}: expected [slot, channel] or a mapping with board/chan")
        if not isinstance(slot, int) or not isinstance(chan, int):
            raise ConfigError(f"{where}: slot and channel must be integers")
        return slot, chan

    found = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"channels[{i}]: must be a mapping")
        if "kind" in entry:
            found.append((str(entry["kind"]).lower(), *address(entry, f"channels[{i}]")))
            continue
        for kind in ("lv", "hv"):
            if kind in entry:
                found.append((kind, *address(entry[kind], f"channels[{i}].{kind}")))
    return found


def poll_bath(crate: Crate, address: tuple[str, int], period_s: float, stop: threading.Event) -> None:
    """Read the chiller simulator's bath temperature every ``period_s`` (its control port's ``state`` line) and
    hand it to the crate. Written here on its own: the simulators share no code."""
    warned = False
    while not stop.is_set():
        try:
            with socket.create_connection(address, timeout=2.0) as s:
                s.sendall(b"state\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            bath = bath_from_state(data.decode(errors="replace"))
            if bath is not None:
                crate.bath_temp = bath
                warned = False
        except OSError as exc:
            if not warned:
                log.warning("chiller simulator at %s:%d not readable (%s): module temperatures held", *address, exc)
                warned = True
        stop.wait(period_s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="caen-sim", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", help="crate YAML (boards:) or a caen-fsm config to derive the boards from")
    p.add_argument("--system", help="crate SysName (PV prefix); default from config or 'cleanroom'")
    p.add_argument("--slots", help=f"board layout, default {DEFAULT_SLOTS!r}")
    p.add_argument("--port", type=int, help="CA server port (EPICS_CA_SERVER_PORT); default from env or 5064")
    p.add_argument("--interface", default=None, help="address to serve on (EPICS_CAS_INTF_ADDR_LIST), e.g. 127.0.0.1")
    p.add_argument(
        "--tick",
        type=float,
        default=0.05,
        help="longest real time between model steps in seconds (default 0.05;\n"
        "a ramp's end is stepped to exactly, however long the tick)",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="simulated seconds per real second (ramps, trips, module\ntemperature; default 1)",
    )
    p.add_argument("--sim-config", help="physics YAML: sensor leakage per HV channel, module temperature model")
    p.add_argument(
        "--julabo-control", metavar="[HOST:]PORT", help="julabo-sim's control port: the modules follow its bath"
    )
    p.add_argument("--noise-hz", type=float, default=0.0, help="rate of new VMon/IMon noise on every channel (0=off)")
    p.add_argument("--noise-v", type=float, default=0.002, help="VMon noise standard deviation (V)")
    p.add_argument("--noise-i", type=float, default=0.0005, help="IMon noise standard deviation (uA or A)")
    p.add_argument(
        "--lv-ramp-unit", choices=("s", "ms"), default="s", help="unit of LV RUpTime/RDwTime (UNCONFIRMED; default s)"
    )
    p.add_argument(
        "--enum-labels",
        choices=ENUM_VARIANTS,
        default="default",
        help="label lists of the enum PVs: the manual's order (Off/On, Kill/Ramp, High/Low), every list reversed,\n"
        "or upper case (OFF/ON, KILL/RAMP): IOCs in the field differ; clients must read the labels",
    )
    p.add_argument(
        "--flavour",
        choices=sorted(PRESENTATIONS),
        default="trackerdcs",
        help="which IOC's record layout to present (names, read-backs, Status form, labels, crate clear)",
    )
    p.add_argument(
        "--negative-slots",
        default="",
        help="comma-separated slots of negative boards: V0Set/VMon shown and taken negative (halla only)",
    )
    p.add_argument("--log-level", default=None)
    return p


def _address(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, name="caen-sim")
    try:
        cfg = load_yaml(args.config) if args.config else {}
        system, boards = boards_from_config(cfg) if args.config else (None, [])
        if args.slots or not boards:
            boards = parse_slots(args.slots or DEFAULT_SLOTS)
    except (ConfigError, ValueError) as exc:
        print(f"caen-sim: {exc}", file=sys.stderr)
        return 2
    try:
        physics = parse_sim_config(load_yaml(args.sim_config)) if args.sim_config else SimPhysics()
        chiller = _address(args.julabo_control) if args.julabo_control else None
    except (ConfigError, SimConfigError, ValueError) as exc:
        print(f"caen-sim: {exc}", file=sys.stderr)
        return 2
    if args.time_scale <= 0:
        print("caen-sim: --time-scale must be above 0", file=sys.stderr)
        return 2
    system = args.system or system or "cleanroom"
    if args.port:
        os.environ["EPICS_CA_SERVER_PORT"] = str(args.port)
    if args.interface:
        os.environ["EPICS_CAS_INTF_ADDR_LIST"] = args.interface
        os.environ.setdefault("EPICS_CA_AUTO_ADDR_LIST", "NO")
        os.environ.setdefault("EPICS_CA_ADDR_LIST", args.interface)

    from softioc import asyncio_dispatcher, builder, softioc  # EPICS reads the environment from here on

    from .ioc import CrateIoc

    crate = Crate(system, boards, lv_time_unit_s=0.001 if args.lv_ramp_unit == "ms" else 1.0)
    crate.apply_physics(physics)
    hv_channels = {k for k, c in crate.channels.items() if c.kind == "hv"}
    unknown = sorted(set(physics.sensors) - hv_channels)
    if unknown:
        print(f"caen-sim: sim config names channels not on an HV board: {unknown}", file=sys.stderr)
        return 2
    if args.noise_hz > 0:
        for channel in crate.channels.values():
            channel.noise = (args.noise_v, args.noise_i)
    ioc = CrateIoc(
        crate,
        tick_s=args.tick,
        noise_period_s=1.0 / args.noise_hz if args.noise_hz > 0 else 0.0,
        enum_variant=args.enum_labels,
        time_scale=args.time_scale,
        presentation=args.flavour,
        negative_slots=frozenset(int(x) for x in args.negative_slots.split(",") if x.strip()),
    )
    # A put is accepted in the CA server's thread, which needs the GIL for the record's Python callbacks; the
    # model's tick holds it for milliseconds at a time. A real crate answers a write at once, so hand the GIL
    # over every 0.5 ms instead of Python's 5 ms default.
    sys.setswitchinterval(0.0005)
    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    count = ioc.build()
    builder.LoadDatabase()
    softioc.iocInit(dispatcher, enable_pva=False)
    asyncio.run_coroutine_threadsafe(ioc.run(), dispatcher.loop)

    stop = threading.Event()
    if chiller is not None:
        threading.Thread(
            target=poll_bath, args=(crate, chiller, physics.chiller_poll_s, stop), name="bath", daemon=True
        ).start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    port = os.environ.get("EPICS_CA_SERVER_PORT", "5064")
    print(f"caen-sim ready: {count} records, system {system}, {len(crate.channels)} channels, port {port}", flush=True)
    log.info("serving %d records for %d channels", count, len(crate.channels))
    stop.wait()
    log.info("caen-sim stopping")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the EPICS IOC core has no clean in-process shutdown; exit without running its atexit


if __name__ == "__main__":
    sys.exit(main())
