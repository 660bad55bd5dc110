"""Configuration mistakes are caught at startup with a message naming the key."""

from __future__ import annotations

import pytest
from ph2acf_bridge.settings import load_settings

from trackerdcs.config import ConfigError


def test_defaults_follow_the_flavour() -> None:
    ot = load_settings({"ph2acf": {"flavour": "ot", "base_dir": "/opt/Ph2_ACF"}})
    assert ot.subprocess.executable == "runCalibration"
    assert ot.subprocess.args[:1] == ["-b"]
    assert "pedenoise" in ot.calibrations and "scurve" not in ot.calibrations
    assert ot.mongo.uri is None  # archive only


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"ph2acf": {"mode": "carrier-pigeon"}}, "ph2acf.mode"),
        ({"ph2acf": {"flavour": "it", "calibrations": ["pedenoise"]}}, "not known for flavour it"),
        ({"ph2acf": {"tcp": {"header": "len16"}}}, "ph2acf.tcp.header is no longer accepted"),
        ({"ph2acf": {"mode": "tcp", "tcp": {"release": "2020"}}}, "ph2acf.tcp.release must be one of"),
        ({"ph2acf": {"tcp": {"prot": 5000}}}, "ph2acf.tcp.prot: unknown key"),
        ({"storage": {"mongo": {"url": "x"}}}, "storage.mongo.url: unknown key"),
        ({"storage": {"archive": "/x"}}, "storage.archive: unknown key"),
        (
            {"ph2acf": {"base_dir": "/opt/Ph2_ACF", "tcp": {"port": "five"}}},
            "ph2acf.tcp.port: expected an integer, got 'five'",
        ),
        ({"ph2acf": {"base_dir": "/opt/Ph2_ACF", "refuse_when_interlock_tripped": "false"}}, "expected true or false"),
        ({"ph2acf": {"base_dir": "/opt/Ph2_ACF"}, "strage": {}}, "strage: unknown key"),
    ],
)
def test_bad_configuration_is_refused_with_the_key_named(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(config)
