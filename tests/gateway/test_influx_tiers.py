"""The archive's tiers on a real InfluxDB 1.x (Debian's influxd 1.6.7 here; the pod pins 1.12).

What is shown, and how honestly:

* after the first start the retention policies (raw 30 d default, minute 730 d, hour forever) and one continuous
  query per tier and measurement exist, and a second start changes nothing;
* the aggregates are right: the CQs' own SELECT (read back from InfluxDB) is run with explicit time bounds over
  seeded random points, and every per-minute and per-hour mean/min/max/last is compared with a reference
  computed in Python. CQs run on wall-clock time, so a separate test lets InfluxDB's CQ service run them by
  itself on fresh points (waits for the next minute boundary, ~1 min);
* points age out of raw: InfluxDB's shortest retention is 1 h, so the test writes points 10 days old (accepted
  under 30 d), then shortens raw to 1 h the way an operator would (``INFLUX_RAW_KEEP=1h``, re-provision) and
  watches the retention service (check interval 1 s here, 30 min by default) drop them while the minute and
  hour aggregates of the same time stay; a write older than the retention is refused. Not shown: a 30-day
  wait.
* export of a known window returns exactly the points written; a run's archive contains its window;
  ``dcs backup``/``restore`` round trip with aggregates present.
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import Influx

from trackerdcs import export
from trackerdcs.influxql import InfluxClient, InfluxError, rows
from trackerdcs.influxtiers import NUMERIC, TierConfig, continuous_queries, provision, read_state
from trackerdcs.runconditions import conditions_file
from trackerdcs_ops import backup as backup_mod

MIN = 60_000
HOUR = 3_600_000


def client_for(influx: Influx, db: str) -> InfluxClient:
    return InfluxClient(url=influx.url, db=db)


def run_cq_now(client: InfluxClient, name: str, start_ms: int, stop_ms: int) -> None:
    """Run the SELECT INTO that InfluxDB stored for CQ ``name`` over [start, stop): what the CQ service does
    for each interval, made deterministic."""
    stored = {n: q for r in client.query("SHOW CONTINUOUS QUERIES", db=client.db) for s in r.get("series", [])
              if s["name"] == client.db for n, q in s.get("values", [])}  # fmt: skip
    select = re.search(r"BEGIN (.*) END$", stored[name]).group(1)
    head, group = select.split(" GROUP BY ")
    client.query(f"{head} WHERE time >= {start_ms}ms AND time < {stop_ms}ms GROUP BY {group}", write=True)


def seeded_points(start_ms: int, span_ms: int, seed: int = 14) -> tuple[list[str], list[tuple[str, int, dict]]]:
    """Irregular points (deadband-like) for two modules: line protocol and the same as Python values."""
    rng = random.Random(seed)
    lines, points = [], []
    for module in ("module_0", "module_1"):
        t = start_ms + rng.randrange(0, 5000)
        while t < start_ms + span_ms:
            values = {
                "lv_vmon": round(rng.uniform(10.0, 12.0), 4),
                "hv_imon": round(rng.uniform(0.0, 5e-6), 12),
                "state": rng.choice(["LV_ON", "HV_ON", "RAMP_UP"]),
            }
            lines.append(
                f"caen_module,module={module} lv_vmon={values['lv_vmon']},hv_imon={values['hv_imon']},"
                f'state="{values["state"]}" {t}'
            )
            points.append((module, t, values))
            t += rng.randrange(2000, 40_000)
    return lines, points


def bucketed(points, width_ms):
    out = defaultdict(list)
    for module, t, values in points:
        out[(module, t - t % width_ms)].append((t, values))
    return out


def test_first_start_creates_the_tiers_and_a_second_changes_nothing(influx):
    client = client_for(influx, "tiers_first")
    done = provision(client)
    assert done[0] == 'CREATE DATABASE "tiers_first"'
    state = read_state(client, "tiers_first")
    assert state.retentions["autogen"] == (30 * 86400, 86400, True)  # raw, default RP: Telegraf writes here
    assert state.retentions["minute"][:2] == (730 * 86400, 7 * 86400)
    assert state.retentions["hour"][0] == 0  # forever
    assert set(state.cqs) == {f"cq_{tier}_{m}" for tier in ("minute", "hour") for m in NUMERIC}
    assert provision(client) == []  # idempotent: what 1.6.7 stores reads back as what we asked for
    shorter = provision(client, TierConfig(raw_s=14 * 86400))
    assert shorter == ['ALTER RETENTION POLICY "autogen" ON "tiers_first" DURATION 14d REPLICATION 1 '
                       'SHARD DURATION 1d DEFAULT']  # fmt: skip
    # Grafana's tier variable: the selector answers by time range
    pick = 'SELECT last("rp") FROM "hour"."tier_select" WHERE "min_range_ms" < {r} AND "max_range_ms" >= {r}'
    chosen = {r: rows(client.query(pick.format(r=r)))[0]["last"] for r in (3600_000, 7 * 86400_000, 365 * 86400_000)}
    assert chosen == {3600_000: "autogen", 7 * 86400_000: "minute", 365 * 86400_000: "hour"}


def test_minute_and_hour_aggregates_match_a_reference(influx):
    client = client_for(influx, "tiers_ref")
    provision(client)
    start = (int(time.time() * 1000) - 3 * 86400_000) // HOUR * HOUR  # 3 days ago, on the hour
    lines, points = seeded_points(start, 2 * HOUR)
    client.write(lines)
    run_cq_now(client, "cq_minute_caen_module", start, start + 2 * HOUR)
    run_cq_now(client, "cq_hour_caen_module", start, start + 2 * HOUR)

    minute = {
        (r["module"], r["time"]): r for r in rows(client.query('SELECT * FROM "minute"."caen_module" GROUP BY *'))
    }
    ref_min = bucketed(points, MIN)
    assert set(minute) == set(ref_min)
    for key, pts in ref_min.items():
        got = minute[key]
        for f in ("lv_vmon", "hv_imon"):
            vals = [v[f] for _, v in pts]
            assert got[f] == pytest.approx(statistics.fmean(vals), rel=1e-12)
            assert (got[f + "_min"], got[f + "_max"]) == (min(vals), max(vals))
        assert got["state"] == max(pts, key=lambda p: p[0])[1]["state"]

    hour = {(r["module"], r["time"]): r for r in rows(client.query('SELECT * FROM "hour"."caen_module" GROUP BY *'))}
    assert set(hour) == {(m, h) for m in ("module_0", "module_1") for h in (start, start + HOUR)}
    for (module, h), got in hour.items():
        minutes = [(t, pts) for (mod, t), pts in ref_min.items() if mod == module and h <= t < h + HOUR]
        for f in ("lv_vmon", "hv_imon"):
            means = [statistics.fmean(v[f] for _, v in pts) for _, pts in minutes]
            every = [v[f] for _, pts in minutes for _, v in pts]
            assert got[f] == pytest.approx(statistics.fmean(means), rel=1e-12)  # time-weighted: minute means
            assert (got[f + "_min"], got[f + "_max"]) == (min(every), max(every))
        assert got["state"] == max(((t, v) for _, pts in minutes for t, v in pts), key=lambda p: p[0])[1]["state"]


@pytest.fixture
def live_influx(tmp_path):
    """An InfluxDB of its own with the CQ service on (checks every second) and a 1 s retention check."""
    instance = Influx(
        tmp_path,
        extra_conf='[continuous_queries]\n  enabled = true\n  run-interval = "1s"\n'
        '[retention]\n  enabled = true\n  check-interval = "1s"\n',
    )
    instance.start()
    yield instance
    instance.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_points_age_out_of_raw_and_their_aggregates_stay(live_influx):
    client = client_for(live_influx, "trackerdcs")
    provision(client)
    old = (int(time.time() * 1000) - 10 * 86400_000) // HOUR * HOUR
    lines, points = seeded_points(old, HOUR)
    client.write(lines)
    run_cq_now(client, "cq_minute_caen_module", old, old + HOUR)
    run_cq_now(client, "cq_hour_caen_module", old, old + HOUR)
    fresh = int(time.time() * 1000) - 60_000
    client.write([f"caen_module,module=module_0 lv_vmon=11.0 {fresh}"])

    def count(rp, until=fresh + 1):  # the CQ service runs here too: it aggregates the fresh point as well
        found = rows(client.query(f'SELECT count("lv_vmon") FROM "{rp}"."caen_module" WHERE time < {until}ms'))
        return found[0]["count"] if found else 0

    minute_before, hour_before = count("minute", old + HOUR), count("hour", old + HOUR)
    assert count("autogen") == len(points) + 1
    assert minute_before > 0 and hour_before == 2
    # the operator shortens raw to 1 h (INFLUX_RAW_KEEP=1h) and the pod re-provisions
    assert provision(client, TierConfig(raw_s=3600))[0].startswith('ALTER RETENTION POLICY "autogen"')
    deadline = time.monotonic() + 30
    while count("autogen") != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert count("autogen") == 1  # the 10-day-old raw points are gone, the fresh one stays
    # the aggregates of that hour stay
    assert (count("minute", old + HOUR), count("hour", old + HOUR)) == (minute_before, hour_before)
    with pytest.raises(InfluxError, match="beyond retention"):
        client.write([f"caen_module,module=module_0 lv_vmon=1.0 {fresh - 2 * HOUR}"])


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_influxdbs_own_cq_service_fills_the_minute_tier(live_influx):
    """No hand-run SELECT: InfluxDB runs cq_minute_* at the next minute boundary (RESAMPLE FOR 10m)."""
    client = client_for(live_influx, "trackerdcs")
    provision(client)
    now = int(time.time() * 1000)
    first = now // MIN * MIN - 3 * MIN
    client.write([f"environment,sensor=room temperature={20 + i} {first + i * 30_000}" for i in range(6)])
    deadline = time.monotonic() + 100
    found = []
    while time.monotonic() < deadline:
        found = rows(client.query('SELECT * FROM "minute"."environment" WHERE time > 0'))
        if len(found) == 3:
            break
        time.sleep(1)
    assert [(r["time"], r["temperature"], r["temperature_min"], r["temperature_max"]) for r in found] == [
        (first, 20.5, 20, 21),
        (first + MIN, 22.5, 22, 23),
        (first + 2 * MIN, 24.5, 24, 25),
    ]


def test_export_of_a_known_window_returns_exactly_the_points_written(influx, tmp_path, monkeypatch):
    client = client_for(influx, "export_ref")
    provision(client)
    start = (int(time.time() * 1000) - 86400_000) // HOUR * HOUR
    lines, points = seeded_points(start, 8 * HOUR, seed=7)  # more than one 6 h query window
    client.write(lines)
    t0, t1 = start + 30 * MIN, start + 7 * HOUR
    inside = [(m, t, v) for m, t, v in points if t0 <= t < t1]
    want = {(t, f"module={m}", f, v[f]) for m, t, v in inside for f in ("lv_vmon", "hv_imon", "state")}

    got = export.iter_rows(client, export.selections_for(modules=["module_0", "module_1"]), t0 / 1000, t1 / 1000)
    rows_ = list(got)
    assert {(r.time_ms, r.tags, r.field, r.value if r.text is None else r.text) for r in rows_} == want
    assert len(rows_) == len(want)

    out = tmp_path / "out.parquet"
    err = io.StringIO()
    argv = ["--from", export._iso(t0), "--to", export._iso(t1), "--modules", "module_0,module_1", "-o", str(out)]
    monkeypatch.setenv("INFLUX_URL", influx.url)
    monkeypatch.setenv("INFLUX_DB", "export_ref")
    assert export.main(argv, stderr=err) == 0
    csv_out = io.StringIO()
    assert export.main([*argv[:6], "--format", "csv", "--quiet"], stdout=csv_out, stderr=io.StringIO()) == 0
    frame = export.export_frame(start=t0 / 1000, stop=t1 / 1000, modules=["module_0"])
    assert "export: " in err.getvalue() and f"{len(want):,} rows" in err.getvalue()  # the progress line
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.num_rows == len(want)
    assert csv_out.getvalue().count("\n") == len(want) + 1  # header
    wide = export.export_frame(t0 / 1000, t1 / 1000, modules=["module_0"], wide=True)
    assert set(wide.columns) == {"caen_module/module=module_0/lv_vmon", "caen_module/module=module_0/hv_imon"}
    assert len(wide) == len({t for m, t, _ in inside if m == "module_0"})
    assert set(frame["tags"]) == {"module=module_0"}
    assert len(frame) == len([w for w in want if w[1] == "module=module_0"])


def test_a_runs_archive_contains_its_window_even_when_mongodb_is_away(influx, tmp_path):
    from ph2acf_bridge.store import MongoStore, RunStore

    client = client_for(influx, "run_window")
    provision(client)
    now = int(time.time() * 1000)
    start, stop = now - 20 * MIN, now - 5 * MIN
    lines = []
    for i, t in enumerate(range(now - 30 * MIN, now, 15_000)):
        lines += [
            f'caen_module,module=module_0 lv_vmon={10 + i * 0.01},state="HV_ON" {t}',
            f'caen_module,module=module_9 lv_vmon={5 + i * 0.01},state="OFF" {t}',
            f"julabo bath_temp={-20 + i * 0.001} {t}",
            f"environment,sensor=box temperature=21.0,humidity=3.0 {t}",
            f'interlock state="ok",active_count=0i {t}',
        ]
    client.write(lines)
    found = conditions_file(["module_0"], start / 1000, stop / 1000, client=client, settle_s=0)
    assert found.meta["rows"] > 0 and found.data is not None

    class Down:
        def __call__(self):
            raise ConnectionError("MongoDB is away")

    mongo = MongoStore(Down(), "trackerdcs")
    store = RunStore(tmp_path / "archive", tmp_path / "spool", mongo)
    doc = {"uid": "u-1", "run": 1, "start_ts": start / 1000, "stop_ts": stop / 1000, "conditions_file": found.meta}
    assert store.save(doc, None, None, found.data) == "spooled"
    import mongomock
    import mongomock.gridfs
    import pyarrow.parquet as pq

    mongomock.gridfs.enable_gridfs_integration()
    shared = mongomock.MongoClient()
    mongo.replace_client_factory(lambda: shared)
    assert store.replay() == (1, None)
    stored = shared["trackerdcs"]["runs"].find_one({"_id": "u-1"})
    data = mongo.read_file(stored["conditions_file"]["gridfs_id"])
    assert data == (tmp_path / "archive" / "u-1" / "conditions.parquet").read_bytes()
    table = pq.read_table(io.BytesIO(data)).to_pylist()
    times = [r["time"].timestamp() * 1000 for r in table]
    assert min(times) >= start - 120_000 and max(times) <= stop  # its window (and 2 min before the start)
    assert {r["measurement"] for r in table} == {"caen_module", "julabo", "environment", "interlock"}
    assert {r["tags"] for r in table if r["measurement"] == "caen_module"} == {"module=module_0"}
    expected = sum(1 for t in range(now - 30 * MIN, now, 15_000) if start - 120_000 <= t <= stop)
    assert sum(1 for r in table if r["measurement"] == "julabo") == expected


def test_burnin_conditions_file_goes_to_gridfs_or_the_spool(tmp_path):
    import mongomock
    import mongomock.gridfs
    from burnin.store import BurninStore

    mongomock.gridfs.enable_gridfs_integration()
    shared = mongomock.MongoClient()
    up = {"ok": False}

    def factory():
        if not up["ok"]:
            raise ConnectionError("MongoDB is away")
        return shared

    store = BurninStore(tmp_path / "archive", tmp_path / "spool", factory)
    path = Path("b-1") / "conditions.parquet"
    assert store.save_file(path, b"PAR1...PAR1") == "spooled"
    assert (tmp_path / "archive" / path).read_bytes() == b"PAR1...PAR1"
    store._client = None
    up["ok"] = True
    assert store.replay() == 1 and store.spooled() == 0
    assert store.read_file(path) == b"PAR1...PAR1"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_backup_and_restore_keep_the_tiers_and_aggregates(tmp_path):
    data = tmp_path / "influx"
    data.mkdir()
    instance = Influx(data)
    instance.start()
    client = client_for(instance, "trackerdcs")
    try:
        provision(client)
        start = (int(time.time() * 1000) - 2 * 86400_000) // HOUR * HOUR
        lines, _ = seeded_points(start, HOUR)
        client.write(lines)
        run_cq_now(client, "cq_minute_caen_module", start, start + HOUR)
        run_cq_now(client, "cq_hour_caen_module", start, start + HOUR)
        snapshot = {rp: rows(client.query(f'SELECT * FROM "{rp}"."caen_module" GROUP BY *'))
                    for rp in ("autogen", "minute", "hour")}  # fmt: skip
        assert all(snapshot.values())
    finally:
        instance.stop()
    dest = tmp_path / "backups"
    target = backup_mod.Target("influxdb", data / "store")
    (data / "store").mkdir()
    for name in ("meta", "data", "wal"):
        (data / name).rename(data / "store" / name)
    folder = backup_mod.backup(dest, [target], keep=2, log=lambda m: None)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "influxdb" in manifest["components"]
    for child in (data / "store").iterdir():  # the disk is lost
        shutil.rmtree(child)
    backup_mod.restore(folder, [target], log=lambda m: None)
    for name in ("meta", "data", "wal"):
        (data / "store" / name).rename(data / name)
    again = Influx(data)
    again.start()
    try:
        client = client_for(again, "trackerdcs")
        assert provision(client) == []  # RPs and CQs came back as they were
        restored = {rp: rows(client.query(f'SELECT * FROM "{rp}"."caen_module" GROUP BY *'))
                    for rp in ("autogen", "minute", "hour")}  # fmt: skip
        assert restored == snapshot
        assert {cq.name for cq in continuous_queries("trackerdcs")} == set(read_state(client, "trackerdcs").cqs)
    finally:
        again.stop()


def test_dashboards_read_the_tier_their_time_range_picks_and_find_data_there(influx):
    """Every panel query of the generated dashboards, on the tier the ``tier`` variable picks for one hour,
    one week and one year, against Telegraf-shaped data that the CQs aggregated."""
    from gateway_payloads import contract_messages
    from gateway_telegraf import default_env, load, translate
    from test_grafana import GRAFANA, dashboard_queries

    client = client_for(influx, "tiers_dash")
    provision(client)
    conf = load(env=default_env())
    end = time.time() - 5
    client.write([lp for topic, payload in contract_messages(end) for lp in translate(conf, topic, payload, end)])
    now = int(time.time() * 1000)
    for cq in continuous_queries("tiers_dash"):
        run_cq_now(client, cq.name, now // HOUR * HOUR - HOUR, now + MIN)
    variable = json.loads((GRAFANA / "dashboards" / "caen.json").read_text())["templating"]["list"][0]
    assert variable["name"] == "tier" and variable["refresh"] == 2  # re-picked whenever the time range changes
    for range_ms, rp in ((HOUR, "autogen"), (7 * 86400_000, "minute"), (365 * 86400_000, "hour")):
        picked = rows(client.query(variable["query"].replace("$__range_ms", str(range_ms))))[0]["last"]
        assert picked == rp
        tiered = [(w, q) for w, q in dashboard_queries() if "$tier" in q]
        assert len(tiered) >= 15
        for where, query in tiered:
            q = (query.replace("$tier", picked).replace("$timeFilter", f"time > now() - {range_ms}ms")
                 .replace("$__interval", "1h" if rp == "hour" else "1m"))  # fmt: skip
            series = [s for r in client.query(q) for s in r.get("series", [])]
            assert series and any(s["values"] for s in series), f"{where} on {rp}: no data for {q}"
