"""The archive's pure parts: what the tiers provision, which series belong to a run, how export rows look."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from trackerdcs.export import Selection, count_windows, parse_time, selections_for, series_rows, window_queries
from trackerdcs.influxtiers import (
    DAY,
    LAST,
    NUMERIC,
    CurrentState,
    TierConfig,
    canonical,
    config_from_env,
    continuous_queries,
    parse_go_duration,
    parse_keep,
    plan,
    rp_of,
)
from trackerdcs.runconditions import selections_for_run, window

pytestmark = pytest.mark.fast
REPO = Path(__file__).resolve().parents[2]


def telegraf_fields() -> dict[str, dict[str, str]]:
    conf = tomllib.loads((REPO / "telegraf.conf").read_text().replace("${", "$_{"))
    out: dict[str, dict[str, str]] = {}
    for inp in conf["inputs"]["mqtt_consumer"]:
        for j in inp.get("json_v2", []):
            fields = out.setdefault(j["measurement_name"], {})
            for f in j.get("field", []):
                fields[f.get("rename", f["path"])] = f["type"]
    return out


def test_every_numeric_field_telegraf_writes_is_aggregated_and_every_kept_state_exists():
    for measurement, fields in telegraf_fields().items():
        numeric = {f for f, t in fields.items() if t in ("int", "uint", "float")}
        if measurement == "dcs_event":  # discrete events: raw only (a run keeps its own in its conditions file)
            continue
        assert numeric == set(NUMERIC.get(measurement, ())), measurement
        assert set(LAST.get(measurement, ())) <= {f for f, t in fields.items() if t in ("string", "bool")}


def desired_state(config: TierConfig, db: str = "trackerdcs") -> CurrentState:
    rps = {r.name: (r.duration_s, r.shard_s, r.name == config.raw_rp) for r in config.retentions()}
    return CurrentState(True, rps, {cq.name: cq.statement for cq in continuous_queries(db, config)})


def test_nothing_to_do_when_the_database_is_as_configured():
    assert plan("trackerdcs", desired_state(TierConfig()), TierConfig()) == []


def test_a_cq_as_influxdb_shows_it_unquoted_counts_as_the_same():
    ours = continuous_queries("trackerdcs")[0].statement
    shown = ours.replace('"', "")
    assert canonical(shown) == canonical(ours)
    assert canonical(shown.replace("10m", "20m")) != canonical(ours)


def test_a_changed_retention_is_altered_and_a_stale_cq_dropped():
    state = desired_state(TierConfig())
    state.cqs["cq_minute_gone"] = "CREATE CONTINUOUS QUERY cq_minute_gone ON trackerdcs BEGIN SELECT 1 END"
    todo = plan("trackerdcs", state, TierConfig(raw_s=7 * DAY, minute_s=365 * DAY))
    assert todo == [
        'ALTER RETENTION POLICY "autogen" ON "trackerdcs" DURATION 7d REPLICATION 1 SHARD DURATION 1d DEFAULT',
        'ALTER RETENTION POLICY "minute" ON "trackerdcs" DURATION 365d REPLICATION 1 SHARD DURATION 7d',
        'DROP CONTINUOUS QUERY "cq_minute_gone" ON "trackerdcs"',
    ]


def test_missing_policies_and_queries_are_created_and_the_raw_one_stays_default():
    todo = plan("trackerdcs", CurrentState(True, {"autogen": (0, 7 * DAY, True)}, {}), TierConfig())
    assert todo[0].startswith('ALTER RETENTION POLICY "autogen"') and todo[0].endswith("DEFAULT")
    assert todo[1].startswith('CREATE RETENTION POLICY "minute"') and "DEFAULT" not in todo[1]
    assert "DURATION INF" in todo[2]
    assert len([t for t in todo if t.startswith("CREATE CONTINUOUS QUERY")]) == 2 * len(NUMERIC)


def test_the_hour_tier_is_built_from_the_minute_tier_keeping_field_names():
    hour = next(cq for cq in continuous_queries("db") if cq.name == "cq_hour_environment").statement
    assert 'mean("temperature") AS "temperature"' in hour
    assert 'min("temperature_min") AS "temperature_min"' in hour
    assert 'FROM "db"."minute"."environment"' in hour and 'INTO "db"."hour"."environment"' in hour
    assert "RESAMPLE EVERY 1h FOR 3h" in hour


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * DAY), ("2w", 14 * DAY), ("1h", 3600), ("inf", 0), ("forever", 0)]
)
def test_operator_durations(text, seconds):
    assert parse_keep(text) == seconds


def test_durations_influxdb_cannot_keep_are_refused():
    with pytest.raises(ValueError, match="at least 1h"):
        parse_keep("30m")
    with pytest.raises(ValueError):
        parse_keep("a month")


def test_durations_as_influxdb_shows_them():
    assert parse_go_duration("720h0m0s") == 30 * DAY
    assert parse_go_duration("0s") == 0


def test_tiers_from_the_environment():
    config = config_from_env({"INFLUX_RAW_KEEP": "14d", "INFLUX_HOUR_KEEP": "3650d"})
    assert (config.raw_s, config.minute_s, config.hour_s) == (14 * DAY, 730 * DAY, 3650 * DAY)
    assert rp_of("1m", config) == "minute" and rp_of("raw") == "autogen"


def test_a_run_keeps_its_modules_the_chiller_the_environment_the_interlock_and_events():
    sel = selections_for_run(["module_0", "module_3"])
    assert [s.measurement for s in sel] == [
        "caen_module", "caen_channel", "julabo", "environment", "interlock", "dcs_event",
    ]  # fmt: skip
    assert sel[1].where() == "(\"module\" = 'module_0' OR \"module\" = 'module_3')"
    assert all(not s.tags for s in selections_for_run([]))  # no modules named: the whole stand


def test_a_runs_window_starts_before_it_so_the_state_at_its_start_is_in_it():
    assert window(1000.0, 2000.0) == (880.0, 2000.001)
    with pytest.raises(ValueError):
        window(2000.0, 1000.0)


def test_export_windows_cover_the_range_without_overlap():
    qs = list(window_queries(Selection("julabo"), 0, 13 * 3600_000, "raw"))
    assert len(qs) == 3 == count_windows([Selection("julabo")], 0, 13 * 3600, "raw")
    assert "time >= 0ms AND time < 21600000ms" in qs[0] and "time >= 43200000ms AND time < 46800000ms" in qs[2]
    assert 'FROM "minute"."julabo"' in next(window_queries(Selection("julabo"), 0, 1, "1m"))


def test_export_rows_numbers_flags_and_text():
    series = {"name": "caen_channel", "tags": {"channel": "hv_0", "module": "module_0", "kind": ""},
              "columns": ["time", "vmon", "on", "state", "imon"], "values": [[5, 300.5, True, "ON", None]]}  # fmt: skip
    got = [(r.tags, r.field, r.value, r.text) for r in series_rows(series)]
    assert got == [
        ("channel=hv_0,module=module_0", "vmon", 300.5, None),
        ("channel=hv_0,module=module_0", "on", 1.0, None),
        ("channel=hv_0,module=module_0", "state", None, "ON"),
    ]


def test_export_selection_by_modules_and_channels():
    sel = selections_for(modules=["module_0"], channels=["lv_3"], measurements=["julabo"])
    assert [(s.measurement, s.tags) for s in sel] == [
        ("caen_module", (("module", ("module_0",)),)),
        ("caen_channel", (("module", ("module_0",)),)),
        ("caen_channel", (("channel", ("lv_3",)),)),
        ("julabo", ()),
    ]
    assert [s.measurement for s in selections_for()] == list(NUMERIC)


def test_export_times():
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_time("2026-12-01T00:00:00") == parse_time("2026-12-01T00:00:00Z") == 1796083200.0
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_dcs_export_is_wired_and_refuses_bad_arguments_before_asking_influxdb(capsys):
    from trackerdcs import cli

    assert cli.main(["export", "--from", "yesterday"]) == 64
    assert "expected ISO time" in capsys.readouterr().err
    assert cli.main(["export", "--from", "2h", "--format", "parquet"]) == 64  # Parquet is not written to a terminal
    assert cli.main(["export", "--from", "1h", "--to", "2h"]) == 64  # --to before --from


def test_a_window_given_in_seconds_keeps_its_millisecond_edges():
    """A run stopping at a point's exact time includes that point (no float truncation of the bound)."""
    from trackerdcs import export

    seen = []

    class Recorder:
        def stream(self, q, chunk_size):
            seen.append(q)
            return iter(())

    stop_ms = 1_796_082_900_014  # (stop_ms / 1000 + 0.001) * 1000 is 1796082900014.9998: int() lost the point at stop
    list(export.iter_rows(Recorder(), [Selection("julabo")], 1_796_082_000.123, window(0.0, stop_ms / 1000)[1]))
    assert "time >= 1796082000123ms" in seen[0] and f"time < {stop_ms + 1}ms" in seen[0]
