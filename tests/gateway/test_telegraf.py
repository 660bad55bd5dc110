"""telegraf.conf checked without Telegraf (it is not installed here): plugin keys against a table written
from Telegraf's documentation, and its MQTT -> line-protocol mapping replayed in Python (gateway_telegraf.py)."""

from __future__ import annotations

import re
import time

from gateway_payloads import CONTRACT_TOPICS, contract_messages
from gateway_telegraf import TELEGRAF_CONF, default_env, load, translate, unknown_keys


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
    for topic in ("caen/cmd/hv_on", "caen/reply", "dcs/reply/abc", "interlock/cmd/acknowledge"):
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
