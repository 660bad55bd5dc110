#!/usr/bin/env python3
"""Generate the trackerdcs Grafana dashboards (grafana/dashboards/*.json) and alert rules
(grafana/provisioning/alerting/trackerdcs-rules.yaml) from the tables below.

    python3 grafana/build_dashboards.py          # write
    python3 grafana/build_dashboards.py --check  # exit 1 if the files differ from what would be written

Plain Python, no SDK: the JSON is the Grafana 10/11 dashboard model with raw InfluxQL targets against the
provisioned datasource (uid ``trackerdcs-influx``); measurements are those telegraf.conf writes.
tests/gateway/test_grafana.py runs every query below against a real InfluxDB.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "influxdb", "uid": "trackerdcs-influx"}

RUNS_ANNOTATION = {
    "name": "Calibration runs",
    "datasource": DS,
    "enable": True,
    "iconColor": "#5794F2",
    "query": (
        'SELECT "message", "kind", "run", "calibration", "outcome" FROM "dcs_event" WHERE "service" = \'ph2acf\' '
        "AND (\"kind\" = 'run_start' OR \"kind\" = 'run_stop') AND $timeFilter"
    ),
    "textColumn": "message",
    "tagsColumn": "kind",
}
INTERLOCK_ANNOTATION = {
    "name": "Interlock and trips",
    "datasource": DS,
    "enable": True,
    "iconColor": "#F2495C",
    "query": 'SELECT "message", "service" FROM "dcs_event" WHERE "severity" = \'alarm\' AND $timeFilter',
    "textColumn": "message",
    "tagsColumn": "service",
}

BURNIN_ANNOTATION = {
    "name": "Burn-in start and end",
    "datasource": DS,
    "enable": True,
    "iconColor": "#B877D9",
    "query": (
        'SELECT "message", "kind", "uid", "recipe", "outcome" FROM "dcs_event" WHERE "service" = \'burnin\' '
        "AND (\"kind\" = 'burnin_start' OR \"kind\" = 'burnin_end') AND $timeFilter"
    ),
    "textColumn": "message",
    "tagsColumn": "kind",
}
IV_SCAN_ANNOTATION = {
    "name": "IV scans",
    "datasource": DS,
    "enable": True,
    "iconColor": "#FF9830",
    "query": (
        'SELECT "message", "kind", "uid", "step" FROM "dcs_event" WHERE "service" = \'burnin\' '
        "AND \"kind\" = 'iv_scan' AND $timeFilter"
    ),
    "textColumn": "message",
    "tagsColumn": "kind",
}
ANNOTATIONS = [RUNS_ANNOTATION, INTERLOCK_ANNOTATION, BURNIN_ANNOTATION, IV_SCAN_ANNOTATION]


def target(query: str, ref: str = "A", fmt: str = "time_series", alias: str = "") -> dict[str, Any]:
    t = {"refId": ref, "datasource": DS, "rawQuery": True, "query": query, "resultFormat": fmt}
    if alias:
        t["alias"] = alias
    return t


def panel(
    title: str,
    kind: str,
    targets: list[dict[str, Any]],
    x: int,
    y: int,
    w: int = 12,
    h: int = 8,
    unit: str = "",
    **options: Any,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "title": title,
        "type": kind,
        "datasource": DS,
        "targets": targets,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
        "options": options,
    }
    return p


# Retention tiers (trackerdcs/influxtiers.py): raw points in "autogen" (30 d), per-minute aggregates in "minute",
# per-hour in "hour"; a tier keeps each field's mean under its own name, so a panel query reads the same on every
# tier. The hidden variable ``tier`` picks the RP by the length of the time range (refreshed when it changes):
# up to a day raw, up to 31 days minutes, beyond that hours, so a one-year panel never scans raw points.
TIERED = ("caen_system", "caen_module", "caen_channel", "julabo", "ph2acf", "environment", "interlock", "dcs_health")
TIER_QUERY = (
    'SELECT last("rp") FROM "hour"."tier_select" WHERE "min_range_ms" < $__range_ms AND "max_range_ms" >= $__range_ms'
)
TIER_VARIABLE = {
    "name": "tier",
    "label": "archive tier",
    "type": "query",
    "datasource": DS,
    "query": TIER_QUERY,
    "definition": TIER_QUERY,
    "refresh": 2,  # on time range change
    "hide": 2,
    "includeAll": False,
    "multi": False,
    "current": {"text": "autogen", "value": "autogen"},
    "options": [],
    "sort": 0,
}


def tiered(query: str) -> str:
    """``query`` reading the measurements the tiers aggregate from the RP ``$tier`` picks."""
    for m in TIERED:
        query = query.replace(f'FROM "{m}"', f'FROM "$tier"."{m}"')
    return query


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> dict[str, Any]:
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        for t in p["targets"]:
            t["query"] = tiered(t["query"])
    return {
        "uid": uid,
        "title": title,
        "tags": ["trackerdcs"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": annotations},
        "templating": {"list": [TIER_VARIABLE]},
        "panels": panels,
    }


def by_module(field: str) -> str:
    return (
        f'SELECT mean("{field}") FROM "caen_module" WHERE $timeFilter GROUP BY time($__interval), "module" fill(none)'
    )


CAEN = dashboard(
    "trackerdcs-caen",
    "CAEN crate",
    [
        panel(
            "Crate",
            "stat",
            [
                target(
                    'SELECT last("modules_hv_on") AS "HV on", last("modules_tripped") AS "tripped", '
                    'last("modules_total") AS "modules" FROM "caen_system" WHERE $timeFilter'
                )
            ],
            0,
            0,
            8,
            4,
        ),
        panel(
            "Crate state",
            "state-timeline",
            [target('SELECT "state" FROM "caen_system" WHERE $timeFilter')],
            8,
            0,
            16,
            4,
        ),
        panel(
            "HV voltage per module",
            "timeseries",
            [target(by_module("hv_vmon"), alias="$tag_module")],
            0,
            4,
            unit="volt",
        ),
        panel(
            "HV current per module", "timeseries", [target(by_module("hv_imon"), alias="$tag_module")], 12, 4, unit="µA"
        ),
        panel(
            "LV voltage per module",
            "timeseries",
            [target(by_module("lv_vmon"), alias="$tag_module")],
            0,
            12,
            unit="volt",
        ),
        panel(
            "LV current per module",
            "timeseries",
            [target(by_module("lv_imon"), alias="$tag_module")],
            12,
            12,
            unit="amp",
        ),
        panel(
            "Module state",
            "table",
            [
                target(
                    'SELECT last("state") AS "state", last("hv_vmon") AS "hv_vmon", '
                    'last("hv_imon") AS "hv_imon", last("lv_vmon") AS "lv_vmon", '
                    'last("lv_imon") AS "lv_imon" FROM "caen_module" WHERE $timeFilter '
                    'GROUP BY "module"',
                    fmt="table",
                )
            ],
            0,
            20,
            12,
            8,
        ),
        panel(
            "Module state history",
            "state-timeline",
            [target('SELECT "state" FROM "caen_module" WHERE $timeFilter GROUP BY "module"', alias="$tag_module")],
            12,
            20,
            12,
            8,
        ),
        panel(
            "Trips",
            "table",
            [
                target(
                    'SELECT "message", "module", "channel" FROM "dcs_event" WHERE "service" = \'caen\' '
                    "AND \"kind\" = 'trip' AND $timeFilter",
                    fmt="table",
                )
            ],
            0,
            28,
            24,
            6,
        ),
    ],
    ANNOTATIONS,
)

CHILLER = dashboard(
    "trackerdcs-chiller",
    "Julabo chiller",
    [
        panel(
            "Temperatures and setpoint",
            "timeseries",
            [
                target(
                    'SELECT mean("bath_temp") AS "bath", mean("external_temp") AS "external", '
                    'mean("setpoint") AS "setpoint" '
                    'FROM "julabo" WHERE $timeFilter GROUP BY time($__interval) fill(none)'
                )
            ],
            0,
            0,
            16,
            9,
            unit="celsius",
        ),
        panel(
            "Now",
            "stat",
            [
                target(
                    'SELECT last("bath_temp") AS "bath", last("setpoint") AS "setpoint", '
                    'last("heating_power") AS "heating %" FROM "julabo" WHERE $timeFilter'
                )
            ],
            16,
            0,
            8,
            9,
        ),
        panel(
            "Setpoints 1-3",
            "timeseries",
            [
                target(
                    'SELECT mean("setpoint_1") AS "SP1", mean("setpoint_2") AS "SP2", mean("setpoint_3") AS "SP3" '
                    'FROM "julabo" WHERE $timeFilter GROUP BY time($__interval) fill(none)'
                )
            ],
            0,
            9,
            12,
            8,
            unit="celsius",
        ),
        panel(
            "Heating power",
            "timeseries",
            [
                target(
                    'SELECT mean("heating_power") FROM "julabo" WHERE $timeFilter '
                    "GROUP BY time($__interval) fill(none)",
                    alias="heating",
                )
            ],
            12,
            9,
            12,
            8,
            unit="percent",
        ),
        panel("State", "state-timeline", [target('SELECT "state" FROM "julabo" WHERE $timeFilter')], 0, 17, 24, 4),
        panel(
            "Chiller alarms",
            "table",
            [
                target(
                    'SELECT "message", "status_code" FROM "dcs_event" WHERE "service" = \'julabo\' AND $timeFilter',
                    fmt="table",
                )
            ],
            0,
            21,
            24,
            6,
        ),
    ],
    ANNOTATIONS,
)

ENVIRONMENT = dashboard(
    "trackerdcs-environment",
    "Environment and interlock",
    [
        panel(
            "Temperature per sensor",
            "timeseries",
            [
                target(
                    'SELECT mean("temperature") FROM "environment" WHERE $timeFilter '
                    'GROUP BY time($__interval), "sensor" '
                    "fill(none)",
                    alias="$tag_sensor",
                )
            ],
            0,
            0,
            12,
            8,
            unit="celsius",
        ),
        panel(
            "Humidity per sensor",
            "timeseries",
            [
                target(
                    'SELECT mean("humidity") FROM "environment" WHERE $timeFilter GROUP BY time($__interval), "sensor" '
                    "fill(none)",
                    alias="$tag_sensor",
                )
            ],
            12,
            0,
            12,
            8,
            unit="humidity",
        ),
        panel(
            "Interlock state",
            "state-timeline",
            [target('SELECT "state" FROM "interlock" WHERE $timeFilter')],
            0,
            8,
            24,
            4,
        ),
        panel(
            "Interlock events",
            "table",
            [
                target(
                    'SELECT "message", "reason" FROM "dcs_event" WHERE "service" = \'interlock\' AND $timeFilter',
                    fmt="table",
                )
            ],
            0,
            12,
            24,
            6,
        ),
    ],
    ANNOTATIONS,
)

RUNS = dashboard(
    "trackerdcs-runs",
    "Calibration runs and services",
    [
        panel(
            "Run progress",
            "timeseries",
            [
                target(
                    'SELECT mean("progress") FROM "ph2acf" WHERE $timeFilter GROUP BY time($__interval) fill(none)',
                    alias="progress",
                )
            ],
            0,
            0,
            12,
            8,
            unit="percent",
        ),
        panel(
            "Bridge state", "state-timeline", [target('SELECT "state" FROM "ph2acf" WHERE $timeFilter')], 12, 0, 12, 4
        ),
        panel(
            "Results waiting for MongoDB",
            "stat",
            [target('SELECT last("spooled") FROM "ph2acf" WHERE $timeFilter', alias="spooled")],
            12,
            4,
            12,
            4,
        ),
        panel(
            "Runs",
            "table",
            [
                target(
                    'SELECT "run", "calibration", "operator", "outcome", "message" FROM "dcs_event" '
                    "WHERE \"service\" = 'ph2acf' AND $timeFilter",
                    fmt="table",
                )
            ],
            0,
            8,
            24,
            8,
        ),
        panel(
            "Service availability",
            "state-timeline",
            [
                target(
                    'SELECT "value" FROM "dcs_availability" WHERE $timeFilter GROUP BY "service"', alias="$tag_service"
                )
            ],
            0,
            16,
            12,
            6,
        ),
        panel(
            "Service CPU",
            "timeseries",
            [
                target(
                    'SELECT mean("cpu_percent") FROM "dcs_health" WHERE $timeFilter '
                    'GROUP BY time($__interval), "service" fill(none)',
                    alias="$tag_service",
                )
            ],
            12,
            16,
            12,
            6,
            unit="percent",
        ),
    ],
    ANNOTATIONS,
)

DASHBOARDS = {"caen.json": CAEN, "chiller.json": CHILLER, "environment.json": ENVIRONMENT, "runs.json": RUNS}


# ------------------------------------------------------------------------------------------ alert rules
def rule(
    uid: str,
    title: str,
    query: str,
    op: str,
    threshold: float,
    window_s: int,
    no_data: str,
    summary: str,
    severity: str,
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "condition": "C",
        "for": "0s",
        "noDataState": no_data,
        "execErrState": "Alerting",
        "annotations": {"summary": summary},
        "labels": {"severity": severity, "system": "trackerdcs"},
        "data": [
            {
                "refId": "A",
                "datasourceUid": DS["uid"],
                "relativeTimeRange": {"from": window_s, "to": 0},
                "model": {"refId": "A", "rawQuery": True, "query": query, "resultFormat": "time_series"},
            },
            {
                "refId": "B",
                "datasourceUid": "__expr__",
                "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last"},
            },
            {
                "refId": "C",
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "C",
                    "type": "threshold",
                    "expression": "B",
                    "conditions": [{"evaluator": {"type": op, "params": [threshold]}}],
                },
            },
        ],
    }


ALERT_RULES = [
    rule(
        "trackerdcs-caen-trip",
        "CAEN channel tripped",
        'SELECT last("modules_tripped") FROM "caen_system" WHERE $timeFilter',
        "gt",
        0,
        600,
        "OK",
        "A module of the CAEN crate tripped (over-current or interlock); see the CAEN dashboard.",
        "critical",
    ),
    rule(
        "trackerdcs-caen-trip-event",
        "CAEN trip event",
        'SELECT count("message") FROM "dcs_event" WHERE "service" = \'caen\' AND "kind" = \'trip\' AND $timeFilter',
        "gt",
        0,
        300,
        "OK",
        "The CAEN service reported a trip in the last 5 minutes.",
        "critical",
    ),
    rule(
        "trackerdcs-chiller-alarm",
        "Chiller alarm",
        'SELECT last("status_code") FROM "julabo" WHERE $timeFilter',
        "lt",
        0,
        600,
        "OK",
        "The Julabo chiller reports a negative status code (alarm or error).",
        "critical",
    ),
    rule(
        "trackerdcs-interlock",
        "Interlock latched",
        'SELECT last("active_count") FROM "interlock" WHERE $timeFilter',
        "gt",
        0,
        600,
        "OK",
        "The Node-RED interlock tripped and waits for an operator acknowledgement.",
        "critical",
    ),
    rule(
        "trackerdcs-stale-chiller",
        "Chiller data stale",
        'SELECT count("bath_temp") FROM "julabo" WHERE $timeFilter',
        "lt",
        1,
        300,
        "Alerting",
        "No chiller status reached InfluxDB for 5 minutes (service, broker or Telegraf down).",
        "warning",
    ),
    rule(
        "trackerdcs-stale-caen",
        "CAEN data stale",
        'SELECT count("modules_total") FROM "caen_system" WHERE $timeFilter',
        "lt",
        1,
        300,
        "Alerting",
        "No CAEN status reached InfluxDB for 5 minutes (service, broker or Telegraf down).",
        "warning",
    ),
    rule(
        "trackerdcs-stale-env",
        "Environment data stale",
        'SELECT count("humidity") FROM "environment" WHERE $timeFilter',
        "lt",
        1,
        600,
        "Alerting",
        "No temperature/humidity reading for 10 minutes: the dew-point protection is blind.",
        "warning",
    ),
]


def alert_yaml() -> str:
    """Grafana alerting provisioning file (YAML is a superset of JSON: written as JSON for exactness)."""
    doc = {
        "apiVersion": 1,
        "groups": [{"orgId": 1, "name": "trackerdcs", "folder": "trackerdcs", "interval": "1m", "rules": ALERT_RULES}],
    }
    return "# Generated by grafana/build_dashboards.py; do not edit by hand.\n" + json.dumps(doc, indent=2) + "\n"


def outputs() -> dict[Path, str]:
    files = {
        HERE / "dashboards" / name: json.dumps(d, indent=2, ensure_ascii=False) + "\n" for name, d in DASHBOARDS.items()
    }
    files[HERE / "provisioning" / "alerting" / "trackerdcs-rules.yaml"] = alert_yaml()
    return files


def main(argv: list[str]) -> int:
    stale = [p for p, text in outputs().items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            print(f"{p} is out of date: run python3 grafana/build_dashboards.py", file=sys.stderr)
        return 1 if stale else 0
    for p, text in outputs().items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
