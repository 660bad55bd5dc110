"""Grafana provisioning checked without Grafana (not installed here): every dashboard panel query, annotation and
alert-rule query runs against a real InfluxDB 1.x loaded with exactly the line protocol telegraf.conf produces for
the contract payloads (replayed in Python, see gateway_telegraf.py), and must return data without error."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import yaml
from gateway_payloads import BURNIN_UID, contract_messages
from gateway_telegraf import REPO, default_env, load, translate

GRAFANA = REPO / "grafana"
DB = "trackerdcs"


def expand_macros(query: str) -> str:
    """What Grafana's InfluxQL datasource does with its macros (time range: the last hour)."""
    query = query.replace("$tier", "autogen")  # the tier variable's pick for a 1 h range (test_influx_tiers.py)
    return query.replace("$timeFilter", "time > now() - 1h").replace("$__interval", "30s").replace("$interval", "30s")


def dashboard_queries() -> list[tuple[str, str]]:
    found = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        dash = json.loads(path.read_text())
        for p in dash["panels"]:
            for t in p["targets"]:
                found.append((f"{path.name}: {p['title']}", t["query"]))
        for a in dash["annotations"]["list"]:
            found.append((f"{path.name}: annotation {a['name']}", a["query"]))
    return found


def alert_queries() -> list[tuple[str, str]]:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "alerting" / "trackerdcs-rules.yaml").read_text())
    return [
        (f"alert {r['title']}", d["model"]["query"])
        for g in doc["groups"]
        for r in g["rules"]
        for d in r["data"]
        if d["datasourceUid"] != "__expr__"
    ]


@pytest.fixture(scope="module")
def loaded_influx(influx):
    """InfluxDB holding the contract payloads of the last 10 minutes, as Telegraf would have written them."""
    influx.query(f"CREATE DATABASE {DB}", method="POST")
    conf = load(env=default_env())
    end = time.time() - 5
    lines = [lp for topic, payload in contract_messages(end) for lp in translate(conf, topic, payload, end)]
    influx.write(DB, lines)
    return influx


def test_generated_files_are_up_to_date():
    r = subprocess.run(
        [sys.executable, str(GRAFANA / "build_dashboards.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_datasource_takes_credentials_from_env_and_secret_files():
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "influxdb.yaml").read_text())
    (ds,) = doc["datasources"]
    assert ds["uid"] == "trackerdcs-influx" and ds["type"] == "influxdb"
    assert ds["secureJsonData"]["password"].startswith("$__file{")
    assert ds["url"].startswith("$__env{") and ds["user"].startswith("$__env{")


def test_every_panel_uses_the_provisioned_datasource():
    for path in (GRAFANA / "dashboards").glob("*.json"):
        for p in json.loads(path.read_text())["panels"]:
            assert p["datasource"]["uid"] == "trackerdcs-influx", (path.name, p["title"])


def test_dashboards_cover_crate_chiller_environment_and_runs():
    titles = " ".join(json.loads(p.read_text())["title"] for p in (GRAFANA / "dashboards").glob("*.json"))
    for word in ("CAEN", "chiller", "Environment", "runs"):
        assert word in titles
    runs = [
        a
        for a in json.loads((GRAFANA / "dashboards" / "caen.json").read_text())["annotations"]["list"]
        if "run_start" in a["query"]
    ]
    assert runs, "calibration runs appear as annotations"


def test_alert_rules_cover_trips_chiller_alarms_and_stale_data():
    doc = yaml.safe_load((GRAFANA / "provisioning" / "alerting" / "trackerdcs-rules.yaml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    titles = " ".join(r["title"] for r in rules).lower()
    assert "trip" in titles and "chiller alarm" in titles and "stale" in titles
    stale = [r for r in rules if "stale" in r["title"].lower()]
    assert all(r["noDataState"] == "Alerting" for r in stale), "no data at all must alert for staleness rules"


@pytest.mark.parametrize(
    "where,query", dashboard_queries() + alert_queries(), ids=lambda v: re.sub(r"\W+", "_", v)[:60]
)
def test_query_returns_data_from_telegraf_shaped_influxdb(loaded_influx, where, query):
    result = loaded_influx.query(expand_macros(query), db=DB)
    assert "error" not in result, f"{where}: {result}"
    (statement,) = result["results"]
    assert "error" not in statement, f"{where}: {statement['error']}"
    series = statement.get("series", [])
    assert series and any(s["values"] for s in series), f"{where}: empty result for {query}"


def annotations(dashboard: str) -> list[dict]:
    return json.loads((GRAFANA / "dashboards" / dashboard).read_text())["annotations"]["list"]


ALL_ANNOTATIONS = [
    (f"{p.name}: {a['name']}", a) for p in sorted((GRAFANA / "dashboards").glob("*.json")) for a in annotations(p.name)
]


@pytest.mark.parametrize("where,annotation", ALL_ANNOTATIONS, ids=[re.sub(r"\W+", "_", w) for w, _ in ALL_ANNOTATIONS])
def test_every_annotation_returns_its_text_and_tag_columns(loaded_influx, where, annotation):
    """Grafana takes an annotation's text and tags from the columns named textColumn and tagsColumn: a tag key
    that is not selected gives annotations without tags, so each must be a column of the result."""
    (statement,) = loaded_influx.query(expand_macros(annotation["query"]), db=DB)["results"]
    (series,) = statement["series"]
    wanted = [annotation["textColumn"], *annotation["tagsColumn"].replace(" ", "").split(",")]
    assert set(wanted) <= set(series["columns"]), (where, series["columns"])
    for row in series["values"]:
        values = dict(zip(series["columns"], row, strict=True))
        assert all(values[c] for c in wanted), (where, values)


def annotation_rows(influx, dashboard: str, name: str) -> list[dict]:
    (a,) = [a for a in annotations(dashboard) if a["name"] == name]
    (statement,) = influx.query(expand_macros(a["query"]), db=DB)["results"]
    return [dict(zip(s["columns"], row, strict=True)) for s in statement.get("series", []) for row in s["values"]]


@pytest.mark.parametrize("dashboard", ["caen.json", "chiller.json", "environment.json", "runs.json"])
def test_burn_in_start_end_and_iv_scans_are_annotations_on_the_dashboards(loaded_influx, dashboard):
    """What the sequencer publishes (burnin_start, burnin_end, iv_scan on burnin/event), written as Telegraf
    would, comes back as three annotations; its other events (step_start ...) do not clutter the graphs."""
    marks = annotation_rows(loaded_influx, dashboard, "Burn-in start and end")
    assert [r["kind"] for r in marks] == ["burnin_start", "burnin_end"]
    assert all(r["uid"] == BURNIN_UID and BURNIN_UID in r["message"] for r in marks)
    assert marks[0]["recipe"] == "sim-short" and marks[1]["outcome"] == "done"
    (scan,) = annotation_rows(loaded_influx, dashboard, "IV scans")
    assert scan["kind"] == "iv_scan" and scan["step"] == 4 and scan["uid"] == BURNIN_UID
    assert scan["message"] == "IV scan step 4: M1 done, M2 breakdown"
    # in time order: start, IV scan, end
    assert marks[0]["time"] < scan["time"] < marks[1]["time"]


def test_a_query_on_a_misspelt_field_would_be_caught(loaded_influx):
    """The check above can fail: a wrong field name gives an empty result."""
    result = loaded_influx.query(expand_macros('SELECT mean("bath_tmp") FROM "julabo" WHERE $timeFilter'), db=DB)
    assert not result["results"][0].get("series")


def test_module_panel_has_one_series_per_module(loaded_influx):
    q = json.loads((GRAFANA / "dashboards" / "caen.json").read_text())["panels"][2]["targets"][0]["query"]
    series = loaded_influx.query(expand_macros(q), db=DB)["results"][0]["series"]
    assert sorted(s["tags"]["module"] for s in series) == ["M1", "M2"]
