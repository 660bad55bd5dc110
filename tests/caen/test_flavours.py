"""IOC flavours as data: what a site gets from ``flavour:`` and what the service then reads, writes and refuses
(pure: no process, no socket)."""

from __future__ import annotations

import pytest
from caen_fsm import selfcheck
from caen_fsm.config import parse_config
from caen_fsm.enums import EnumReading, UnitsReading
from caen_fsm.flavour import load_flavour, shipped
from caen_fsm.fsm import Plant
from caen_fsm.states import ChannelState, Kind
from caen_fsm.status_bits import channel_state
from conftest import FLAVOURS, IOC_CASES

from trackerdcs.config import ConfigError

pytestmark = pytest.mark.fast

ONE_MODULE = {"system": "st", "channels": [{"module": "M0", "lv": [0, 1], "hv": [12, 3]}], "interlock": {}}


def config(flavour=None, **more):
    raw = {**ONE_MODULE, **more}
    if flavour is not None:
        raw["flavour"] = flavour
    return parse_config(raw)


def test_every_shipped_flavour_is_tested_against_the_simulated_crate():
    """A new flavour is one YAML file plus one entry in tests/caen/conftest.py IOC_CASES."""
    assert sorted(shipped()) == sorted(FLAVOURS)
    assert {f for f, _ in IOC_CASES} == set(shipped())


def test_without_a_flavour_key_the_layout_is_the_one_caen_fsm_always_spoke():
    plant = Plant(config())
    hv = plant.channels["M0_hv"]
    assert plant.flavour.name == "trackerdcs"
    assert hv.read_pvs["V0Set"] == hv.write_pvs["V0Set"] == "st:12:003:V0Set"
    assert hv.read_pvs["Status"] == "st:12:003:Status" and plant.clear_alarm_pv == "st:ClearAlarm"
    assert len(plant.pv_names) == 14 + 13 + 1 and not plant.write_only_pvs  # LV 14, HV 13, ClearAlarm


@pytest.mark.parametrize("name", FLAVOURS)
def test_the_service_and_the_simulated_ioc_agree_on_every_pv_name(name):
    """The flavour file and the simulator's presentation are written apart: a disagreement is a wrong name."""
    from caen_sim.presentations import PRESENTATIONS, READ_ONLY

    look = PRESENTATIONS[name]
    plant = Plant(config(name))
    for ch in plant.channels.values():
        slot, num = ch.cfg.slot, ch.cfg.channel
        for param, pv in ch.read_pvs.items():
            if param.startswith("Status.") or (param == "Status" and look.status == "bits"):
                bit = param.removeprefix("Status.")
                suffix = "" if look.read_only_plain else look.read_suffix
                assert pv == f"{look.base('st', slot, num)}:{look.status_bits[bit]}{suffix}"
            else:
                assert pv == look.read_name("st", slot, num, param, param not in READ_ONLY), param
        for param, pv in ch.write_pvs.items():
            assert pv == look.write_name("st", slot, num, param), param
    assert plant.clear_alarm_pv == look.clear_name("st")


def test_a_site_overrides_a_shipped_flavour_key_by_key():
    fl = load_flavour(
        {"base": "cls-hvcaenx527", "channel": "{system}:{slot}{ch:02d}", "labels": {"Pw": {"On": ["ENABLED"]}}}
    )
    assert fl.name == "cls-hvcaenx527+site" and fl.status.form == "highest" and fl.names["V0Set"] == "v0set"
    assert fl.read_pv("PS", 1, 2, "V0Set") == "PS:102:v0set:fbk"
    assert fl.find("Pw", ("Off", "Enabled"), "On") == 1 and fl.word("Pw", "enabled") == "On"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("nope", "unknown flavour 'nope'"),
        ({"base": "trackerdcs", "colour": "red"}, "unknown key(s) colour"),
        ({"base": "trackerdcs", "channel": "{system}:{board}"}, "unknown placeholder(s) ['board']"),
        ({"base": "trackerdcs", "status": {"form": "bits", "bits": {"ON": "{prefix}:on"}}}, "no PV for bit(s)"),
        ({"base": "trackerdcs", "labels": {"Pw": {True: ["x"]}}}, "quote ON/OFF"),
        ({"base": "trackerdcs", "absent": ["Status"]}, "needed by the service"),
        ({"base": "trackerdcs", "sign": {"negative_slots": [12]}}, "no parameter is signed"),
        (
            {"base": "trackerdcs", "units": {"source": "fixed", "fixed": {"VMon": "V", "IMon": "nA"}}},
            "does not rescale",
        ),
    ],
)
def test_a_wrong_flavour_is_a_configuration_error_naming_the_key(raw, fragment):
    with pytest.raises(ConfigError) as err:
        config(raw)
    assert fragment in str(err.value)


def test_a_setting_the_ioc_does_not_have_is_refused_at_start():
    with pytest.raises(ConfigError, match="not a settable hv parameter"):
        config("cls-hvcaenx527", **{"global": {"hv": {"imRange": "High"}}})


def test_signed_setpoints_limits_on_the_magnitude_and_the_board_sign_written():
    cfg = config({"base": "halla", "sign": {"negative_slots": [12]}}, limits={"hv": {"V0Set": 300}})
    plant = Plant(cfg)
    hv, lv = plant.channels["M0_hv"], plant.channels["M0_lv"]
    assert hv.cfg.check("V0Set", -250) == 250.0 and hv.cfg.check("V0Set", 250) == 250.0
    with pytest.raises(ValueError, match="above the configured limit 300"):
        hv.cfg.check("V0Set", -350)
    with pytest.raises(ValueError, match="negative on a positive board"):
        lv.cfg.check("V0Set", -5)
    assert hv.encode("V0Set", 250.0) == -250.0 and lv.encode("V0Set", 5.0) == 5.0


def test_a_highest_bit_status_never_guesses_what_a_condition_bit_hides():
    assert channel_state(1 << 3, True, partial=True) == ChannelState.ERROR  # OVC: on? off? unknown
    assert channel_state(1 << 3 | 1, True, partial=False) == ChannelState.ON  # the raw word says
    assert channel_state(1 << 9, True, partial=True) == ChannelState.TRIPPED
    assert channel_state(1 << 1, True, partial=True) == ChannelState.RAMP_UP
    assert channel_state(0, True, partial=True) == ChannelState.OFF


def feed(plant, value_of):
    """Connect and read every PV of ``plant``: ``value_of(channel, key)`` gives each value."""
    conns = [(pv, True) for pv in plant.pv_names]
    values = []
    for ch in plant.channels.values():
        for key, pv in ch.pvs.items():
            given = value_of(ch, key)
            values += [(pv, v) for v in (given if isinstance(given, list) else [given])]
    if plant.clear_alarm_pv:
        values.append((plant.clear_alarm_pv, EnumReading(0, ("No", "Yes"))))
    return plant.apply(values, conns)


def crate_values(labels=None, egu=None, status=0):
    labels = labels or {}
    egu = egu or {}

    def value_of(ch, key):
        param = key.removesuffix("@w")
        kind = ch.cfg.kind
        if param in ("Pw", "PDwn", "ImRange"):
            return EnumReading(
                0, labels.get(param, {"Pw": ("Off", "On"), "PDwn": ("Kill", "Ramp"), "ImRange": ("High", "Low")}[param])
            )
        if param in ("VMon", "IMon"):
            unit = egu.get(param, "V" if param == "VMon" else ("uA" if kind == Kind.HV else "A"))
            return [0.0, UnitsReading(unit)]  # the value, and the EGU read once at connect
        if param == "Status" or param.startswith("Status."):
            return status
        return 0

    return value_of


def test_self_check_passes_and_says_what_it_learnt_per_group_of_channels():
    plant = Plant(config("slac-caenhvasyn"))
    feed(plant, crate_values(labels={"Pw": ("Disabled", "Enabled")}))
    assert plant.connected and plant.channels["M0_hv"].state == ChannelState.OFF
    check = selfcheck.run(plant)
    assert check.ok, check.problems
    hv = next(g for g in check.groups if g["kind"] == "hv")
    assert hv["status_form"] == "bits" and hv["labels"]["Pw"] == ["Disabled", "Enabled"]
    assert hv["egu"] == {"VMon": "V", "IMon": "uA"} and hv["channels"] == ["M0_hv"]
    assert hv["readbacks"]["read"]["Status.INTTRIP"] == "st:S12:C03:STATUS_IT:Rd"
    assert "Status form bits" in selfcheck.log_lines(check)[0]


def test_self_check_refuses_a_missing_label_another_unit_or_a_missing_pv():
    plant = Plant(config())
    feed(plant, crate_values(labels={"PDwn": ("Ramp", "Off")}, egu={"IMon": "nA"}))
    check = selfcheck.run(plant)
    assert not check.ok
    text = check.error()
    assert "st:12:003:PDwn: no label for 'Kill' (IOC offers Ramp, Off)" in text
    assert "st:12:003:IMon: EGU 'nA', the service works in uA" in text
    missing = selfcheck.run(Plant(config()), missing=["st:12:003:Temp"])
    assert "st:12:003:Temp: no such PV" in missing.error()


def test_a_highest_bit_flavour_is_announced_in_the_self_check():
    plant = Plant(config("cls-hvcaenx527"))
    feed(
        plant, crate_values(labels={"PDwn": ("KILL", "Ramp")}, status=EnumReading(2, tuple(f"s{i}" for i in range(16))))
    )
    hv = plant.channels["M0_hv"]
    assert hv.values["Status"] == 1 << 1 and hv.state == ChannelState.RAMP_UP  # value 2: highest bit 1 (RUP)
    check = selfcheck.run(plant)
    assert check.ok and any("highest-bit" in w for w in check.warnings) and check.status_form == "highest"
    assert any("no crate-level clear" in w for w in check.warnings)
