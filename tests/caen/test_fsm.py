"""The FSM hierarchy and its safety rules, fed with PV values in-process (no EPICS, no MQTT).

Enum PVs arrive as the adapter delivers them: an index with the IOC's label list. Every test runs with the
manual's label order and with every list reversed, so no test passes by assuming an index order.
"""

import pytest
import yaml
from caen_fsm.config import parse_config
from caen_fsm.enums import EnumReading, UnitsReading
from caen_fsm.flavour import SERVICE_UNITS
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
WORDS = {"Pw": ("Off", "On"), "PDwn": ("Kill", "Ramp"), "ImRange": ("High", "Low"), "ClearAlarm": ("No", "Yes")}
VARIANTS = {"default": WORDS, "reversed": {k: (b, a) for k, (a, b) in WORDS.items()}}
LABELS = dict(WORDS)  # the variant of the running test (set by the autouse fixture)


@pytest.fixture(autouse=True, params=sorted(VARIANTS))
def labels(request):
    LABELS.clear()
    LABELS.update(VARIANTS[request.param])
    return LABELS


def reading(name: str, value):
    """What the adapter hands over for PV ``name``: enum PVs as (index, labels); ``value`` is the meaning
    (0/1 = the manual's first/second word, e.g. Pw 1 = On)."""
    param = name.rsplit(":", 1)[1]
    if param not in LABELS:
        return value
    word = WORDS[param][int(value)]
    return EnumReading(LABELS[param].index(word), LABELS[param])


def pw(channel: str, on: bool) -> Put:
    """The put that switches ``channel`` on/off, in the current IOC's label order."""
    return Put(pv(f"{channel}:Pw"), LABELS["Pw"].index("On" if on else "Off"))


def pv(name: str) -> str:
    ch = {"A_lv": "00:000", "A_hv": "12:000", "B_lv": "00:001", "B_hv": "12:001"}
    channel, param = name.rsplit(":", 1)
    return f"lab:{ch[channel]}:{param}"


def all_zero(p: Plant) -> list:
    """Every PV of the crate (channels and ClearAlarm) reading 0 / the first word, and the EGU of VMon/IMon
    (read once at connect) in the units the service works in."""
    units = [(n, UnitsReading(SERVICE_UNITS[p.pv_index[n][1]][p.pv_index[n][0].cfg.kind])) for n in p.egu_pvs]
    return [(n, reading(n, 0)) for n in p.pv_names] + units


@pytest.fixture
def plant() -> Plant:
    p = Plant(parse_config(yaml.safe_load(CFG)))
    out = p.apply(values=all_zero(p), connections=[(n, True) for n in p.pv_names])
    assert not out.puts
    kinds = [e.kind for e in out.events]
    assert "connected" in kinds and "reconnected" not in kinds  # the first connect is not a reconnect
    return p


def feed(p: Plant, now: float = 0.0, **values):
    """feed(p, A_hv__Status=1, A_hv__VMon=3.0) -> Outcome."""
    names = [pv(k.replace("__", ":")) for k in values]
    return p.apply(values=[(n, reading(n, v)) for n, v in zip(names, values.values(), strict=True)], now=now)


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
    assert out.puts[-1] == pw("A_lv", True)
    assert Put(pv("A_lv:V0Set"), 12.0) in out.puts
    assert all("B_" not in p.pv for p in out.puts)


def test_lv_off_with_hv_on_ramps_hv_down_first_and_lv_follows_when_hv_is_off(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=ON, A_hv__Pw=1, A_hv__VMon=300.0)
    out = plant.command(Command.LV_OFF, ["A"], now=10.0)
    assert out.puts == [pw("A_hv", False)]
    assert out.result["waiting_for_hv_off"] == ["A"]
    out = feed(plant, now=11.0, A_hv__Pw=0, A_hv__Status=RDW, A_hv__VMon=150.0)
    assert out.puts == []
    out = feed(plant, now=12.0, A_hv__Status=0, A_hv__VMon=6.0)  # bits say off but still above 5 V
    assert out.puts == []
    out = feed(plant, now=12.5, A_hv__VMon=0.4)
    assert out.puts == [pw("A_lv", False)]
    assert [e.kind for e in out.events] == ["lv_off_done"]


def test_lv_off_sequence_gives_up_with_an_alarm_and_leaves_lv_on(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=ON, A_hv__Pw=1, A_hv__VMon=300.0)
    plant.command(Command.LV_OFF, ["A"], now=0.0)
    out = plant.apply(now=61.0)
    assert out.puts == [] and [e.kind for e in out.events] == ["sequence_aborted"]
    assert out.events[0].severity == "alarm"


def test_hv_off_with_no_modules_given_addresses_all(plant):
    out = plant.command(Command.HV_OFF, None)
    assert out.puts == [pw("A_hv", False), pw("B_hv", False)]


def test_hv_off_reports_disconnected_modules_but_switches_the_others(plant):
    plant.apply(connections=[(pv("B_hv:Status"), False)])
    out = plant.command(Command.HV_OFF, None)  # a partial refusal is an answer, not an exception
    assert out.puts == [pw("A_hv", False)]
    assert out.accepted == ["A"]
    assert out.refused == {"B": "B_hv disconnected"}
    assert out.refusal is not None and "NOT to disconnected module(s): B (B_hv disconnected)" in out.refusal


def test_lv_off_names_each_refused_module_with_its_own_reason(plant):
    plant.apply(connections=[(pv("A_lv:VMon"), False), (pv("B_hv:Status"), False), (pv("B_lv:Status"), False)])
    out = plant.command(Command.LV_OFF, ["A", "B"])
    assert out.accepted == [] and out.puts == []
    assert out.refused == {"A": "A_lv disconnected", "B": "B_lv, B_hv disconnected"}


def test_an_unplugged_board_is_named_as_the_reason_a_module_was_not_switched_off(plant):
    feed(plant, B_hv__Status=1 << 11)  # UNPLUGGED
    out = plant.command(Command.HV_OFF, None)
    assert out.accepted == ["A"]
    assert out.refused == {"B": "module DISCONNECTED: LV OFF, HV UNPLUGGED"}


def test_a_switch_off_every_module_takes_has_no_refusal(plant):
    out = plant.command(Command.HV_OFF, ["A", "B"])
    assert out.accepted == ["A", "B"] and out.refused == {} and out.refusal is None


def test_a_refused_switch_on_does_nothing_at_all(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1)
    with pytest.raises(CommandRefused, match=r"B \(LV is OFF"):
        plant.command(Command.HV_ON, ["A", "B"])
    out = plant.command(Command.HV_OFF, ["A"])  # nothing of the refused hv_on is left over for a later command
    assert out.puts == [pw("A_hv", False)]


def test_lv_lost_while_hv_on_switches_hv_off_once(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=ON, A_hv__Pw=1, A_hv__VMon=300.0)
    out = feed(plant, A_lv__Status=TRIP, A_lv__Pw=0)
    assert pw("A_hv", False) in out.puts
    assert {e.kind for e in out.events} >= {"interlock", "trip"}
    out = feed(plant, A_hv__VMon=250.0)
    assert out.puts == []  # not repeated on every update


def test_trip_latches_module_and_refuses_switch_on_until_cleared(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=TRIP, A_hv__Pw=0)
    assert plant.modules["A"].state == ModuleState.TRIPPED
    assert plant.system.state == SystemState.TRIPPED
    with pytest.raises(CommandRefused, match="TRIPPED: clear_alarms first"):
        plant.command(Command.HV_ON, ["A"])
    assert plant.clear_alarms().puts == [Put("lab:ClearAlarm", LABELS["ClearAlarm"].index("Yes"))]


def test_disconnect_and_reconnect_events_without_puts(plant):
    out = plant.apply(connections=[(n, False) for n in plant.pv_names])
    assert plant.system.state == SystemState.DISCONNECTED
    assert "disconnected" in [e.kind for e in out.events]
    plant.apply(connections=[(n, True) for n in plant.pv_names])
    out = plant.apply(values=all_zero(plant))
    assert plant.system.state == SystemState.OFF and out.puts == []
    assert "reconnected" in [e.kind for e in out.events]


def test_after_a_reconnect_a_channel_stays_unknown_until_fresh_values_arrive(plant):
    """Issue 18.3: values cached before an IOC restart were republished as current (HV_ON for 46 ms)."""
    feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=ON, A_hv__Pw=1, A_hv__VMon=300.0, A_lv__VMon=12.0)
    assert plant.modules["A"].state == ModuleState.HV_ON
    plant.apply(connections=[(n, False) for n in plant.pv_names])
    hv = plant.channels["A_hv"].snapshot()
    assert hv["state"] == "DISCONNECTED" and hv["vmon"] is None and hv["on"] is False and hv["status"] is None
    # the IOC is back (a fresh one: everything off), its connections arrive before its values
    out = plant.apply(connections=[(n, True) for n in plant.pv_names])
    assert plant.modules["A"].state == ModuleState.DISCONNECTED
    assert plant.system.state == SystemState.DISCONNECTED and not plant.connected
    assert [e for e in out.events if e.kind in ("state_change", "reconnected")] == []
    assert plant.channels["A_hv"].snapshot()["vmon"] is None
    assert plant.modules["A"].snapshot()["hv_vmon"] is None
    # some fresh values: still unknown while any PV of the channel has not spoken since the reconnect
    out = feed(plant, A_hv__Status=0, A_lv__Status=0)
    assert plant.modules["A"].state == ModuleState.DISCONNECTED and out.puts == []
    out = plant.apply(values=all_zero(plant))
    changes = [
        (e.data["from"], e.data["to"]) for e in out.events if e.kind == "state_change" and e.data["module"] == "A"
    ]
    assert changes == [("DISCONNECTED", "OFF")]
    assert plant.system.state == SystemState.OFF and out.puts == []


def test_a_late_update_of_a_lost_pv_is_not_taken(plant):
    plant.apply(connections=[(pv("A_hv:VMon"), False)])
    feed(plant, A_hv__VMon=300.0)  # overtaken by the disconnect: not a current reading
    assert plant.channels["A_hv"].snapshot()["vmon"] is None
    assert plant.modules["A"].state == ModuleState.DISCONNECTED


def test_enum_pvs_are_written_and_read_by_the_iocs_labels(plant):
    """Issue 18.2: PDwn/ImRange were written by index in the service's own order."""
    hv = plant.channels["A_hv"]
    out = plant.set_param(hv, "tripMode", "Ramp")
    assert out.puts == [Put(pv("A_hv:PDwn"), LABELS["PDwn"].index("Ramp"))]
    out = plant.set_param(hv, "ImRange", "low")  # case as the operator typed it
    assert out.puts == [Put(pv("A_hv:ImRange"), LABELS["ImRange"].index("Low"))]
    feed(plant, A_hv__PDwn=1, A_hv__ImRange=0)  # the crate reads Ramp, High
    snap = hv.snapshot()
    assert (snap["pdwn"], snap["imrange"]) == ("Ramp", "High")
    assert plant.channels["A_lv"].snapshot()["pdwn"] is None


def test_switch_on_writes_configured_enum_settings_in_the_iocs_order(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1)
    out = plant.command(Command.HV_ON, ["A"])  # config: tripMode not set, the crate keeps its own
    plant.channels["A_hv"].overrides["PDwn"] = "Kill"
    plant.apply(values=[(pv("A_hv:PDwn"), reading("x:PDwn", 1))])  # crate reads Ramp
    out = plant.command(Command.HV_ON, ["A"])
    assert Put(pv("A_hv:PDwn"), LABELS["PDwn"].index("Kill")) in out.puts
    assert out.puts[-1] == pw("A_hv", True)


def test_a_label_the_ioc_does_not_offer_is_refused(plant):
    hv = plant.channels["A_hv"]
    plant.apply(values=[(pv("A_hv:PDwn"), EnumReading(0, ("Kill now", "Ramp down")))])
    with pytest.raises(CommandRefused, match=r"offers Kill now, Ramp down; 'Kill' is not one of them"):
        plant.set_param(hv, "PDwn", "Kill")


def test_an_enum_value_without_labels_leaves_the_channel_unknown_with_an_alarm(plant):
    out = plant.apply(connections=[(pv("A_hv:Pw"), False)])
    plant.apply(connections=[(pv("A_hv:Pw"), True)])
    out = plant.apply(values=[(pv("A_hv:Pw"), 1)])  # a bare number: which word is 1?
    assert [e.kind for e in out.events] == ["enum_unknown"] and out.events[0].severity == "alarm"
    assert plant.modules["A"].state == ModuleState.DISCONNECTED


def test_interlock_enforcement_switches_hv_off_and_lv_after_it(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=ON, A_hv__Pw=1, A_hv__VMon=300.0, B_lv__Status=ON, B_lv__Pw=1)
    out = plant.enforce_off(lv=True, now=0.0, why="interlock TRIPPED (chiller_not_running)")
    assert out.puts == [pw("A_hv", False), pw("B_lv", False)]  # B has HV off: LV at once; A: HV first
    assert [e.kind for e in out.events] == ["interlock_enforce"] and out.events[0].severity == "alarm"
    assert plant.enforce_off(lv=True, now=1.0, why="again").puts == []  # not before resend_s
    out = feed(plant, now=2.0, A_hv__Pw=0, A_hv__Status=0, A_hv__VMon=0.0)
    assert out.puts == [pw("A_lv", False)]
    feed(plant, A_lv__Pw=0, A_lv__Status=0, B_lv__Pw=1, B_lv__Status=ON)  # B still on: switched off again
    assert plant.enforce_off(lv=True, now=6.0, why="again").puts == [pw("B_lv", False)]
    feed(plant, B_lv__Pw=1, B_lv__Status=ON)  # re-armed, switched on, and a new trip 1 s later:
    plant.reset_enforcement()
    assert plant.enforce_off(lv=True, now=7.0, why="new trip").puts == [pw("B_lv", False)]  # at once


def test_interlock_enforcement_without_lv_reason_leaves_lv_on(plant):
    feed(plant, A_lv__Status=ON, A_lv__Pw=1, A_hv__Status=ON, A_hv__Pw=1, A_hv__VMon=300.0)
    assert plant.enforce_off(lv=False, now=0.0, why="dewpoint").puts == [pw("A_hv", False)]
    out = feed(plant, now=1.0, A_hv__Pw=0, A_hv__Status=0, A_hv__VMon=0.0)
    assert out.puts == []


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
    for ch, status, power, vmon in steps:
        seq += [(pv(f"{ch}:Status"), status), (pv(f"{ch}:Pw"), reading("x:Pw", power)), (pv(f"{ch}:VMon"), vmon)]
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
    start = all_zero(p)
    up = _updates([("A_lv", RUP, 1, 6.0), ("A_lv", ON, 1, 12.0), ("A_hv", RUP, 1, 100.0), ("A_hv", ON, 1, 300.0)])
    puts, changes = _feed_in_batches(p, start + up, [(n, True) for n in p.pv_names], batch)
    assert puts == []
    assert p.connected and p.modules["A"].state == ModuleState.HV_ON and p.modules["B"].state == ModuleState.OFF
    out = p.command(Command.LV_OFF, ["A"])
    assert out.puts == [pw("A_hv", False)] and out.result["waiting_for_hv_off"] == ["A"]
    down = _updates([("A_hv", RDW, 0, 150.0), ("A_hv", RDW, 0, 20.0), ("A_hv", 0, 0, 0.0)])
    more_puts, more_changes = _feed_in_batches(p, down, [], batch)
    assert more_puts == [pw("A_lv", False)]  # LV off exactly once, only after HV read off below 5 V
    full = ["OFF", "LV_RAMP_UP", "LV_ON", "HV_RAMP_UP", "HV_ON", "HV_RAMP_DOWN", "LV_ON"]
    seen = changes + more_changes
    assert seen == full if batch == 1 else seen[-1] == "LV_ON"  # bigger batches coalesce intermediate states
    assert all(s in full for s in seen)
    assert all(ch.state == ch.derive() for ch in p.channels.values())
    assert all(m.state == m.derive() for m in p.modules.values())
    assert p.modules["A"].lv_off_pending_since is None and not p._sequenced
