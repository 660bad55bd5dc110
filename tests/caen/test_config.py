"""The prototype's example.yml keeps working; our additions (limits, deadbands) are checked at load."""

from pathlib import Path

import pytest
import yaml
from caen_fsm.config import parse_config

from trackerdcs.config import ConfigError, load_yaml

EXAMPLE = Path(__file__).parents[2] / "services" / "caen-fsm" / "example.yml"

PROTOTYPE_DICT_SHAPE = """
channels:
    "0":
        lv: {board: 0, chan: 0, setV: 13.}
        hv: {board: 12, chan: 0}
        module: module_0
    "2":
        lv: {board: 0, chan: 2}
        hv: {board: 12, chan: 2}
global:
    lv: {setV: 12., maxI: 2.5, tripExt: 0b00010001, rampUpTime: 100.}
    hv: {setV: 200., maxI: 500., rampUpSpeed: 50., tripMode: Kill, imRange: Low}
"""

PROTOTYPE_LIST_SHAPE = """
channels:
    - module: module_0
      lv: [0, 0]
      hv: [12, 0]
    - module: module_1
      lv: [0, 1]
      hv: [12, 1]
"""


def test_prototype_mapping_shape_reads_with_global_and_per_channel_settings():
    cfg = parse_config(yaml.safe_load(PROTOTYPE_DICT_SHAPE))
    assert cfg.system == "cleanroom"  # the prototype's hard-coded SysName
    assert set(cfg.modules) == {"module_0"}
    lv = cfg.channels["module_0_lv"]
    assert (lv.slot, lv.channel) == (0, 0)
    assert lv.settings["V0Set"] == 13.0  # per-channel beats global
    assert lv.settings["TripExt"] == 0b00010001
    assert cfg.channels["ch2_lv"].settings["V0Set"] == 12.0  # no module: channels still monitored
    hv = cfg.channels["module_0_hv"]
    assert hv.settings["PDwn"] == "Kill" and hv.settings["ImRange"] == "Low" and hv.settings["RUp"] == 50.0


def test_prototype_list_shape_reads():
    cfg = parse_config(yaml.safe_load(PROTOTYPE_LIST_SHAPE))
    assert cfg.modules["module_1"].hv == "module_1_hv"
    assert (cfg.channels["module_1_hv"].slot, cfg.channels["module_1_hv"].channel) == (12, 1)


def test_shipped_example_loads():
    cfg = parse_config(load_yaml(EXAMPLE, env={}))
    assert len(cfg.modules) == 3
    assert cfg.channels["module_0_hv"].limits["V0Set"].maximum == 350.0
    assert cfg.channels["module_0_hv"].limits["V0Set"].minimum == 0.0


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"global": {"hv": {"setV": 900.0}}, "limits": {"hv": {"V0Set": 600}}}, "above the configured limit 600"),
        ({"global": {"hv": {"bogus": 1}}}, "unknown hv setting 'bogus'"),
        ({"global": {"hv": {"tripMode": "Explode"}}}, "PDwn must be one of the labels Kill, Ramp"),
        ({"global": {"hv": {"tripMode": 0}}}, "PDwn must be one of the labels Kill, Ramp, got 0"),  # no index
        ({"interlock": {"required": "no"}}, "interlock.required: expected true or false"),
        ({"interlock": {"stale_s": 0}}, "interlock.stale_s: input should be greater than 0"),
        ({"interlock": {"on_silent": "ignore"}}, "interlock.on_silent: input should be 'hv_off' or 'alarm'"),
        ({"interlock": {"status_topic": "interlock/#"}}, "without wildcards"),
        ({"interlock": {"chiller_topic": "julabo/+"}}, "interlock.chiller_topic: a topic name without wildcards"),
        ({"interlock": {"stale": 3}}, r"interlock.stale: unknown key \(known: required, .*stale_s"),
        ({"limts": {"hv": {"V0Set": 300}}}, "limts: unknown key"),
        ({"limits": {"channels": {"module_O_hv": {"V0Set": 3}}}}, "limits.channels.module_O_hv: no such channel"),
        ({"limits": {"hv": {"V0Set": "300"}}}, "limits.hv.V0Set: expected a number or a mapping, got '300'"),
        ({"channels": [{"module": "a", "lv": [0, 0], "hv": [12, 0], "hvv": 3}]}, r"channels\[0\].hvv: unknown key"),
        ({"service": {"apply_settings_on_switch_on": "false"}}, "expected true or false, got 'false'"),
        ({"channels": {"0": {"module": "a", "lv": [0, 0], "hv": [0, 0]}}}, "already used"),
        ({"channels": {"0": {"module": "a/b", "lv": [0, 0], "hv": [12, 0]}}}, "module name"),
        ({"channels": {}}, "at least one channel"),
        ({"limits": {"hv": {"Volts": 3}}}, "unknown hv parameter 'Volts'"),
    ],
)
def test_bad_configs_are_refused_with_the_location(patch, message):
    base = yaml.safe_load(PROTOTYPE_LIST_SHAPE)
    base.update(patch)
    with pytest.raises(ConfigError, match=message):
        parse_config(base)


def test_the_interlock_permit_is_required_unless_switched_off_explicitly():
    assert parse_config(yaml.safe_load(PROTOTYPE_LIST_SHAPE)).interlock.required is True
    shipped = parse_config(load_yaml(EXAMPLE, env={})).interlock
    assert shipped.required is True and shipped.status_topic == "interlock/status" and shipped.on_silent == "hv_off"
    assert shipped.chiller_topic == "julabo/status"  # the chiller's own status is followed too
    bench = parse_config({**yaml.safe_load(PROTOTYPE_LIST_SHAPE), "interlock": {"required": False}})
    assert bench.interlock.required is False
    only_interlock = parse_config({**yaml.safe_load(PROTOTYPE_LIST_SHAPE), "interlock": {"chiller_topic": ""}})
    assert only_interlock.interlock.chiller_topic == ""


def test_limits_refuse_out_of_range_setpoints_with_a_clear_message():
    cfg = parse_config({**yaml.safe_load(PROTOTYPE_LIST_SHAPE), "limits": {"hv": {"V0Set": {"max": 600}}}})
    hv = cfg.channels["module_0_hv"]
    assert hv.check("setV", 550) == 550.0
    with pytest.raises(ValueError, match=r"module_0_hv: V0Set=700.0 is above the configured limit 600"):
        hv.check("V0Set", 700)
    with pytest.raises(ValueError, match="below the configured minimum 0"):
        hv.check("I0Set", -1)
    with pytest.raises(ValueError, match="not a settable hv parameter"):
        hv.check("VMon", 1)


def test_trip_time_beyond_never_trip_and_negative_values_are_refused_whatever_the_configured_limits():
    """Found by the reliability fuzz campaign: set Trip=1.35e308 was written to the crate."""
    cfg = parse_config({**yaml.safe_load(PROTOTYPE_LIST_SHAPE), "limits": {"hv": {"V0Set": {"min": -10}}}})
    hv = cfg.channels["module_0_hv"]
    assert hv.check("Trip", 1000) == 1000.0  # 1000 s = never trip
    with pytest.raises(ValueError, match=r"Trip=1\.35e\+308 is above the physical maximum 1000"):
        hv.check("Trip", 1.35e308)
    with pytest.raises(ValueError, match=r"V0Set=-5\.0 is below the physical minimum 0"):
        hv.check("V0Set", -5)
