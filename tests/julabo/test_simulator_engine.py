"""The simulated chiller from bytes: physics, pacing, remote mode, alarms and power failure.

Expected replies are the literal bytes the device puts on the wire (manual), never the service's parser.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

from julabo_sim.engine import LineEngine, LineFaults
from julabo_sim.model import ChillerConfig, ChillerModel

SIM_PACKAGE = Path(__file__).resolve().parents[2] / "services" / "julabo-fsm" / "julabo_sim"
SERVICE_PACKAGES = {"julabo_fsm", "caen_fsm", "ph2acf_bridge", "burnin"}


def parse_float(raw: bytes) -> float | None:
    """A numeric reply as the manual shows it: optional padding, the number, CR LF; ``---.--`` = absent."""
    assert raw.endswith(b"\r\n"), raw
    text = raw[:-2].decode("ascii").strip()
    return None if text == "---.--" else float(text)


def engine(**kw) -> LineEngine:
    model = ChillerModel(ChillerConfig(tau_s=10.0, **kw.pop("config", {})))
    return LineEngine(model, rng=random.Random(1), first_command_lost=False, **kw)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self, step: float = 0.3) -> float:
        self.t += step
        return self.t


def test_queries_are_answered_and_out_commands_are_silent() -> None:
    e, t = engine(), Clock()
    assert e.feed(b"OUT_SP_00 25.5\r", t()) == b""
    assert parse_float(e.feed(b"IN_SP_00\r", t())) == 25.5
    assert e.feed(b"STATUS\r", t()) == b"02 REMOTE STOP\r\n"


def test_the_bath_follows_the_setpoint_with_the_configured_time_constant() -> None:
    e, t = engine(), Clock()
    e.feed(b"OUT_SP_00 31.00\r", t())
    e.feed(b"OUT_MODE_05 1\r", t())
    start = e.model.bath_temp
    e.model.advance(10.0)  # one time constant: ~63 % of the step (rate limit permitting)
    fraction = (e.model.bath_temp - start) / (31.0 - start)
    assert 0.55 < fraction < 0.70
    assert e.model.heating_power > 0
    for _ in range(100):
        e.model.advance(1.0)
    assert abs(e.model.bath_temp - 31.0) < 0.05
    e.feed(b"OUT_SP_00 -20.00\r", t())
    e.model.advance(1.0)
    assert e.model.heating_power == -100.0  # full cooling


def test_a_too_fast_client_gets_garbled_or_missing_replies() -> None:
    e, t = engine(), Clock()
    replies = [e.feed(b"IN_PV_00\r", t(0.05)) for _ in range(40)]
    bad = [r for r in replies[1:] if r == b"" or any(b > 0x7F for b in r)]
    assert len(bad) == 39
    assert e.stats.pacing_violations == 39 and e.stats.dropped and e.stats.garbled


def test_a_paced_client_gets_every_reply() -> None:
    e, t = engine(), Clock()
    replies = [e.feed(b"IN_PV_00\r", t(0.25)) for _ in range(40)]
    assert all(parse_float(r) is not None for r in replies)


def test_the_first_command_after_opening_is_lost() -> None:
    model = ChillerModel()
    e = LineEngine(model, rng=random.Random(1), first_command_lost=True)
    assert e.feed(b"VERSION\r", 1.0) == b""
    assert e.feed(b"VERSION\r", 1.3).startswith(b"JULABO")


def test_out_commands_are_ignored_in_manual_mode_and_status_says_why() -> None:
    e, t = engine(config={"remote": False}), Clock()
    e.feed(b"OUT_MODE_05 1\r", t())
    assert e.feed(b"STATUS\r", t()) == b"-09 COMMAND NOT ALLOWED IN CURRENT OPERATING MODE\r\n"
    assert e.feed(b"STATUS\r", t()) == b"00 MANUAL STOP\r\n"
    assert not e.model.running


def test_out_of_range_values_are_refused_in_the_next_status() -> None:
    e, t = engine(), Clock()
    e.feed(b"OUT_SP_00 500\r", t())
    assert e.feed(b"STATUS\r", t()) == b"-11 VALUE TOO LARGE\r\n"
    e.feed(b"OUT_SP_07 0\r", t())
    assert e.feed(b"STATUS\r", t()) == b"-10 VALUE TOO SMALL\r\n"
    e.feed(b"BOGUS\r", t())
    assert e.feed(b"STATUS\r", t()) == b"-08 INVALID COMMAND\r\n"
    assert e.model.setpoints[0] == 20.0


def test_an_alarm_stops_the_chiller_and_latches_until_reset() -> None:
    e, t = engine(), Clock()
    e.feed(b"OUT_MODE_05 1\r", t())
    e.model.raise_alarm(-1)
    assert e.feed(b"STATUS\r", t()) == b"-01 LOW LEVEL ALARM\r\n"
    e.feed(b"OUT_MODE_05 1\r", t())
    assert not e.model.running
    assert e.feed(b"STATUS\r", t()) == b"-01 LOW LEVEL ALARM\r\n"  # still latched
    e.model.clear_alarm()
    assert e.feed(b"STATUS\r", t()).startswith(b"-09 ")  # the start refused during the alarm
    assert e.feed(b"STATUS\r", t()) == b"02 REMOTE STOP\r\n"


def test_overheating_beyond_the_protector_limit_latches_an_alarm() -> None:
    e = engine(config={"protector_limit": 30.0})
    e.model.bath_temp = 35.0
    e.model.advance(0.1)
    assert e.model.latched_alarm == -14
    assert not e.model.clear_alarm()  # the cause persists


def test_external_pt100_reads_dashes_when_unplugged() -> None:
    e, t = engine(config={"external_present": False}), Clock()
    assert e.feed(b"IN_PV_02\r", t()) == b"---.--\r\n"


def test_after_a_power_cut_the_chiller_is_stopped_with_power_on_setpoints() -> None:
    e, t = engine(), Clock()
    e.feed(b"OUT_SP_00 -10.00\r", t())
    e.feed(b"OUT_MODE_05 1\r", t())
    e.model.power_cycle()
    assert not e.model.running and e.model.setpoints[0] == 20.0


def test_a_running_chiller_says_remote_start_and_its_mode_reads_one() -> None:
    e, t = engine(), Clock()
    e.feed(b"OUT_MODE_05 1\r", t())
    assert e.feed(b"STATUS\r", t()) == b"03 REMOTE START\r\n"
    assert e.feed(b"IN_MODE_05\r", t()) == b"1\r\n"
    assert e.feed(b"VERSION\r", t()) == b"JULABO HIGHTECH FL HL/SL VERSION 4.0\r\n"


def test_xon_xoff_noise_is_dc1_and_dc3_around_an_intact_reply() -> None:
    e, t = engine(xon_probability=1.0), Clock()
    raw = e.feed(b"IN_SP_00\r", t())
    assert raw.count(b"\x11") == 2 and raw.count(b"\x13") == 1
    assert raw.replace(b"\x11", b"").replace(b"\x13", b"") == b" 20.00\r\n"


def test_with_jitter_the_device_times_its_pacing_from_when_it_finished_reading() -> None:
    """A client keeping exactly 250 ms loses replies to a jittery device; one with margin loses none."""
    exact, t = engine(jitter_s=0.025), Clock()
    replies = [exact.feed(b"IN_PV_00\r", t(0.2504)) for _ in range(400)]
    lost = sum(1 for r in replies if r == b"" or any(b > 0x7F for b in r))
    assert 0.05 * 400 < lost < 0.5 * 400
    margin, t = engine(jitter_s=0.025), Clock()
    assert all(parse_float(margin.feed(b"IN_PV_00\r", t(0.27))) is not None for _ in range(400))
    steady, t = engine(), Clock()  # without jitter, 250 ms is enough
    assert all(parse_float(steady.feed(b"IN_PV_00\r", t(0.2504))) is not None for _ in range(400))


def test_dropped_replies_are_carried_out_but_never_answered() -> None:
    e, t = engine(drop_reply_probability=1.0), Clock()
    assert e.feed(b"IN_PV_00\r", t()) == b""
    e.drop_reply_probability = 0.0
    e.feed(b"OUT_SP_00 12.50\r", t())
    e.drop_reply_probability = 1.0
    assert e.feed(b"IN_SP_00\r", t()) == b""
    e.drop_reply_probability = 0.0
    assert e.feed(b"IN_SP_00\r", t()) == b" 12.50\r\n"


def test_lost_lines_never_reach_the_device() -> None:
    faults = LineFaults()
    e, t = engine(faults=faults), Clock()
    e.feed(b"OUT_MODE_05 1\r", t())
    faults.lose(2, "OUT_MODE_05")
    e.feed(b"OUT_MODE_05 0\r", t())
    assert e.feed(b"STATUS\r", t()) == b"03 REMOTE START\r\n"  # other lines get through
    e.feed(b"OUT_MODE_05 0\r", t())
    assert e.model.running
    e.feed(b"OUT_MODE_05 0\r", t())
    assert e.feed(b"STATUS\r", t()) == b"02 REMOTE STOP\r\n"
    assert e.stats.lost == 2


def test_the_simulator_imports_nothing_from_any_service_package() -> None:
    """A simulator written from the device facts alone: a wrong constant cannot be wrong on both sides."""
    offenders = []
    for path in sorted(SIM_PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in SERVICE_PACKAGES]
    assert list(SIM_PACKAGE.glob("*.py")) and offenders == []
