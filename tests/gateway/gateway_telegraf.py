"""A Python MODEL of the parts of Telegraf that telegraf.conf uses. Telegraf itself is not run here: every
line this module produces is what the model predicts, checked against Telegraf's documented and (for JSON
null) source-read behaviour, not against a running Telegraf.

* :data:`KNOWN_KEYS` lists, per plugin table, the keys Telegraf's documentation defines (agent, outputs.influxdb,
  outputs.health, inputs.internal, inputs.mqtt_consumer with topic_parsing and the json_v2/value parsers). A key
  outside the table is most likely a typo that real Telegraf would reject at start.
* :func:`translate` applies the config's mqtt_consumer/topic_parsing/json_v2 mapping to one MQTT message and
  returns the InfluxDB line protocol Telegraf would write. Modelled behaviour: topic filters with +/#,
  topic_parsing tags ("_" skips a segment), json_v2 measurement_name, timestamp_path with format "unix" (float
  seconds), tag/field path (plain keys and "key.#" array length), rename, type (int, uint, float, string, bool),
  optional; the value parser with data_type string. Precision is the agent's ("1ms").

JSON null, as Telegraf's json_v2 parser handles it (read from plugins/parsers/json_v2/parser.go, behaviour
present since Telegraf 1.20/1.22, checked in the v1.32.0 tag the pod's image is):

* a ``field`` or ``tag`` whose path holds ``null`` exists for the parser (GJSON's ``Exists`` is true for an
  explicit null), so no "path doesn't exist" error is raised, ``optional`` or not; its value is then skipped:
  the point is written without that field or tag. A path that is missing altogether is an error that drops
  the whole message unless the entry is ``optional = true``.
* ``timestamp_path`` returning null, or missing, is an error ("the timestamp path ... returned NULL"): the
  whole message is dropped, it is never stamped with the arrival time instead. :class:`Dropped` models that.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TELEGRAF_CONF = REPO / "telegraf.conf"

_COMMON_INPUT = {
    "alias",
    "interval",
    "precision",
    "name_override",
    "name_prefix",
    "name_suffix",
    "tags",
    "namepass",
    "namedrop",
    "fieldpass",
    "fielddrop",
    "tagpass",
    "tagdrop",
    "collection_jitter",
}
_COMMON_OUTPUT = {
    "alias",
    "namepass",
    "namedrop",
    "fieldpass",
    "fielddrop",
    "tagpass",
    "tagdrop",
    "metric_batch_size",
    "metric_buffer_limit",
    "flush_interval",
    "flush_jitter",
}
KNOWN_KEYS: dict[str, set[str]] = {
    "agent": {
        "interval",
        "round_interval",
        "metric_batch_size",
        "metric_buffer_limit",
        "collection_jitter",
        "flush_interval",
        "flush_jitter",
        "precision",
        "debug",
        "quiet",
        "logfile",
        "logtarget",
        "hostname",
        "omit_hostname",
        "snmp_translator",
    },
    "outputs.influxdb": _COMMON_OUTPUT
    | {
        "urls",
        "database",
        "database_tag",
        "exclude_database_tag",
        "skip_database_creation",
        "retention_policy",
        "retention_policy_tag",
        "write_consistency",
        "timeout",
        "username",
        "password",
        "user_agent",
        "udp_payload",
        "tls_ca",
        "tls_cert",
        "tls_key",
        "insecure_skip_verify",
        "http_proxy",
        "http_headers",
        "content_encoding",
        "influx_uint_support",
    },
    "outputs.health": _COMMON_OUTPUT
    | {
        "service_address",
        "read_timeout",
        "write_timeout",
        "basic_username",
        "basic_password",
        "tls_allowed_cacerts",
        "tls_cert",
        "tls_key",
        "compares",
        "contains",
        "default_healthy",
    },
    "outputs.health.compares": {"field", "lt", "lte", "gt", "gte", "eq", "ne"},
    "inputs.internal": _COMMON_INPUT | {"collect_memstats", "collect_gostats"},
    "inputs.mqtt_consumer": _COMMON_INPUT
    | {
        "servers",
        "topics",
        "topic_tag",
        "qos",
        "connection_timeout",
        "max_undelivered_messages",
        "persistent_session",
        "client_id",
        "username",
        "password",
        "tls_ca",
        "tls_cert",
        "tls_key",
        "insecure_skip_verify",
        "client_trace",
        "keepalive",
        "ping_timeout",
        "protocol",
        "data_format",
        "data_type",
        "topic_parsing",
        "json_v2",
    },
    "inputs.mqtt_consumer.topic_parsing": {"topic", "measurement", "tags", "fields", "types"},
    "inputs.mqtt_consumer.json_v2": {
        "measurement_name",
        "measurement_name_path",
        "timestamp_path",
        "timestamp_format",
        "timestamp_timezone",
        "tag",
        "field",
        "object",
    },
    "inputs.mqtt_consumer.json_v2.field": {"path", "rename", "type", "optional"},
    "inputs.mqtt_consumer.json_v2.tag": {"path", "rename", "type", "optional"},
}
DATA_FORMATS = {"json_v2", "value", "influx", "json"}
FIELD_TYPES = {"int", "uint", "float", "string", "bool"}


def load(path: Path = TELEGRAF_CONF, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Parse telegraf.conf, substituting ``${VAR}`` from ``env`` (Telegraf does so in the raw text)."""
    text = path.read_text()
    if env is not None:
        text = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), m.group(0)), text)
    return tomllib.loads(text)


def unknown_keys(conf: dict[str, Any]) -> list[str]:
    """Every key of every plugin table that is not in :data:`KNOWN_KEYS` (empty list: all known)."""
    problems: list[str] = []

    def check(table: str, obj: dict[str, Any]) -> None:
        known = KNOWN_KEYS.get(table)
        if known is None:
            problems.append(f"unknown table {table}")
            return
        for key, value in obj.items():
            if key not in known:
                problems.append(f"{table}.{key}")
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                for item in value:
                    check(f"{table}.{key}", item)

    check("agent", conf.get("agent", {}))
    for kind in ("inputs", "outputs"):
        for name, instances in conf.get(kind, {}).items():
            for inst in instances:
                check(f"{kind}.{name}", {k: v for k, v in inst.items() if k not in ("tagpass", "tagdrop")})
    return problems


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (+ one level, # the rest)."""
    p, t = pattern.split("/"), topic.split("/")
    for i, seg in enumerate(p):
        if seg == "#":
            return True
        if i >= len(t) or (seg != "+" and seg != t[i]):
            return False
    return len(p) == len(t)


class Dropped(ValueError):
    """Telegraf's parser rejects the message: nothing of it is written (Telegraf logs the error)."""


def _get(doc: Any, path: str) -> tuple[bool, Any]:
    """The subset of GJSON used in the config: dotted keys and ``key.#`` (array length)."""
    cur = doc
    for part in path.split("."):
        if part == "#":
            if not isinstance(cur, list):
                return False, None
            return True, len(cur)
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _convert(value: Any, kind: str | None) -> Any:
    if kind in (None, ""):
        return value
    if kind == "float":
        return float(value)
    if kind in ("int", "uint"):
        if isinstance(value, str):
            value = float(value)
        return int(value)
    if kind == "bool":
        if isinstance(value, str):
            return value.lower() in ("true", "1")
        return bool(value)
    if kind == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else json.dumps(value)
    raise ValueError(f"unknown json_v2 type {kind!r}")


def _escape_key(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _field(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("non-finite float")
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def line(measurement: str, tags: dict[str, str], fields: dict[str, Any], ts_ms: int) -> str:
    """One line of InfluxDB line protocol (tags sorted as Telegraf does), timestamp in ms."""
    head = measurement.replace(",", r"\,").replace(" ", r"\ ")
    for k in sorted(tags):
        if tags[k] != "":
            head += f",{_escape_key(k)}={_escape_key(tags[k])}"
    body = ",".join(f"{_escape_key(k)}={_field(v)}" for k, v in sorted(fields.items()))
    return f"{head} {body} {ts_ms}"


def _topic_tags(consumer: dict[str, Any], topic: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for tp in consumer.get("topic_parsing", []):
        if not topic_matches(tp["topic"], topic):
            continue
        names = tp.get("tags", "").split("/")
        for name, seg in zip(names, topic.split("/"), strict=False):
            if name and name != "_":
                tags[name] = seg
    return tags


def translate(conf: dict[str, Any], topic: str, payload: bytes, received: float) -> list[str]:
    """The line-protocol lines Telegraf would write for one MQTT message (all matching consumers)."""
    lines: list[str] = []
    for consumer in conf.get("inputs", {}).get("mqtt_consumer", []):
        if not any(topic_matches(t, topic) for t in consumer["topics"]):
            continue
        tags = _topic_tags(consumer, topic)
        fmt = consumer.get("data_format", "influx")
        if fmt == "value":
            text = payload.decode()
            if consumer.get("data_type") != "string":
                raise ValueError("only data_type string modelled")
            name = consumer.get("name_override", "mqtt_consumer")
            lines.append(line(name, tags, {"value": text}, round(received * 1000)))
            continue
        if fmt != "json_v2":
            raise ValueError(f"data_format {fmt} not modelled")
        doc = json.loads(payload)
        for block in consumer.get("json_v2", []):
            mtags = dict(tags)
            fields: dict[str, Any] = {}
            ts = received
            if block.get("timestamp_path"):
                found, value = _get(doc, block["timestamp_path"])
                if not found or value is None:
                    raise Dropped(f"{topic}: the timestamp path {block['timestamp_path']!r} returned NULL")
                if block.get("timestamp_format") != "unix":
                    raise ValueError("only timestamp_format unix modelled")
                ts = float(value)
            for spec in block.get("tag", []):
                found, value = _get(doc, spec["path"])
                if not found and not spec.get("optional"):
                    raise Dropped(f"{topic}: the path {spec['path']!r} doesn't exist")
                if found and value is not None:  # null: present for the parser, value skipped
                    mtags[spec.get("rename", spec["path"])] = _convert(value, "string")
            for spec in block.get("field", []):
                found, value = _get(doc, spec["path"])
                if not found and not spec.get("optional"):
                    raise Dropped(f"{topic}: the path {spec['path']!r} doesn't exist")
                if found and value is not None:  # null: present for the parser, value skipped
                    fields[spec.get("rename", spec["path"])] = _convert(value, spec.get("type"))
            if fields:
                lines.append(line(block.get("measurement_name", "mqtt_consumer"), mtags, fields, round(ts * 1000)))
    return lines


def default_env() -> dict[str, str]:
    """Plausible values for the ${VAR}s telegraf.conf expects."""
    return {
        "MQTT_URL": "tcp://127.0.0.1:1883",
        "MQTT_USER": "telegraf",
        "MQTT_PASSWORD": "x",
        "INFLUX_URL": "http://127.0.0.1:8086",
        "INFLUX_DB": "trackerdcs",
        "INFLUX_USER": "telegraf",
        "INFLUX_PASSWORD": os.environ.get("INFLUX_PASSWORD", "x"),
    }
