"""Conditions with every result: the time series a calibration run or a burn-in was taken in, as a Parquet file.

When a run or a burn-in ends, its service calls :func:`conditions_file`: the full raw series of the channels that
matter to it over its time window go into ``conditions.parquet`` next to the run's document (archive folder,
then GridFS like the rest, spooled while MongoDB is away). The result keeps its conditions after the raw points
have aged out of InfluxDB (30 days by default, :mod:`trackerdcs.influxtiers`).

Two parts:

* :func:`selections_for_run` (pure): which series belong to a run — its modules' LV/HV readbacks and states
  (``caen_module`` and every ``caen_channel`` tagged with one of its modules; all modules if none are named),
  the chiller (``julabo``), the environment sensors (``environment``), the interlock (``interlock``) and the
  events of every service (``dcs_event``); and :func:`window` (pure): the time span, from ``before_s`` ahead of
  the start (so the last heartbeat before the start is in it) to the stop.
* :func:`conditions_file`: the InfluxQL part, through :mod:`trackerdcs.export` (chunked queries, long rows).

The file has the export's columns (``time, measurement, tags, field, value, text``). Where InfluxDB is comes
from ``INFLUX_URL`` etc.; without ``INFLUX_URL`` in the environment no file is made (the document says why).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .export import Selection, iter_rows, parquet_bytes
from .influxql import InfluxClient, InfluxError

log = logging.getLogger(__name__)

BEFORE_S = 120.0  # longer than the services' heartbeat (30 s): the state at the start is in the file
SETTLE_S = 3.0  # Telegraf flushes every 2 s: wait that long after the stop before reading


def selections_for_run(modules: Sequence[str]) -> list[Selection]:
    """The series of a run on ``modules`` (empty: the whole stand)."""
    mods = tuple(modules)
    caen = (
        [Selection("caen_module", (("module", mods),)), Selection("caen_channel", (("module", mods),))]
        if mods
        else [Selection("caen_module"), Selection("caen_channel")]
    )
    return [*caen, Selection("julabo"), Selection("environment"), Selection("interlock"), Selection("dcs_event")]


def window(start_ts: float, stop_ts: float, before_s: float = BEFORE_S) -> tuple[float, float]:
    """``[start - before_s, stop]`` in epoch seconds, the stop inclusive (+1 ms)."""
    if stop_ts < start_ts:
        raise ValueError("a run cannot stop before it starts")
    return start_ts - before_s, stop_ts + 0.001


@dataclass
class Conditions:
    """The conditions file of one run, or why there is none."""

    data: bytes | None
    meta: dict[str, Any]


def conditions_file(
    modules: Sequence[str],
    start_ts: float,
    stop_ts: float,
    *,
    client: InfluxClient | None = None,
    env: Mapping[str, str] | None = None,
    settle_s: float | None = None,
) -> Conditions:
    """Export the run's window to Parquet bytes. Never raises: an unreachable InfluxDB gives ``data=None`` and
    the reason in ``meta["error"]`` (the run is stored regardless)."""
    env = os.environ if env is None else env
    t0, t1 = window(start_ts, stop_ts)
    meta: dict[str, Any] = {"format": "parquet", "from_ts": t0, "to_ts": t1, "tier": "raw", "modules": list(modules)}
    if client is None:
        if not env.get("INFLUX_URL"):
            meta["error"] = "INFLUX_URL not set: no conditions file"
            return Conditions(None, meta)
        client = InfluxClient.from_env(env)
    settle = float(env.get("INFLUX_CONDITIONS_SETTLE_S", SETTLE_S)) if settle_s is None else settle_s
    wait = stop_ts + settle - time.time()
    if wait > 0:
        time.sleep(min(wait, settle))
    selections = selections_for_run(modules)
    meta["series"] = [s.measurement + (f" {s.where()}" if s.tags else "") for s in selections]
    try:
        data, rows = parquet_bytes(iter_rows(client, selections, t0, t1, "raw"))
    except (InfluxError, OSError, ValueError) as exc:
        log.warning("conditions of %s..%s not exported: %s", start_ts, stop_ts, exc)
        meta["error"] = str(exc)
        return Conditions(None, meta)
    meta.update(rows=rows, bytes=len(data))
    return Conditions(data, meta)
