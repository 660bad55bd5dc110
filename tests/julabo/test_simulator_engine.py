"""The simulated chiller from bytes: physics, pacing, remote mode, alarms and power failure."""

from __future__ import annotations

import random

from julabo_fsm.protocol import parse_float, parse_status
from julabo_sim.engine import LineEngine
from julabo_sim.model import ChillerConfig, ChillerModel


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
    assert parse_status(e.feed(b"STATUS\r", t())).text == "REMOTE STOP"


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
    assert parse_status(e.feed(b"STATUS\r", t())).code == -9
    assert parse_status(e.feed(b"STATUS\r", t())).text == "MANUAL STOP"
    assert not e.model.running


def test_out_of_range_values_are_refused_in_the_next_status() -> None:
    e, t = engine(), Clock()
    e.feed(b"OUT_SP_00 500\r", t())
    assert parse_status(e.feed(b"STATUS\r", t())).text == "VALUE TOO LARGE"
    e.feed(b"OUT_SP_07 0\r", t())
    assert parse_status(e.feed(b"STATUS\r", t())).text == "VALUE TOO SMALL"
    e.feed(b"BOGUS\r", t())
    assert parse_status(e.feed(b"STATUS\r", t())).text == "INVALID COMMAND"
    assert e.model.setpoints[0] == 20.0


def test_an_alarm_stops_the_chiller_and_latches_until_reset() -> None:
    e, t = engine(), Clock()
    e.feed(b"OUT_MODE_05 1\r", t())
    e.model.raise_alarm(-1)
    assert parse_status(e.feed(b"STATUS\r", t())).code == -1
    e.feed(b"OUT_MODE_05 1\r", t())
    assert not e.model.running
    assert parse_status(e.feed(b"STATUS\r", t())).code == -1  # still latched
    e.model.clear_alarm()
    assert parse_status(e.feed(b"STATUS\r", t())).code == -9  # the start refused during the alarm
    assert parse_status(e.feed(b"STATUS\r", t())).text == "REMOTE STOP"


def test_overheating_beyond_the_protector_limit_latches_an_alarm() -> None:
    e = engine(config={"protector_limit": 30.0})
    e.model.bath_temp = 35.0
    e.model.advance(0.1)
    assert e.model.latched_alarm == -14
    assert not e.model.clear_alarm()  # the cause persists


def test_external_pt100_reads_dashes_when_unplugged() -> None:
    e, t = engine(config={"external_present": False}), Clock()
    assert parse_float(e.feed(b"IN_PV_02\r", t())) is None


def test_after_a_power_cut_the_chiller_is_stopped_with_power_on_setpoints() -> None:
    e, t = engine(), Clock()
    e.feed(b"OUT_SP_00 -10.00\r", t())
    e.feed(b"OUT_MODE_05 1\r", t())
    e.model.power_cycle()
    assert not e.model.running and e.model.setpoints[0] == 20.0
