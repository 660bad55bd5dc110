"""``julabo-sim``: run the simulated Julabo chiller on a pty and a TCP port until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from trackerdcs.logsetup import setup_logging

from .model import ChillerConfig
from .server import ChillerSimulator, SimOptions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="julabo-sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address for the TCP and control ports")
    p.add_argument("--tcp-port", type=int, default=0, help="serial-over-TCP port (0: free port, -1: none)")
    p.add_argument("--control-port", type=int, default=0, help="fault-injection port (0: free port)")
    p.add_argument("--pty-link", default=None, help="create this symlink to the pty slave (e.g. /tmp/ttyJULABO)")
    p.add_argument("--no-pty", action="store_true", help="serve TCP only")
    p.add_argument("--pacing", type=float, default=0.25, help="minimum seconds between commands")
    p.add_argument(
        "--pacing-tolerance", type=float, default=0.02, help="allowance for this process's own scheduling (s)"
    )
    p.add_argument(
        "--jitter", type=float, default=0.0, help="the device finishes reading a line up to this long after it arrived"
    )
    p.add_argument("--drop-replies", type=float, default=0.0, help="probability that a query's reply is lost")
    p.add_argument("--xon", type=float, default=0.05, help="probability of XON/XOFF bytes in a reply")
    p.add_argument("--no-first-command-loss", action="store_true", help="answer the first command after opening")
    p.add_argument("--manual", action="store_true", help="start in manual mode (OUT_* commands refused)")
    p.add_argument("--no-external", action="store_true", help="no external Pt100 (IN_PV_02 reads ---.--)")
    p.add_argument("--ambient", type=float, default=21.0)
    p.add_argument("--bath", type=float, default=None, help="initial bath temperature (default: ambient)")
    p.add_argument("--tau", type=float, default=60.0, help="bath time constant in seconds")
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument("--setpoint-range", type=float, nargs=2, default=(-50.0, 200.0), metavar=("MIN", "MAX"))
    p.add_argument("--power-fail-seconds", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--log-level", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level, name="julabo-sim")
    config = ChillerConfig(
        ambient=args.ambient,
        tau_s=args.tau,
        remote=not args.manual,
        external_present=not args.no_external,
        setpoint_range=tuple(args.setpoint_range),
    )
    options = SimOptions(
        host=args.host,
        tcp_port=None if args.tcp_port < 0 else args.tcp_port,
        control_port=args.control_port,
        pty_link=args.pty_link,
        pty=not args.no_pty,
        pacing_s=args.pacing,
        pacing_tolerance_s=args.pacing_tolerance,
        jitter_s=args.jitter,
        drop_reply_probability=args.drop_replies,
        xon_probability=args.xon,
        first_command_lost=not args.no_first_command_loss,
        time_scale=args.time_scale,
        seed=args.seed,
        power_fail_s=args.power_fail_seconds,
    )
    sim = ChillerSimulator(options, config)
    if args.bath is not None:
        sim.model.bath_temp = args.bath
        sim.model.external_temp = args.bath
    signal.signal(signal.SIGTERM, lambda *_: sim.stop())
    signal.signal(signal.SIGINT, lambda *_: sim.stop())
    print("READY " + json.dumps(sim.endpoints()), flush=True)
    sim.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
