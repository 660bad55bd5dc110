"""The FSM hierarchy and its safety rules, fed with PV values in-process (no EPICS, no MQTT)."""

import pytest
import yaml
from caen_fsm.config import parse_config
from caen_fsm.fsm import CommandRefused, Plant, Put, module_state, system_state
from caen_fsm.states import ChannelState, Command, ModuleState, SystemState

CFG = """
system: lab
channels:
  - {module: A, lv: [0, 0], hv: [12, 0]}
  - {module: B, lv: [0, 1], hv: [12, 1]}
global:
  lv: {setV: 12.}
  hv: {setV: 300., rampUpSpeed: 20.}
service: {hv_safe_voltage: 5, lv_off_timeout_s: 60}
"""
ON, RUP, RDW, TRIP = 1, 2, 4, 1 << 9


def pv(name: str) -> str:
    ch = {"A_lv": "00:000", "A_hv": "12:000", "B_lv": "00:001", "B_hv": "12:001"}
    channel, param = name.rsplit(":", 1)
    return f"lab:{ch[channel]}:{param}"


@pytest.fixture
def plant() -> Plant:
    p = Plant(parse_config(yaml.safe_load(CFG)))
    out = p.apply(values=[(n, 0) for n in p.pv_index], connections=[(n, True) for n in p.pv_index])
    assert not out.puts
    return p


def feed(p: Plant, now: float = 0.0, **values):
    """feed(p, A_hv__Status=1, A_hv__VMon=3.0) -> Outcome."""
    return p.apply(values=[(pv(k.replace("__", ":")), v) for k, v in values.items()], now=now)


def test_everything_off_and_connected_reads_off_without_any_put(plant):
    assert plant.system.state == SystemState.OFF
    assert {m.state for m in plant.modules.values()} == {ModuleState.OFF}


def test_connecting_to_a_crate_that_is_on_only_reads(plant):
    out = feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=ON, A_hv__Pw=1, A_hv__VMon=300.0)
    assert out.puts == []
    assert plant.modules["A"].state == ModuleState.HV_ON
    assert plant.system.state == SystemState.MIXED


def test_hv_on_is_refused_for_the_whole_request_naming_modules_without_lv(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1)
    with pytest.raises(CommandRefused, match=r"LV must be on first.*B \(LV is OFF, module OFF\)") as err:
        plant.command(Command.HV_ON, ["A", "B"])
    assert "A (" not in str(err.value)


def test_hv_on_refused_while_lv_still_ramping(plant):
    feed(plant, A_lv__Status=ON | RUP, A_lv__Pw=1)
    assert plant.modules["A"].state == ModuleState.LV_RAMP_UP
    with pytest.raises(CommandRefused, match="LV is RAMP_UP"):
        plant.command(Command.HV_ON, ["A"])


def test_lv_on_writes_configured_settings_then_switches_on(plant):
    out = plant.command(Command.LV_ON, ["A"])
    assert out.puts[-1] == Put(pv("A_lv:Pw"), 1)
    assert Put(pv("A_lv:V0Set"), 12.0) in out.puts
    assert all("B_" not in p.pv for p in out.puts)


def test_lv_off_with_hv_on_ramps_hv_down_first_and_lv_follows_when_hv_is_off(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=ON, A_hv__Pw=1, A_hv__VMon=300.0)
    out = plant.command(Command.LV_OFF, ["A"], now=10.0)
    assert out.puts == [Put(pv("A_hv:Pw"), 0)]
    assert out.result["waiting_for_hv_off"] == ["A"]
    out = feed(plant, now=11.0, A_hv__Pw=0, A_hv__Status=RDW, A_hv__VMon=150.0)
    assert out.puts == []
    out = feed(plant, now=12.0, A_hv__Status=0, A_hv__VMon=6.0)  # bits say off but still above 5 V
    assert out.puts == []
    out = feed(plant, now=12.5, A_hv__VMon=0.4)
    assert out.puts == [Put(pv("A_lv:Pw"), 0)]
    assert [e.kind for e in out.events] == ["lv_off_done"]


def test_lv_off_sequence_gives_up_with_an_alarm_and_leaves_lv_on(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=ON, A_hv__Pw=1, A_hv__VMon=300.0)
    plant.command(Command.LV_OFF, ["A"], now=0.0)
    out = plant.apply(now=61.0)
    assert out.puts == [] and [e.kind for e in out.events] == ["sequence_aborted"]
    assert out.events[0].severity == "alarm"


def test_hv_off_with_no_modules_given_addresses_all(plant):
    out = plant.command(Command.HV_OFF, None)
    assert out.puts == [Put(pv("A_hv:Pw"), 0), Put(pv("B_hv:Pw"), 0)]


def test_hv_off_reports_disconnected_modules_but_switches_the_others(plant):
    plant.apply(connections=[(pv("B_hv:Status"), False)])
    with pytest.raises(CommandRefused, match=r"NOT to disconnected module.*B"):
        plant.command(Command.HV_OFF, None)
    assert plant.take_partial().puts == [Put(pv("A_hv:Pw"), 0)]


def test_lv_lost_while_hv_on_switches_hv_off_once(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=ON, A_hv__Pw=1, A_hv__VMon=300.0)
    out = feed(plant, A_lv__Status=TRIP, A_lv__Pw=0)
    assert Put(pv("A_hv:Pw"), 0) in out.puts
    assert {e.kind for e in out.events} >= {"interlock", "trip"}
    out = feed(plant, A_hv__VMon=250.0)
    assert out.puts == []  # not repeated on every update


def test_trip_latches_module_and_refuses_switch_on_until_cleared(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=TRIP, A_hv__Pw=0)
    assert plant.modules["A"].state == ModuleState.TRIPPED
    assert plant.system.state == SystemState.TRIPPED
    with pytest.raises(CommandRefused, match="TRIPPED: clear_alarms first"):
        plant.command(Command.HV_ON, ["A"])
    assert plant.clear_alarms().puts == [Put("lab:ClearAlarm", 1)]


def test_disconnect_and_reconnect_events_without_puts(plant):
    out = plant.apply(connections=[(n, False) for n in plant.pv_index])
    assert plant.system.state == SystemState.DISCONNECTED
    assert "disconnected" in [e.kind for e in out.events]
    out = plant.apply(connections=[(n, True) for n in plant.pv_index])
    assert plant.system.state == SystemState.OFF and out.puts == []
    assert "reconnected" in [e.kind for e in out.events]


def test_unknown_and_empty_module_lists_are_refused(plant):
    with pytest.raises(CommandRefused, match=r"unknown module.*Z; known: A, B"):
        plant.command(Command.LV_ON, ["A", "Z"])
    with pytest.raises(CommandRefused, match="empty module list"):
        plant.command(Command.LV_ON, [])


def test_module_and_system_state_tables():
    C = ChannelState
    assert module_state(C.ON, C.OFF) == ModuleState.LV_ON
    assert module_state(C.ON, C.RAMP_DOWN) == ModuleState.HV_RAMP_DOWN
    assert module_state(C.OFF, C.ON) == ModuleState.MIXED
    assert module_state(C.ON, C.DISCONNECTED) == ModuleState.DISCONNECTED
    assert module_state(C.TRIPPED, C.ON) == ModuleState.TRIPPED
    assert system_state([ModuleState.HV_ON, ModuleState.HV_RAMP_UP]) == SystemState.RAMPING
    assert system_state([ModuleState.LV_ON, ModuleState.LV_ON]) == SystemState.LV_ON
    assert system_state([ModuleState.LV_ON, ModuleState.OFF]) == SystemState.MIXED
    assert system_state([]) == SystemState.DISCONNECTED


def _updates(steps) -> list[tuple[str, object]]:
    """(channel, Status, Pw, VMon) steps as (pv, value) updates in crate order, with readings-only updates."""
    seq = []
    for ch, status, pw, vmon in steps:
        seq += [(pv(f"{ch}:Status"), status), (pv(f"{ch}:Pw"), pw), (pv(f"{ch}:VMon"), vmon)]
        seq += [(pv(f"{ch}:IMon"), vmon / 100)] * 3
    return seq


def _feed_in_batches(p: Plant, values, conns, batch: int):
    puts, changes = [], []
    for i in range(0, max(len(conns), len(values)), batch):
        out = p.apply(values=values[i : i + batch], connections=conns[i : i + batch])
        puts += out.puts
        changes += [e.data["to"] for e in out.events if e.kind == "state_change" and e.data["module"] == "A"]
    return puts, changes


@pytest.mark.parametrize("batch", [1, 2, 3, 64, 10_000])
def test_batch_size_does_not_change_what_the_plant_concludes(batch):
    """The plant fed one update at a time, or in any batch size, reaches the same states and puts."""
    p = Plant(parse_config(yaml.safe_load(CFG)))
    start = [(n, 0) for n in p.pv_index]
    up = _updates([("A_lv", RUP, 1, 6.0), ("A_lv", ON, 1, 12.0), ("A_hv", RUP, 1, 100.0), ("A_hv", ON, 1, 300.0)])
    puts, changes = _feed_in_batches(p, start + up, [(n, True) for n in p.pv_index], batch)
    assert puts == []
    assert p.connected and p.modules["A"].state == ModuleState.HV_ON and p.modules["B"].state == ModuleState.OFF
    out = p.command(Command.LV_OFF, ["A"])
    assert out.puts == [Put(pv("A_hv:Pw"), 0)] and out.result["waiting_for_hv_off"] == ["A"]
    down = _updates([("A_hv", RDW, 0, 150.0), ("A_hv", RDW, 0, 20.0), ("A_hv", 0, 0, 0.0)])
    more_puts, more_changes = _feed_in_batches(p, down, [], batch)
    assert more_puts == [Put(pv("A_lv:Pw"), 0)]  # LV off exactly once, only after HV read off below 5 V
    full = ["OFF", "LV_RAMP_UP", "LV_ON", "HV_RAMP_UP", "HV_ON", "HV_RAMP_DOWN", "LV_ON"]
    seen = changes + more_changes
    assert seen == full if batch == 1 else seen[-1] == "LV_ON"  # bigger batches coalesce intermediate states
    assert all(s in full for s in seen)
    assert all(ch.state == ch.derive() for ch in p.channels.values())
    assert all(m.state == m.derive() for m in p.modules.values())
    assert p.modules["A"].lv_off_pending_since is None and not p._sequenced
