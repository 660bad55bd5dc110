"""Retention tiers of the time series archive: raw points for weeks, per-minute and per-hour aggregates for years.

InfluxDB 1.x retention policies (RPs) and continuous queries (CQs), provisioned idempotently at every start of
the pod (``python -m trackerdcs.influxtiers serve`` in the ``influx-tiers`` container; no manual step):

========  =============================  ======================  ==============================================
tier      retention policy               kept (default)          content
========  =============================  ======================  ==============================================
raw       ``autogen`` (the default RP,   30 days                 every point Telegraf writes
          Telegraf writes here)          (``INFLUX_RAW_KEEP``)
1m        ``minute``                     730 days                per minute and series: ``x`` = mean, ``x_min``,
                                         (``INFLUX_MINUTE_KEEP``)  ``x_max`` of each numeric field; ``f`` = last
                                                                 value of each state/flag field
1h        ``hour``                       forever                 the same per hour, computed from the minute tier
                                         (``INFLUX_HOUR_KEEP``)   (mean of minute means, min of mins, max of maxes)
========  =============================  ======================  ==============================================

Because the mean keeps the field's own name, a dashboard query reads the same on every tier; only the RP in
``FROM "<rp>"."<measurement>"`` changes. Grafana picks it with the ``tier`` variable, a query of the small
``tier_select`` measurement written here (see :data:`TIER_BY_RANGE`).

One CQ per tier and measurement (``cq_minute_<measurement>``, ``cq_hour_<measurement>``), with RESAMPLE so a
late point (Telegraf's buffer after an outage) is folded in: the minute CQ runs every minute over the last
10 minutes, the hour CQ every hour over the last 3 hours. The logic that decides what to create, change or
leave is pure (:func:`plan`); :func:`provision` is the thin adapter that reads the current state over HTTP.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .influxql import InfluxClient, InfluxError, quote_ident

log = logging.getLogger(__name__)

DAY = 86_400
PROBE_MAX_AGE_S = 60.0


@dataclass(frozen=True)
class Retention:
    """One retention policy: name, how long (seconds; 0 = forever) and its shard group duration (seconds)."""

    name: str
    duration_s: int
    shard_s: int


@dataclass(frozen=True)
class TierConfig:
    """What the tiers keep; durations in seconds, 0 = forever."""

    raw_s: int = 30 * DAY
    minute_s: int = 730 * DAY
    hour_s: int = 0
    raw_rp: str = "autogen"
    minute_rp: str = "minute"
    hour_rp: str = "hour"

    def retentions(self) -> list[Retention]:
        """The three RPs with shard durations InfluxDB would pick for such lengths, longer for the forever tier."""
        return [
            Retention(self.raw_rp, self.raw_s, shard_for(self.raw_s)),
            Retention(self.minute_rp, self.minute_s, shard_for(self.minute_s)),
            Retention(self.hour_rp, self.hour_s, shard_for(self.hour_s) if self.hour_s else 30 * DAY),
        ]


def shard_for(duration_s: int) -> int:
    """InfluxDB's own shard group rule: under 2 days 1 h, up to 6 months 1 day, longer (or forever) 7 days."""
    if 0 < duration_s < 2 * DAY:
        return 3600
    if 0 < duration_s <= 182 * DAY:
        return DAY
    return 7 * DAY


# Measurements telegraf.conf writes and what each tier keeps of them: numeric fields get mean (same name),
# min (``_min``) and max (``_max``); state fields (strings, flags) their last value in the bucket.
# tests/gateway/test_influx_tiers.py checks this table covers every numeric field telegraf.conf declares.
NUMERIC: dict[str, tuple[str, ...]] = {
    "caen_system": ("modules_total", "modules_hv_on", "modules_tripped"),
    "caen_module": ("lv_vmon", "lv_imon", "hv_vmon", "hv_imon"),
    "caen_channel": ("vmon", "imon", "v0set", "i0set", "status", "slot", "ch"),
    "julabo": (
        "bath_temp",
        "external_temp",
        "heating_power",
        "setpoint",
        "setpoint_1",
        "setpoint_2",
        "setpoint_3",
        "active_setpoint",
        "pump_stage",
        "status_code",
    ),
    "ph2acf": ("run", "progress", "spooled"),
    "environment": ("temperature", "humidity"),
    "interlock": ("active_count", "conditions_count"),
    "dcs_health": (
        "uptime_s",
        "cpu_percent",
        "rss_mb",
        "mqtt_reconnects",
        "commands_ok",
        "commands_failed",
        "msgs_in_per_s",
        "msgs_out_per_s",
    ),
}
LAST: dict[str, tuple[str, ...]] = {
    "caen_system": ("state", "connected"),
    "caen_module": ("state",),
    "caen_channel": ("state", "on"),
    "julabo": ("state", "connected", "control_sensor", "status_text", "remote"),
    "ph2acf": ("state", "calibration", "mode", "mongo_ok"),
    "interlock": ("state",),
}
# Not aggregated (kept raw only): dcs_event (discrete events; a run's or burn-in's conditions file keeps its own),
# dcs_availability (online/offline strings).

# Which tier a Grafana panel reads, by the length of its time range (ms): raw up to a day, minutes up to a
# month, hours beyond. A one-year panel therefore reads ~8,760 hourly points per series, never raw points.
TIER_BY_RANGE: tuple[tuple[str, int, int], ...] = (
    ("raw", 0, DAY * 1000),
    ("1m", DAY * 1000, 31 * DAY * 1000),
    ("1h", 31 * DAY * 1000, 2**62),
)
SELECTOR_MEASUREMENT = "tier_select"


def rp_of(tier: str, config: TierConfig | None = None) -> str:
    """The retention policy of tier ``raw``, ``1m`` or ``1h`` (also accepts the RP names themselves)."""
    config = config or TierConfig()
    names = {"raw": config.raw_rp, "1m": config.minute_rp, "1h": config.hour_rp}
    if tier in names:
        return names[tier]
    if tier in names.values():
        return tier
    raise ValueError(f"unknown tier {tier!r}: raw, 1m or 1h")


# ---------------------------------------------------------------------------------------------- durations
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)")
_UNITS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_go_duration(text: str) -> int:
    """Seconds of a duration as InfluxDB shows it (``720h0m0s``; ``0s`` = forever)."""
    total = 0.0
    for number, unit in _GO_DURATION.findall(text):
        total += float(number) * _UNITS[unit]
    return round(total)


def parse_keep(text: str) -> int:
    """Seconds of an operator-given duration: ``30d``, ``2w``, ``12h``, ``90m``, ``inf``/``forever``/``0``."""
    text = text.strip().lower()
    if text in ("inf", "forever", "0", ""):
        return 0
    match = re.fullmatch(r"(\d+)\s*([wdhm])", text)
    if not match:
        raise ValueError(f"duration {text!r}: expected e.g. 30d, 2w, 12h, or inf")
    value, unit = int(match.group(1)), match.group(2)
    seconds = value * {"w": 7 * DAY, "d": DAY, "h": 3600, "m": 60}[unit]
    if seconds < 3600:
        raise ValueError(f"duration {text!r}: InfluxDB keeps data at least 1h")
    return seconds


def influx_duration(seconds: int) -> str:
    """InfluxQL duration literal (``INF`` for 0)."""
    if seconds == 0:
        return "INF"
    if seconds % DAY == 0:
        return f"{seconds // DAY}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds}s"


def config_from_env(env: Mapping[str, str] | None = None) -> TierConfig:
    """``INFLUX_RAW_KEEP`` (default 30d), ``INFLUX_MINUTE_KEEP`` (730d), ``INFLUX_HOUR_KEEP`` (inf)."""
    env = os.environ if env is None else env
    return TierConfig(
        raw_s=parse_keep(env.get("INFLUX_RAW_KEEP", "30d")),
        minute_s=parse_keep(env.get("INFLUX_MINUTE_KEEP", "730d")),
        hour_s=parse_keep(env.get("INFLUX_HOUR_KEEP", "inf")),
    )


# ---------------------------------------------------------------------------------------------- CQ text
def aggregate_select(
    measurement: str, db: str, source_rp: str, target_rp: str, every: str, from_tier: bool = False
) -> str:
    """The SELECT ... INTO that builds one tier of ``measurement`` (no time bounds: a CQ adds them).

    ``from_tier``: the source is itself a tier (``x``, ``x_min``, ``x_max``), as for the hour tier."""
    parts = []
    for f in NUMERIC.get(measurement, ()):
        q = quote_ident(f)
        if from_tier:
            parts += [
                f"mean({q}) AS {q}",
                f"min({quote_ident(f + '_min')}) AS {quote_ident(f + '_min')}",
                f"max({quote_ident(f + '_max')}) AS {quote_ident(f + '_max')}",
            ]
        else:
            lo, hi = quote_ident(f + "_min"), quote_ident(f + "_max")
            parts += [f"mean({q}) AS {q}", f"min({q}) AS {lo}", f"max({q}) AS {hi}"]
    for f in LAST.get(measurement, ()):
        q = quote_ident(f)
        parts.append(f"last({q}) AS {q}")
    into = f"{quote_ident(db)}.{quote_ident(target_rp)}.{quote_ident(measurement)}"
    source = f"{quote_ident(db)}.{quote_ident(source_rp)}.{quote_ident(measurement)}"
    return f"SELECT {', '.join(parts)} INTO {into} FROM {source} GROUP BY time({every}), *"


@dataclass(frozen=True)
class ContinuousQuery:
    """One CQ: its name and its full CREATE statement."""

    name: str
    statement: str


def continuous_queries(db: str, config: TierConfig | None = None) -> list[ContinuousQuery]:
    """Every CQ the tiers need: per measurement, one into the minute tier (from raw), one into the hour tier
    (from the minute tier)."""
    config = config or TierConfig()
    out = []
    for measurement in NUMERIC:
        for name, every, window, source, target, from_tier in (
            ("minute", "1m", "10m", config.raw_rp, config.minute_rp, False),
            ("hour", "1h", "3h", config.minute_rp, config.hour_rp, True),
        ):
            cq = f"cq_{name}_{measurement}"
            select = aggregate_select(measurement, db, source, target, every, from_tier)
            statement = (
                f"CREATE CONTINUOUS QUERY {quote_ident(cq)} ON {quote_ident(db)} "
                f"RESAMPLE EVERY {every} FOR {window} BEGIN {select} END"
            )
            out.append(ContinuousQuery(cq, statement))
    return out


def canonical(statement: str) -> str:
    """A CQ statement with quoting, case and spacing removed, to compare ours with what SHOW returns."""
    text = statement.replace('"', "").lower()
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s*([(),])\s*", r"\1", text)


# ---------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class CurrentState:
    """What the database has: RPs (name -> (duration s, shard duration s, default)) and CQs (name -> text)."""

    database_exists: bool
    retentions: dict[str, tuple[int, int, bool]]
    cqs: dict[str, str]


def plan(db: str, state: CurrentState, config: TierConfig) -> list[str]:
    """The InfluxQL statements that bring ``state`` to ``config`` (empty when nothing is to be done)."""
    todo: list[str] = []
    if not state.database_exists:
        todo.append(f"CREATE DATABASE {quote_ident(db)}")
    for rp in config.retentions():
        default = rp.name == config.raw_rp
        want = (rp.duration_s, rp.shard_s, default)
        have = state.retentions.get(rp.name)
        clause = f"DURATION {influx_duration(rp.duration_s)} REPLICATION 1 SHARD DURATION {influx_duration(rp.shard_s)}"
        if have is None:
            todo.append(
                f"CREATE RETENTION POLICY {quote_ident(rp.name)} ON {quote_ident(db)} {clause}"
                + (" DEFAULT" if default else "")
            )
        elif have != want:
            todo.append(
                f"ALTER RETENTION POLICY {quote_ident(rp.name)} ON {quote_ident(db)} {clause}"
                + (" DEFAULT" if default else "")
            )
    wanted = {cq.name: cq for cq in continuous_queries(db, config)}
    for name, cq in wanted.items():
        have_text = state.cqs.get(name)
        if have_text is not None and canonical(have_text) == canonical(cq.statement):
            continue
        if have_text is not None:
            todo.append(f"DROP CONTINUOUS QUERY {quote_ident(name)} ON {quote_ident(db)}")
        todo.append(cq.statement)
    for name in state.cqs:  # ours from an older layout (e.g. a measurement no longer aggregated)
        if (name.startswith("cq_minute_") or name.startswith("cq_hour_")) and name not in wanted:
            todo.append(f"DROP CONTINUOUS QUERY {quote_ident(name)} ON {quote_ident(db)}")
    return todo


def selector_lines(config: TierConfig, ts_ms: int) -> list[str]:
    """Line protocol of the ``tier_select`` points Grafana's ``tier`` variable reads."""
    return [
        f'{SELECTOR_MEASUREMENT},tier={tier} rp="{rp_of(tier, config)}",min_range_ms={lo}i,max_range_ms={hi}i {ts_ms}'
        for tier, lo, hi in TIER_BY_RANGE
    ]


# ---------------------------------------------------------------------------------------------- adapter
def read_state(client: InfluxClient, db: str) -> CurrentState:
    """The RPs and CQs ``db`` has now."""
    answer = client.query("SHOW DATABASES", db="")
    dbs = [v[0] for r in answer for s in r.get("series", []) for v in s.get("values", [])]
    if db not in dbs:
        return CurrentState(False, {}, {})
    retentions = {}
    for r in client.query(f"SHOW RETENTION POLICIES ON {quote_ident(db)}", db=db):
        for s in r.get("series", []):
            cols = s["columns"]
            for v in s.get("values", []):
                row = dict(zip(cols, v, strict=False))
                retentions[row["name"]] = (
                    parse_go_duration(row["duration"]),
                    parse_go_duration(row.get("shardGroupDuration", "0s")),
                    bool(row.get("default")),
                )
    cqs = {}
    for r in client.query("SHOW CONTINUOUS QUERIES", db=db):
        for s in r.get("series", []):
            if s.get("name") != db:
                continue
            for name, query in s.get("values", []):
                cqs[name] = query
    return CurrentState(True, retentions, cqs)


def provision(client: InfluxClient, config: TierConfig | None = None, now_ms: int | None = None) -> list[str]:
    """Bring the database to the tiers of ``config``; returns the statements run (empty: already so).
    The ``tier_select`` points are (re)written every time."""
    config = config or TierConfig()
    db = client.db
    state = read_state(client, db)
    created = []
    if not state.database_exists:  # CREATE DATABASE makes its own default RP: plan against what it made
        created = [f"CREATE DATABASE {quote_ident(db)}"]
        client.query(created[0], db="", write=True)
        state = read_state(client, db)
    statements = plan(db, state, config)
    for statement in statements:
        log.info("influx-tiers: %s", statement)
        client.query(statement, db=db, write=True)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    client.write(selector_lines(config, now_ms - now_ms % (DAY * 1000)), rp=config.hour_rp)
    return created + statements


def wait_ready(client: InfluxClient, timeout: float, alive: Path | None = None) -> None:
    """Wait until InfluxDB answers and the credentials work (touching ``alive`` meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive.touch()
        try:
            client.query("SHOW DATABASES", db="")
            return
        except InfluxError as exc:
            if time.monotonic() > deadline:
                raise
            log.info("influx-tiers: waiting for InfluxDB (%s)", exc)
            time.sleep(2)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trackerdcs.influxtiers [once|serve|show|probe]``: provision the tiers (``serve``: then
    re-check every ``--every`` seconds, for a pod container whose restart policy is Always; ``probe``: the
    container's liveness, true while ``serve`` keeps its state file fresh)."""
    parser = argparse.ArgumentParser(prog="influx-tiers", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", nargs="?", default="once", choices=("once", "serve", "show", "probe"))
    parser.add_argument("--state-file", default=os.environ.get("INFLUX_TIERS_STATE", "/tmp/influx-tiers.alive"))
    parser.add_argument("--every", type=float, default=3600.0, help="serve: seconds between re-checks")
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for InfluxDB at start")
    ns = parser.parse_args(argv)
    alive = Path(ns.state_file)
    if ns.action == "probe":
        try:
            return 0 if time.time() - alive.stat().st_mtime < PROBE_MAX_AGE_S else 1
        except OSError:
            return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    client = InfluxClient.from_env()
    try:
        config = config_from_env()
        if ns.action == "show":
            state = read_state(client, client.db)
            for name, (dur, shard, default) in state.retentions.items():
                mark = " (default)" if default else ""
                print(f"rp {name}: keep {influx_duration(dur)}, shards {influx_duration(shard)}{mark}")
            for name in sorted(state.cqs):
                print(f"cq {name}")
            pending = plan(client.db, state, config)
            print(f"{len(pending)} statement(s) pending" if pending else "tiers as configured")
            return 0
        if ns.action == "serve":
            alive.touch()
        wait_ready(client, ns.wait, alive if ns.action == "serve" else None)
        while True:
            done = provision(client, config)
            log.info("influx-tiers: %s", f"{len(done)} statement(s) run" if done else "tiers already as configured")
            if ns.action != "serve":
                return 0
            until = time.monotonic() + ns.every
            while time.monotonic() < until:
                alive.touch()
                time.sleep(min(10.0, max(0.0, until - time.monotonic())))
    except (InfluxError, ValueError) as exc:
        print(f"influx-tiers: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
