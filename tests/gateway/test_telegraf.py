"""telegraf.conf checked without Telegraf (it is not installed here): plugin keys against a table written
from Telegraf's documentation, and its MQTT -> line-protocol mapping replayed in Python (gateway_telegraf.py).

What is a model here: everything ``translate`` returns is the Python model's prediction of Telegraf's output,
not output of Telegraf. The JSON-null rules the model applies (null field/tag skipped without error, null or
missing ``ts`` drops the message) were read from Telegraf's json_v2 parser source and are described in
docs/architecture.md; the tests below pin the model to those rules, they cannot prove Telegraf follows them.
"""

from __future__ import annotations

import re
import time

import pytest
from gateway_payloads import CONTRACT_TOPICS, contract_messages
from gateway_telegraf import TELEGRAF_CONF, Dropped, default_env, load, translate, unknown_keys


def test_config_parses_and_uses_only_documented_plugin_keys():
    conf = load(env=default_env())
    assert unknown_keys(conf) == []
    assert set(conf["outputs"]) == {"influxdb", "health"}
    assert "internal" in conf["inputs"]


def test_config_keeps_secrets_out_of_the_file():
    conf = load()  # no substitution: the raw file
    for consumer in conf["inputs"]["mqtt_consumer"]:
        assert consumer["password"] == "${MQTT_PASSWORD}"
        assert consumer["username"] == "${MQTT_USER}"
    assert conf["outputs"]["influxdb"][0]["password"] == "${INFLUX_PASSWORD}"


def test_every_json_field_has_an_explicit_type_so_influx_never_sees_a_type_change():
    for consumer in load()["inputs"]["mqtt_consumer"]:
        for block in consumer.get("json_v2", []):
            for field in block.get("field", []):
                assert field.get("type") in {"int", "float", "string", "bool"}, field


def test_each_mqtt_client_id_is_unique():
    ids = [c["client_id"] for c in load()["inputs"]["mqtt_consumer"]]
    assert len(ids) == len(set(ids))


def test_every_status_event_health_and_availability_topic_of_the_contract_is_consumed():
    conf = load(env=default_env())
    now = time.time()
    for topic, payload in contract_messages(now, 16):
        assert translate(conf, topic, payload, now), f"{topic} is not written to InfluxDB"
    assert set(CONTRACT_TOPICS) >= {"caen/status", "julabo/status", "ph2acf/status", "interlock/status", "env/box"}


def test_commands_and_replies_are_not_recorded():
    conf = load(env=default_env())
    for topic in ("caen/cmd/hv_on", "caen/reply", "dcs/reply/abc", "interlock/cmd/acknowledge", "caen/commands"):
        assert translate(conf, topic, b"{}", 0.0) == []


def test_module_status_becomes_one_caen_module_point_tagged_by_module_and_channels():
    conf = load(env=default_env())
    payload = (
        b'{"module":"M1","state":"HV_ON","lv_channel":"lv0","hv_channel":"hv0","lv_vmon":10.5,'
        b'"lv_imon":1,"hv_vmon":300,"hv_imon":0.5,"ts":1795400000.25}'
    )
    assert translate(conf, "caen/status/module/M1", payload, 0.0) == [
        "caen_module,hv_channel=hv0,lv_channel=lv0,module=M1 hv_imon=0.5,hv_vmon=300.0,lv_imon=1.0,lv_vmon=10.5,"
        'state="HV_ON" 1795400000250'
    ]


def test_chiller_without_external_sensor_writes_no_external_temp_field():
    conf = load(env=default_env())
    payload = b'{"state":"RUNNING","connected":true,"bath_temp":-20,"external_temp":null,"pump_stage":null,"ts":1}'
    (lp,) = translate(conf, "julabo/status", payload, 0.0)
    assert "external_temp" not in lp and "pump_stage" not in lp
    assert "bath_temp=-20.0" in lp and "connected=true" in lp


def one_consumer(*fields: dict) -> dict:
    """A minimal json_v2 consumer on topic t (a model config, in the shape telegraf.conf is parsed to)."""
    block = {"measurement_name": "m", "timestamp_path": "ts", "timestamp_format": "unix", "field": list(fields)}
    return {"inputs": {"mqtt_consumer": [{"topics": ["t"], "data_format": "json_v2", "json_v2": [block]}]}}


def test_model_null_field_is_skipped_without_error_even_when_not_optional():
    conf = one_consumer({"path": "a", "type": "float"}, {"path": "b", "type": "float"})
    assert translate(conf, "t", b'{"a": null, "b": 2, "ts": 3}', 0.0) == ["m b=2.0 3000"]


def test_model_missing_field_drops_the_message_unless_optional():
    with pytest.raises(Dropped, match="doesn't exist"):
        translate(one_consumer({"path": "a", "type": "float"}), "t", b'{"ts": 3}', 0.0)
    conf = one_consumer({"path": "a", "type": "float", "optional": True}, {"path": "b", "type": "float"})
    assert translate(conf, "t", b'{"b": 1, "ts": 3}', 0.0) == ["m b=1.0 3000"]


@pytest.mark.parametrize("payload", [b'{"bath_temp": -20, "ts": null}', b'{"bath_temp": -20}'])
def test_model_status_without_a_timestamp_is_dropped_never_stamped_with_its_arrival(payload):
    """A reading never looks newer than it is: Telegraf refuses the message rather than using 'now'."""
    with pytest.raises(Dropped, match="returned NULL"):
        translate(load(env=default_env()), "julabo/status", payload, time.time())


def test_events_are_tagged_by_service_kind_and_severity():
    conf = load(env=default_env())
    (lp,) = translate(
        conf,
        "caen/event",
        b'{"kind":"trip","severity":"alarm","message":"hv1 \\"OVC\\"",'
        b'"channel":"hv1","module":"M2","flags":["OVC"],"ts":2}',
        0.0,
    )
    assert lp.startswith("dcs_event,kind=trip,service=caen,severity=alarm ")
    assert 'message="hv1 \\"OVC\\""' in lp


def test_availability_is_a_string_value_per_service():
    conf = load(env=default_env())
    (lp,) = translate(conf, "julabo/availability", b"offline", 5.0)
    assert lp == 'dcs_availability,service=julabo value="offline" 5000'


def test_config_file_mentions_no_literal_password():
    text = TELEGRAF_CONF.read_text()
    assert not re.search(r'password\s*=\s*"(?!\$\{)', text)


def test_burn_in_events_are_recorded_with_the_burn_in_id_recipe_and_step():
    """The sequencer's markers (burnin_start/burnin_end) and IV scans reach dcs_event, tagged service=burnin,
    so Grafana can show them as annotations; nested data (modules, outcomes) is left out."""
    conf = load(env=default_env())
    start = (
        b'{"kind":"burnin_start","severity":"info","message":"burn-in b-1 (sim-short) started by ana",'
        b'"service":"burnin","uid":"b-1","recipe":"sim-short","modules":["M1"],"start_ts":10.5,"ts":10.5}'
    )
    iv = (
        b'{"kind":"iv_scan","severity":"info","message":"IV scan step 4: M1 breakdown","service":"burnin",'
        b'"uid":"b-1","step":4,"outcomes":{"M1":"breakdown"},"stored":"mongo","ts":20}'
    )
    end = (
        b'{"kind":"burnin_end","severity":"info","message":"burn-in b-1 aborted","service":"burnin","uid":"b-1",'
        b'"outcome":"aborted","stop_ts":30,"ts":30}'
    )
    assert translate(conf, "burnin/event", start, 0.0) == [
        'dcs_event,kind=burnin_start,service=burnin,severity=info message="burn-in b-1 (sim-short) started by ana",'
        'recipe="sim-short",uid="b-1" 10500'
    ]
    assert translate(conf, "burnin/event", iv, 0.0) == [
        'dcs_event,kind=iv_scan,service=burnin,severity=info message="IV scan step 4: M1 breakdown",step=4i,'
        'uid="b-1" 20000'
    ]
    assert translate(conf, "burnin/event", end, 0.0) == [
        'dcs_event,kind=burnin_end,service=burnin,severity=info message="burn-in b-1 aborted",outcome="aborted",'
        'uid="b-1" 30000'
    ]
    # the burn-in's status, commands and replies are not events
    assert translate(conf, "burnin/cmd/start", b"{}", 0.0) == []
