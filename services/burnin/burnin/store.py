"""Where burn-in documents go: a file archive (always, written first), MongoDB (when configured) and a spool of
documents still waiting for MongoDB, replayed when it answers again. Same scheme as the ph2acf bridge's run store.

Archive: ``<archive_dir>/<uid>/burnin.json`` and, per IV scan, ``<archive_dir>/<uid>/iv/<step>-<n>.json`` with its
plot ``<step>-<n>.png`` next to it (``ivplot.py``; drawn after the JSON is safe, a failure to draw is logged and
costs only the picture). MongoDB (database configurable): collection ``burnins`` (``_id`` = uid) and ``iv_scans``
(``_id`` = ``<uid>/<step>/<n>``, field ``burnin`` = uid); files (the burn-in's conditions
``<uid>/conditions.parquet``, see trackerdcs.runconditions) in the GridFS bucket ``burnin_files``, ``_id`` = the
archive path. Writes are upserts, so a replay after a partial upload is harmless. ``mongomock://`` selects the
in-process stand-in (tests; no MongoDB server runs on the development machine).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .ivplot import render_iv_png

log = logging.getLogger(__name__)

FILES_BUCKET = "burnin_files"


def mongo_factory(uri: str, timeout_ms: int = 2000) -> Callable[[], Any]:
    if uri.startswith("mongomock://"):
        import mongomock
        import mongomock.gridfs

        mongomock.gridfs.enable_gridfs_integration()
        shared = mongomock.MongoClient()
        return lambda: shared
    import pymongo

    return lambda: pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)


class BurninStore:
    """Archive + MongoDB + spool for burn-in and IV scan documents."""

    def __init__(
        self, archive_dir: Path, spool_dir: Path, factory: Callable[[], Any] | None, database: str = "trackerdcs"
    ) -> None:
        self.archive = Path(archive_dir)
        self.spool = Path(spool_dir)
        self.archive.mkdir(parents=True, exist_ok=True)
        self.spool.mkdir(parents=True, exist_ok=True)
        self.factory = factory
        self.database = database
        self._client: Any = None
        self._lock = threading.Lock()
        self.mongo_ok = False

    def _db(self) -> Any:
        if self._client is None:
            assert self.factory is not None
            self._client = self.factory()
        return self._client[self.database]

    def save(self, collection: str, doc_id: str, doc: dict[str, Any], path: Path) -> str:
        """Archive ``doc`` at ``path`` (relative to the archive), then upsert it; "mongo", "spooled" or "archive"."""
        target = self.archive / path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        tmp.replace(target)
        if self.factory is None:
            return "archive"
        with self._lock:
            try:
                self._db()[collection].replace_one({"_id": doc_id}, {**doc, "_id": doc_id}, upsert=True)
            except Exception as exc:  # pymongo errors and stand-in errors alike
                self.mongo_ok = False
                log.warning("MongoDB write of %s/%s failed (%s): spooled", collection, doc_id, exc)
                marker = self.spool / f"{collection}__{doc_id.replace('/', '__')}"
                marker.write_text(json.dumps({"collection": collection, "id": doc_id, "path": str(path)}))
                return "spooled"
            self.mongo_ok = True
            return "mongo"

    def save_file(self, path: Path, data: bytes) -> str:
        """Archive ``data`` at ``path`` (relative to the archive), then put it in GridFS (``burnin_files``,
        ``_id`` = the path); "mongo", "spooled" or "archive"."""
        target = self.archive / path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
        if self.factory is None:
            return "archive"
        with self._lock:
            try:
                self._put_file(str(path), data)
            except Exception as exc:  # pymongo errors and stand-in errors alike
                self.mongo_ok = False
                log.warning("MongoDB write of file %s failed (%s): spooled", path, exc)
                marker = self.spool / f"file__{str(path).replace('/', '__')}"
                marker.write_text(json.dumps({"file": True, "path": str(path)}))
                return "spooled"
            self.mongo_ok = True
            return "mongo"

    def _put_file(self, file_id: str, data: bytes) -> None:
        import gridfs

        fs = gridfs.GridFS(self._db(), collection=FILES_BUCKET)
        if not fs.exists(file_id):
            fs.put(data, _id=file_id, filename=Path(file_id).name)

    def read_file(self, path: Path | str) -> bytes:
        """A file stored with :meth:`save_file`, from GridFS."""
        import gridfs

        return gridfs.GridFS(self._db(), collection=FILES_BUCKET).get(str(path)).read()

    def save_iv_scan(self, doc_id: str, doc: dict[str, Any], path: Path) -> str:
        """Archive and upsert an IV scan document like :meth:`save`, then draw its PNG next to the JSON."""
        where = self.save("iv_scans", doc_id, doc, path)
        self.write_plot(doc, self.archive / Path(path).with_suffix(".png"))
        return where

    def write_plot(self, doc: dict[str, Any], target: Path) -> bool:
        """Write the IV plot of ``doc`` to ``target``; False (and an error log line) if it cannot be drawn."""
        try:
            png = render_iv_png(doc)
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(png)
            tmp.replace(target)
        except Exception:  # a picture is never worth losing a scan or stopping the burn-in
            log.exception("IV plot %s not written", target)
            return False
        return True

    def replay(self) -> int:
        """Upload spooled documents; returns how many went up."""
        if self.factory is None:
            return 0
        done = 0
        for marker in sorted(self.spool.iterdir()):
            try:  # local problems only: a marker or archived document that cannot be read
                meta = json.loads(marker.read_text())
                if meta.get("file"):
                    data = (self.archive / meta["path"]).read_bytes()
                else:
                    doc = json.loads((self.archive / meta["path"]).read_text())
                    collection, doc_id = meta["collection"], meta["id"]
            except (OSError, ValueError, KeyError) as exc:
                log.error("spool entry %s unusable (%s): dropped", marker.name, exc)
                marker.unlink(missing_ok=True)
                continue
            try:  # any failure of the database keeps the entry for the next replay
                if meta.get("file"):
                    self._put_file(meta["path"], data)
                else:
                    self._db()[collection].replace_one({"_id": doc_id}, {**doc, "_id": doc_id}, upsert=True)
            except Exception as exc:
                self.mongo_ok = False
                log.info("spool replay stopped: %s", exc)
                return done
            marker.unlink(missing_ok=True)
            done += 1
            self.mongo_ok = True
        return done

    def spooled(self) -> int:
        return sum(1 for _ in self.spool.iterdir())

    def iv_scans(self, module: str, limit: int = 5) -> list[dict[str, Any]]:
        """The newest archived IV scans of ``module`` (points included), newest first."""
        found: list[tuple[float, dict[str, Any]]] = []
        for path in self.archive.glob("*/iv/*.json"):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if module in (doc.get("modules") or {}):
                found.append(
                    (
                        float(doc.get("ts") or 0.0),
                        {
                            **doc["modules"][module],
                            "burnin": doc.get("burnin"),
                            "step": doc.get("step"),
                            "ts": doc.get("ts"),
                        },
                    )
                )
        found.sort(key=lambda x: x[0], reverse=True)
        return [d for _, d in found[:limit]]
