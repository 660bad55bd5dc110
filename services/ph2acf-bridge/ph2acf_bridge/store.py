"""Where run documents go: a file archive on disk (always), MongoDB + GridFS (when configured), and a spool of
runs still waiting for MongoDB, replayed when it returns. Nothing is lost: the archive is written first.

Archive layout (one folder per run, named by its uid)::

    <archive_dir>/<uid>/run.json        the run document (summary, conditions, config XML, no arrays)
    <archive_dir>/<uid>/channels.npz    per-channel arrays, one entry per ``<chip>/<quantity>``
    <archive_dir>/<uid>/<result>.root   a copy of the ROOT result file
    <archive_dir>/<uid>/conditions.parquet  the run's conditions: time series of its window (trackerdcs.runconditions)
    <spool_dir>/<uid>                   marker: not yet in MongoDB

MongoDB layout (database configurable): collection ``runs`` (``_id`` = uid, index on ``run`` and
``start_ts``), GridFS bucket ``results`` (ROOT files, ``_id`` = ``<uid>/root``) and, for arrays larger than
``gridfs_threshold`` bytes, ``<uid>/channels`` (an .npz) — smaller arrays are inlined as lists under
``channels``; the conditions file as ``<uid>/conditions`` (``conditions_file.gridfs_id`` in the document).
Every write is idempotent (upsert, fixed GridFS ids), so a replay after a partial upload is safe.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RUN_FIELDS_FOR_LIST = (
    "uid", "run", "calibration", "operator", "outcome", "start_ts", "stop_ts", "modules", "mode", "comment",
)  # fmt: skip


CONDITIONS_FILE = "conditions.parquet"


class StoreUnavailable(Exception):
    """MongoDB could not be reached or refused the write."""


def channels_to_npz(channels: dict[str, dict[str, np.ndarray]]) -> bytes:
    """Serialise ``{chip: {quantity: array}}`` as compressed .npz bytes (keys ``chip/quantity``)."""
    buffer = io.BytesIO()
    flat = {f"{chip}/{q}": np.asarray(a) for chip, qs in channels.items() for q, a in qs.items()}
    np.savez_compressed(buffer, **flat)
    return buffer.getvalue()


def npz_to_channels(data: bytes) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`channels_to_npz`."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(io.BytesIO(data)) as npz:
        for key in npz.files:
            chip, quantity = key.split("/", 1)
            out.setdefault(chip, {})[quantity] = npz[key]
    return out


def _slim(doc: dict[str, Any]) -> dict[str, Any]:
    """What the archive keeps in memory about a run: enough to list it and find it."""
    entry = {k: doc.get(k) for k in (*RUN_FIELDS_FOR_LIST, "error", "abort_reason")}
    totals = (doc.get("summary") or {}).get("totals")
    entry["summary"] = {"totals": totals} if totals is not None else None
    return entry


def _listing(doc: dict[str, Any]) -> dict[str, Any]:
    entry = {k: doc.get(k) for k in (*RUN_FIELDS_FOR_LIST, "error", "abort_reason")}
    totals = (doc.get("summary") or {}).get("totals") or {}
    entry.update({k: totals.get(k) for k in ("chips", "dead", "noisy")})
    return entry


class RunArchive:
    """The on-disk archive of every run the bridge has handled."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: dict[str, dict[str, Any]] = {}
        for doc_path in self.folder.glob("*/run.json"):
            try:
                doc = json.loads(doc_path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable archived run %s: %s", doc_path, exc)
                continue
            self._index[doc["uid"]] = _slim(doc)

    def save(
        self,
        doc: dict[str, Any],
        result_file: Path | None,
        channels_npz: bytes | None,
        conditions: bytes | None = None,
    ) -> Path:
        """Write one run (document last, atomically: a folder with run.json is complete)."""
        folder = self.folder / doc["uid"]
        folder.mkdir(parents=True, exist_ok=True)
        if conditions is not None:
            (folder / "conditions.part").write_bytes(conditions)
            (folder / "conditions.part").replace(folder / CONDITIONS_FILE)
        if result_file is not None and result_file.exists():
            shutil.copyfile(result_file, folder / result_file.name)
        if channels_npz is not None:
            (folder / "channels.npz").write_bytes(channels_npz)
        tmp = folder / "run.json.part"
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        tmp.replace(folder / "run.json")
        with self._lock:
            self._index[doc["uid"]] = _slim(doc)
        return folder

    def load(self, uid: str) -> tuple[dict[str, Any], Path | None, bytes | None]:
        """The document, the archived ROOT file (if any) and the channels .npz bytes (if any) of ``uid``."""
        with self._lock:
            if uid not in self._index:
                raise KeyError(uid)
        folder = self.folder / uid
        doc = json.loads((folder / "run.json").read_text())
        roots = sorted(folder.glob("*.root"))
        npz = folder / "channels.npz"
        return doc, (roots[0] if roots else None), (npz.read_bytes() if npz.exists() else None)

    def conditions(self, uid: str) -> bytes | None:
        """The conditions Parquet bytes of ``uid`` (None if the run has none)."""
        path = self.folder / uid / CONDITIONS_FILE
        return path.read_bytes() if path.exists() else None

    def documents(self) -> list[dict[str, Any]]:
        """The index entries of every archived run (listing fields and summary totals, not whole documents:
        a document carries the conditions snapshot of the whole stand, which must not pile up in memory)."""
        with self._lock:
            return list(self._index.values())

    def max_run(self) -> int | None:
        runs = [d["run"] for d in self.documents() if isinstance(d.get("run"), int)]
        return max(runs) if runs else None


class MongoStore:
    """Run documents in MongoDB through pymongo (or a pymongo-compatible stand-in)."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        database: str = "trackerdcs",
        *,
        gridfs_threshold: int = 1_000_000,
        description: str = "",
    ) -> None:
        self.client_factory = client_factory
        self.database = database
        self.gridfs_threshold = gridfs_threshold
        self.description = description
        self._client: Any = None
        self.ok = False

    @classmethod
    def from_uri(cls, uri: str, database: str = "trackerdcs", *, timeout_ms: int = 2000, **kw: Any) -> MongoStore:
        """A store for ``uri``; ``mongomock://`` selects the in-process mongomock stand-in (tests, demos)."""
        if uri.startswith("mongomock://"):
            import mongomock
            import mongomock.gridfs

            mongomock.gridfs.enable_gridfs_integration()
            shared = mongomock.MongoClient()
            return cls(lambda: shared, database, description="mongomock (in-process stand-in)", **kw)
        import pymongo

        def factory() -> Any:
            return pymongo.MongoClient(
                uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, socketTimeoutMS=30_000
            )

        return cls(factory, database, description=_redact(uri), **kw)

    def replace_client_factory(self, factory: Callable[[], Any]) -> None:
        """Use another client from now on (e.g. after the operator moved the database)."""
        with contextlib.suppress(Exception):
            if self._client is not None:
                self._client.close()
        self._client = None
        self.client_factory = factory

    def _db(self) -> Any:
        if self._client is None:
            self._client = self.client_factory()
        return self._client[self.database]

    def _guard(self, what: str, action: Callable[[], Any]) -> Any:
        try:
            result = action()
        except StoreUnavailable:
            self.ok = False
            raise
        except Exception as exc:  # pymongo.errors.PyMongoError and stand-in errors alike
            self.ok = False
            raise StoreUnavailable(f"MongoDB {what} failed: {type(exc).__name__}: {exc}") from exc
        self.ok = True
        return result

    def ping(self) -> bool:
        """True if the database answers."""
        try:
            self._guard("ping", lambda: self._db().command("ping"))
        except StoreUnavailable:
            return False
        return True

    def upload(
        self,
        doc: dict[str, Any],
        result_file: Path | None,
        channels_npz: bytes | None,
        conditions: bytes | None = None,
    ) -> None:
        """Store one run (GridFS files first, the document last). Raises StoreUnavailable."""
        self._guard("upload", lambda: self._upload(doc, result_file, channels_npz, conditions))

    def _upload(
        self, doc: dict[str, Any], result_file: Path | None, channels_npz: bytes | None, conditions: bytes | None
    ) -> None:
        import gridfs

        db = self._db()
        fs = gridfs.GridFS(db, collection="results")
        uid = doc["uid"]
        stored = dict(doc)
        stored["_id"] = uid
        if result_file is not None and result_file.exists():
            file_id = f"{uid}/root"
            if not fs.exists(file_id):
                with result_file.open("rb") as handle:
                    fs.put(handle, _id=file_id, filename=result_file.name, metadata={"uid": uid, "run": doc["run"]})
            stored["result_file"] = {**(doc.get("result_file") or {}), "gridfs_id": file_id}
        if channels_npz is not None:
            if len(channels_npz) > self.gridfs_threshold:
                file_id = f"{uid}/channels"
                if not fs.exists(file_id):
                    fs.put(channels_npz, _id=file_id, filename=f"{uid}_channels.npz", metadata={"uid": uid})
                stored["channels"] = {"gridfs_id": file_id, "format": "npz", "bytes": len(channels_npz)}
            else:
                stored["channels"] = {
                    chip: {q: a.tolist() for q, a in qs.items()} for chip, qs in npz_to_channels(channels_npz).items()
                }
        if conditions is not None:
            file_id = f"{uid}/conditions"
            if not fs.exists(file_id):
                fs.put(conditions, _id=file_id, filename=f"{uid}_{CONDITIONS_FILE}", metadata={"uid": uid})
            stored["conditions_file"] = {**(doc.get("conditions_file") or {}), "gridfs_id": file_id}
        runs = db["runs"]
        runs.create_index("run")
        runs.create_index("start_ts")
        runs.replace_one({"_id": uid}, stored, upsert=True)

    def list_runs(self, limit: int) -> list[dict[str, Any]]:
        projection = {k: 1 for k in (*RUN_FIELDS_FOR_LIST, "summary.totals")}
        return self._guard(
            "query", lambda: list(self._db()["runs"].find({}, projection).sort("start_ts", -1).limit(limit))
        )

    def find_run(self, run: int) -> dict[str, Any] | None:
        return self._guard(
            "query",
            lambda: next(iter(self._db()["runs"].find({"run": run}, {"channels": 0}).sort("start_ts", -1)), None),
        )

    def read_file(self, file_id: str) -> bytes:
        import gridfs

        return self._guard("read", lambda: gridfs.GridFS(self._db(), collection="results").get(file_id).read())


def _redact(uri: str) -> str:
    """``uri`` without a password."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


class RunStore:
    """Archive + MongoDB + spool, the single entry point the bridge uses."""

    def __init__(self, archive_dir: Path, spool_dir: Path, mongo: MongoStore | None) -> None:
        self.archive = RunArchive(archive_dir)
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.mongo = mongo
        self._lock = threading.Lock()

    @property
    def mongo_ok(self) -> bool:
        return bool(self.mongo and self.mongo.ok)

    def spooled(self) -> list[str]:
        """uids waiting for MongoDB, oldest first."""
        markers = [p for p in self.spool_dir.iterdir() if not p.name.startswith(".")]
        return [p.name for p in sorted(markers, key=lambda p: (p.stat().st_mtime, p.name))]

    def save(
        self,
        doc: dict[str, Any],
        result_file: Path | None,
        channels: dict[str, dict[str, np.ndarray]] | None,
        conditions: bytes | None = None,
    ) -> str:
        """Archive the run (and its conditions Parquet file), then upload it (or spool it).
        Returns "mongo", "spooled" or "archive"."""
        npz = channels_to_npz(channels) if channels else None
        with self._lock:
            self.archive.save(doc, result_file, npz, conditions)
            if self.mongo is None:
                return "archive"
            try:
                self.mongo.upload(doc, result_file, npz, conditions)
            except StoreUnavailable as exc:
                log.warning("run %s spooled: %s", doc.get("run"), exc)
                (self.spool_dir / doc["uid"]).write_text(str(exc) + "\n")
                return "spooled"
            return "mongo"

    def replay(self) -> tuple[int, str | None]:
        """Upload spooled runs in order until one fails. Returns (uploaded, error or None)."""
        if self.mongo is None:
            return 0, None
        uploaded = 0
        with self._lock:
            for uid in self.spooled():
                try:
                    doc, root, npz = self.archive.load(uid)
                except KeyError:
                    log.error("spooled run %s is missing from the archive; dropping the marker", uid)
                    (self.spool_dir / uid).unlink(missing_ok=True)
                    continue
                try:
                    self.mongo.upload(doc, root, npz, self.archive.conditions(uid))
                except StoreUnavailable as exc:
                    return uploaded, str(exc)
                (self.spool_dir / uid).unlink(missing_ok=True)
                uploaded += 1
        return uploaded, None

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Newest runs first, from MongoDB (if last seen up) merged with the local archive."""
        merged: dict[str, dict[str, Any]] = {}
        if self.mongo is not None and self.mongo.ok:  # known down: answer from the archive without waiting
            with contextlib.suppress(StoreUnavailable):
                for doc in self.mongo.list_runs(limit):
                    merged[doc["_id"]] = {**_listing(doc), "stored": "mongo"}
        spooled = set(self.spooled())
        for doc in self.archive.documents():
            if doc["uid"] not in merged:
                where = "spool" if doc["uid"] in spooled else ("archive" if self.mongo is None else "archive+mongo")
                merged[doc["uid"]] = {**_listing(doc), "stored": where}
        ordered = sorted(merged.values(), key=lambda d: d.get("start_ts") or 0, reverse=True)
        return ordered[:limit]

    def show(self, run: int) -> dict[str, Any] | None:
        """The newest document with run number ``run`` (without per-channel arrays)."""
        local = [d for d in self.archive.documents() if d.get("run") == run]
        if local:
            newest = max(local, key=lambda d: d.get("start_ts") or 0)
            doc = self.archive.load(newest["uid"])[0]
            doc["stored"] = "spool" if doc["uid"] in set(self.spooled()) else "archive"
            doc["archive_path"] = str(self.archive.folder / doc["uid"])
            return doc
        if self.mongo is not None and self.mongo.ok:
            with contextlib.suppress(StoreUnavailable):
                found = self.mongo.find_run(run)
                if found is not None:
                    found.pop("_id", None)
                    return {**found, "stored": "mongo"}
        return None
