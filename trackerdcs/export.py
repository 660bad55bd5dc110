"""``dcs export``: time series out of InfluxDB for analysis, as CSV or Parquet, streamed.

What to export is a list of :class:`Selection` (a measurement, optional tag filters, optional fields); the
helpers :func:`selections_for` turn ``--modules``/``--channels``/``--measurements`` into that list. The time range
is cut into windows (6 h of raw points, 7 days of the minute tier, a year of the hour tier) and each window is
queried with InfluxDB's chunked answers, so neither InfluxDB nor this process ever holds the whole export:
memory stays at one chunk plus one output batch, whatever the range.

Rows are "long": one row per point and field, with a fixed set of columns whatever was selected::

    time (UTC, ms)  measurement  tags ("k=v,k=v", sorted)  field  value (float, numbers and flags 1/0)  text (strings)

which is what a streamed Parquet file (one schema up front) and a CSV need; :func:`export_frame` returns it as a
pandas DataFrame (``wide=True`` pivots to one column per ``measurement/tags/field``).

Where InfluxDB is: ``INFLUX_URL``, ``INFLUX_DB``, ``INFLUX_USER``, ``INFLUX_PASSWORD`` (see :mod:`trackerdcs.influxql`).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .influxql import InfluxClient, InfluxError, quote_ident, quote_str
from .influxtiers import NUMERIC, TierConfig, rp_of

COLUMNS = ("time", "measurement", "tags", "field", "value", "text")
WINDOW_S = {"raw": 6 * 3600, "1m": 7 * 86_400, "1h": 366 * 86_400}
BATCH_ROWS = 50_000


@dataclass(frozen=True)
class Selection:
    """One measurement to export, restricted to tag values (OR within a tag, AND across tags) and fields."""

    measurement: str
    tags: tuple[tuple[str, tuple[str, ...]], ...] = ()
    fields: tuple[str, ...] = ()

    def where(self) -> str:
        """The tag part of the WHERE clause (empty if unrestricted)."""
        parts = []
        for key, values in self.tags:
            alts = " OR ".join(f"{quote_ident(key)} = {quote_str(v)}" for v in values)
            parts.append(f"({alts})")
        return " AND ".join(parts)


@dataclass(frozen=True)
class Row:
    """One exported value."""

    time_ms: int
    measurement: str
    tags: str
    field: str
    value: float | None
    text: str | None


def selections_for(
    modules: Sequence[str] = (), channels: Sequence[str] = (), measurements: Sequence[str] = ()
) -> list[Selection]:
    """Selections for CAEN ``modules`` (their module summary and every channel tagged with the module),
    CAEN ``channels`` (by channel name) and whole ``measurements``. Nothing given: every archived measurement."""
    out: list[Selection] = []
    if modules:
        mods = tuple(modules)
        out.append(Selection("caen_module", (("module", mods),)))
        out.append(Selection("caen_channel", (("module", mods),)))
    if channels:
        out.append(Selection("caen_channel", (("channel", tuple(channels)),)))
    out += [Selection(m) for m in measurements]
    if not out:
        out = [Selection(m) for m in NUMERIC]
    return out


def field_list(selection: Selection, tier: str) -> str:
    """The SELECT's field list: the chosen fields (and on a tier their ``_min``/``_max``), else ``*``."""
    if not selection.fields:
        return "*"
    names: list[str] = []
    for f in selection.fields:
        names.append(f)
        if tier != "raw" and f in NUMERIC.get(selection.measurement, ()):
            names += [f + "_min", f + "_max"]
    return ", ".join(quote_ident(n) for n in names)


def window_queries(
    selection: Selection, start_ms: int, stop_ms: int, tier: str, config: TierConfig | None = None
) -> Iterator[str]:
    """One InfluxQL SELECT per time window of ``[start_ms, stop_ms)``."""
    rp = rp_of(tier, config)
    step = WINDOW_S[tier] * 1000
    where = selection.where()
    t = start_ms
    while t < stop_ms:
        end = min(t + step, stop_ms)
        cond = f"time >= {t}ms AND time < {end}ms" + (f" AND {where}" if where else "")
        yield (
            f"SELECT {field_list(selection, tier)} FROM {quote_ident(rp)}.{quote_ident(selection.measurement)} "
            f"WHERE {cond} GROUP BY *"
        )
        t = end


def series_rows(series: dict[str, Any]) -> Iterator[Row]:
    """The rows of one series chunk of an InfluxDB answer (pure)."""
    tags = series.get("tags") or {}
    tag_text = ",".join(f"{k}={v}" for k, v in sorted(tags.items()) if v != "")
    columns = series["columns"]
    measurement = series.get("name", "")
    for values in series.get("values", []):
        ts = int(values[0])
        for name, v in zip(columns[1:], values[1:], strict=False):
            if v is None:
                continue
            if isinstance(v, bool):
                yield Row(ts, measurement, tag_text, name, 1.0 if v else 0.0, None)
            elif isinstance(v, int | float):
                yield Row(ts, measurement, tag_text, name, float(v), None)
            else:
                yield Row(ts, measurement, tag_text, name, None, str(v))


@dataclass
class Progress:
    """The progress line on stderr: windows done, rows, elapsed time."""

    total_windows: int
    out: IO[str] | None = None
    windows: int = 0
    rows: int = 0
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def update(self, rows: int = 0, windows: int = 0, final: bool = False) -> None:
        self.rows += rows
        self.windows += windows
        now = time.monotonic()
        if self.out is None or (not final and now - self._last < 0.5):
            return
        self._last = now
        elapsed = now - self.started
        end = "\n" if final else ""
        self.out.write(
            f"\rexport: {self.windows}/{self.total_windows} windows, {self.rows:,} rows, {elapsed:.1f} s{end}"
        )
        self.out.flush()


def iter_rows(
    client: InfluxClient,
    selections: Sequence[Selection],
    start: float,
    stop: float,
    tier: str = "raw",
    *,
    progress: Progress | None = None,
    chunk_size: int = 10_000,
    config: TierConfig | None = None,
) -> Iterator[Row]:
    """Every exported value of ``selections`` in ``[start, stop)`` (epoch seconds), window after window."""
    start_ms, stop_ms = round(start * 1000), round(stop * 1000)  # ms, without float truncation
    for selection in selections:
        for q in window_queries(selection, start_ms, stop_ms, tier, config):
            count = 0
            for series in client.stream(q, chunk_size=chunk_size):
                for row in series_rows(series):
                    count += 1
                    yield row
                if progress is not None:
                    progress.update(rows=count)
                    count = 0
            if progress is not None:
                progress.update(rows=count, windows=1)


def count_windows(selections: Sequence[Selection], start: float, stop: float, tier: str) -> int:
    step = WINDOW_S[tier]
    per = max(1, -(-int(stop - start) // step))
    return per * len(selections)


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_csv(rows: Iterable[Row], out: IO[str]) -> int:
    """CSV with a header line; returns the number of rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for r in rows:
        writer.writerow((_iso(r.time_ms), r.measurement, r.tags, r.field, "" if r.value is None else repr(r.value),
                         "" if r.text is None else r.text))  # fmt: skip
        n += 1
    return n


def arrow_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("time", pa.timestamp("ms", tz="UTC")),
            ("measurement", pa.string()),
            ("tags", pa.string()),
            ("field", pa.string()),
            ("value", pa.float64()),
            ("text", pa.string()),
        ]
    )


def _table(batch: list[Row]) -> Any:
    import pyarrow as pa

    return pa.table(
        [
            pa.array([r.time_ms for r in batch], pa.timestamp("ms", tz="UTC")),
            pa.array([r.measurement for r in batch], pa.string()),
            pa.array([r.tags for r in batch], pa.string()),
            pa.array([r.field for r in batch], pa.string()),
            pa.array([r.value for r in batch], pa.float64()),
            pa.array([r.text for r in batch], pa.string()),
        ],
        schema=arrow_schema(),
    )


def write_parquet(rows: Iterable[Row], out: str | Path | IO[bytes], batch_rows: int = BATCH_ROWS) -> int:
    """Parquet (zstd), one row group per ``batch_rows`` rows; returns the number of rows."""
    import pyarrow.parquet as pq

    n = 0
    with pq.ParquetWriter(out, arrow_schema(), compression="zstd") as writer:
        for batch in _batches(rows, batch_rows):
            writer.write_table(_table(batch))
            n += len(batch)
    return n


def parquet_bytes(rows: Iterable[Row]) -> tuple[bytes, int]:
    """``rows`` as Parquet file bytes, and the row count (an empty export still has the schema)."""
    buffer = io.BytesIO()
    n = write_parquet(rows, buffer)
    return buffer.getvalue(), n


def export_frame(
    start: float | dt.datetime | str,
    stop: float | dt.datetime | str | None = None,
    *,
    client: InfluxClient | None = None,
    modules: Sequence[str] = (),
    channels: Sequence[str] = (),
    measurements: Sequence[str] = (),
    tier: str = "raw",
    wide: bool = False,
) -> Any:
    """The export as a pandas DataFrame (long form, :data:`COLUMNS`; ``wide``: one column per series and field,
    indexed by time). ``start``/``stop`` as :func:`parse_time` takes them (``stop`` default now); ``client``
    defaults to :meth:`InfluxClient.from_env`. Needs pandas (extra ``analysis``)."""
    import pandas as pd

    client = client or InfluxClient.from_env()
    t0, t1 = parse_time(start), parse_time(stop) if stop is not None else time.time()
    selections = selections_for(modules, channels, measurements)
    tables = [_table(b) for b in _batches(iter_rows(client, selections, t0, t1, tier), BATCH_ROWS)]
    if tables:
        import pyarrow as pa

        frame = pa.concat_tables(tables).to_pandas()
    else:
        frame = pd.DataFrame({c: pd.Series(dtype="float64" if c == "value" else "object") for c in COLUMNS})
        frame["time"] = pd.to_datetime(frame["time"], utc=True)
    if not wide:
        return frame
    frame["column"] = frame["measurement"] + "/" + frame["tags"] + "/" + frame["field"]
    numeric = frame[frame["value"].notna()]
    return numeric.pivot_table(index="time", columns="column", values="value", aggfunc="last")


# ---------------------------------------------------------------------------------------------- times
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")


def parse_time(text: float | int | dt.datetime | str, now: float | None = None) -> float:
    """Epoch seconds of ``text``: a number, a datetime, an ISO time (UTC if no zone), ``now``, or a duration
    before now (``30m``, ``2h``, ``7d``, ``1w``)."""
    now = time.time() if now is None else now
    if isinstance(text, int | float):
        return float(text)
    if isinstance(text, dt.datetime):
        return (text if text.tzinfo else text.replace(tzinfo=dt.UTC)).timestamp()
    text = text.strip()
    if text == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {text!r}: expected ISO time (UTC), 'now' or a duration like 2h, 7d") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


# ---------------------------------------------------------------------------------------------- CLI
def _split(items: Sequence[str]) -> list[str]:
    return [x.strip() for item in items for x in item.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """``dcs export --from T --to T [--modules M,..] [--channels C,..] [--measurements X,..] [--tier raw|1m|1h]
    [--format csv|parquet] [-o FILE]``."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = argparse.ArgumentParser(prog="dcs export", description="Export time series for analysis (streamed).")
    parser.add_argument("--from", dest="start", required=True, help="ISO time (UTC), or a duration before now: 2h, 7d")
    parser.add_argument("--to", dest="stop", default="now", help="ISO time (UTC), 'now' (default) or a duration")
    parser.add_argument("--modules", action="append", default=[], help="CAEN modules (comma-separated)")
    parser.add_argument("--channels", action="append", default=[], help="CAEN channels (comma-separated)")
    parser.add_argument("--measurements", action="append", default=[], help="whole measurements: julabo, environment")
    parser.add_argument("--tier", choices=("raw", "1m", "1h"), default="raw")
    parser.add_argument("--format", choices=("csv", "parquet"), help="default: from the -o suffix, else csv")
    parser.add_argument("-o", "--output", help="file (default: stdout for CSV)")
    parser.add_argument("--influx-url", help="default $INFLUX_URL or http://127.0.0.1:8086")
    parser.add_argument("--db", help="default $INFLUX_DB or trackerdcs")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    ns = parser.parse_args(argv)
    fmt = ns.format or ("parquet" if ns.output and ns.output.endswith(".parquet") else "csv")
    if fmt == "parquet" and not ns.output:
        print("dcs export: parquet needs -o FILE", file=stderr)
        return 64
    try:
        start, stop = parse_time(ns.start), parse_time(ns.stop)
    except ValueError as exc:
        print(f"dcs export: {exc}", file=stderr)
        return 64
    if stop <= start:
        print("dcs export: --to must be after --from", file=stderr)
        return 64
    client = InfluxClient.from_env(url=ns.influx_url, db=ns.db)
    selections = selections_for(_split(ns.modules), _split(ns.channels), _split(ns.measurements))
    progress = Progress(count_windows(selections, start, stop, ns.tier), None if ns.quiet else stderr)
    rows = iter_rows(client, selections, start, stop, ns.tier, progress=progress)
    try:
        if fmt == "parquet":
            n = write_parquet(rows, ns.output)
        elif ns.output:
            with open(ns.output, "w", newline="") as out:
                n = write_csv(rows, out)
        else:
            n = write_csv(rows, stdout)
    except InfluxError as exc:
        progress.update(final=True)
        print(f"dcs export: {exc}", file=stderr)
        return 2
    progress.update(final=True)
    if ns.output:
        print(f"dcs export: {n:,} rows -> {ns.output}", file=stderr)
    return 0


def rows_to_records(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Rows as plain dicts (tests, small exports)."""
    return [dict(zip(COLUMNS, (r.time_ms, r.measurement, r.tags, r.field, r.value, r.text), strict=True)) for r in rows]
