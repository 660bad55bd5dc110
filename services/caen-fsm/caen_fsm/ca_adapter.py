"""Channel Access adapter (pyepics low-level ``epics.ca``): bulk connect, monitors, non-blocking puts.

All channels are created at once without waiting; each connection callback queues the event and the worker
thread subscribes (native type, value+alarm mask) the first time a channel connects. CA re-establishes
subscriptions by itself after an IOC restart. Callbacks run on CA threads and only enqueue; the
``handler`` passed to :class:`CaAdapter` runs on the adapter's worker thread with batches of updates.

The EPICS_CA_* environment must be set before this module is imported (pyepics reads it at libca init).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from epics import ca, dbr

log = logging.getLogger(__name__)
MASK = dbr.DBE_VALUE | dbr.DBE_ALARM

Batch = tuple[list[tuple[str, Any]], list[tuple[str, bool]]]
Handler = Callable[[list[tuple[str, Any]], list[tuple[str, bool]]], None]


class CaAdapter:
    """Connects a fixed list of PVs and streams their values and connection changes to ``handler``."""

    def __init__(self, pvnames: Iterable[str], handler: Handler, idle_s: float = 0.5, max_batch: int = 50_000) -> None:
        self.pvnames = list(dict.fromkeys(pvnames))
        self.handler = handler
        self.idle_s = idle_s
        self.max_batch = max_batch  # most updates (values + connection changes) handed over in one call
        self._queue: queue.SimpleQueue[tuple[str, str, Any]] = queue.SimpleQueue()
        self._chids: dict[str, Any] = {}
        self._subs: dict[str, Any] = {}
        self._connected: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.updates = 0
        self.puts = 0

    # ------------------------------------------------------------------ CA-thread callbacks (enqueue only)
    def _on_connection(self, pvname: str | None = None, conn: bool = False, **_: Any) -> None:
        if pvname is not None:
            self._queue.put(("c", pvname, conn))

    def _on_value(self, pvname: str | None = None, value: Any = None, **_: Any) -> None:
        if pvname is not None:
            self._queue.put(("v", pvname, value))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Create every channel (no per-PV waits) and start the worker."""
        ca.initialize_libca()
        ca.use_initial_context()
        for name in self.pvnames:
            self._chids[name] = ca.create_channel(name, connect=False, auto_cb=False, callback=self._on_connection)
        ca.flush_io()
        self._thread = threading.Thread(target=self._run, name="ca-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(("x", "", None))
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def connected_count(self) -> int:
        return len(self._connected)

    def is_connected(self, pvname: str) -> bool:
        return pvname in self._connected

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        ca.use_initial_context()
        while not self._stop.is_set():
            values: list[tuple[str, Any]] = []
            conns: list[tuple[str, bool]] = []
            try:
                item = self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                item = None
            while item is not None:
                kind, name, payload = item
                if kind == "x":
                    return
                if kind == "v":
                    values.append((name, payload))
                else:
                    self._connection_changed(name, payload)
                    conns.append((name, payload))
                # check the limit *before* taking the next item: an item taken and then left behind by the
                # break was lost for good (one update in every max_batch + 1 whenever the queue was backed up)
                if len(values) + len(conns) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            if conns:
                ca.flush_io()
            self.updates += len(values)
            try:
                self.handler(values, conns)
            except Exception:
                log.exception("update handler failed")

    def _connection_changed(self, name: str, conn: bool) -> None:
        with self._lock:
            self._connection_changed_locked(name, conn)

    def _connection_changed_locked(self, name: str, conn: bool) -> None:
        if conn:
            self._connected.add(name)
            if name not in self._subs:
                chid = self._chids.get(name)
                if chid is not None:
                    try:
                        self._subs[name] = self._subscribe(chid)
                    except ca.ChannelAccessException:
                        log.exception("cannot subscribe to %s", name)
        else:
            self._connected.discard(name)

    def _subscribe(self, chid: Any) -> Any:
        """Subscribe (native type) without the two ``poll()`` calls ``ca.create_subscription`` makes per
        channel, which dominate the connect time at 10k+ PVs; the worker flushes once per batch."""
        cb_event = getattr(ca, "_CB_EVENT", None)
        if cb_event is None:  # pyepics internals changed: fall back to the public call
            return ca.create_subscription(chid, mask=MASK, callback=self._on_value)
        ftype = ca.promote_fieldtype(ca.field_type(chid), use_time=False, use_ctrl=False)
        uarg = ctypes.py_object(self._on_value)
        evid = ctypes.c_void_p()
        ret = ca.libca.ca_create_subscription(ftype, 0, chid, MASK, cb_event, uarg, ctypes.byref(evid))
        ca.PySEVCHK("create_subscription", ret)
        return (cb_event, uarg, evid)  # keep the references alive as long as the subscription

    # ------------------------------------------------------------------ writes
    def put(self, pvname: str, value: float | int) -> bool:
        """Write without waiting for completion; False (and a log line) when the PV is not connected."""
        chid = self._chids.get(pvname)
        if chid is None or pvname not in self._connected:
            log.warning("put %s=%r skipped: not connected", pvname, value)
            return False
        ca.use_initial_context()
        ca.put(chid, value, wait=False)
        self.puts += 1
        return True

    def flush(self) -> None:
        ca.flush_io()

    def reconnect(self) -> int:
        """Recreate the channels that are not connected (restarts their search at the fastest rate)."""
        ca.use_initial_context()
        with self._lock:
            return self._reconnect_locked()

    def _reconnect_locked(self) -> int:
        stale = [n for n in self.pvnames if n not in self._connected]
        for name in stale:
            chid = self._chids.pop(name, None)
            self._subs.pop(name, None)
            if chid is not None:
                with contextlib.suppress(ca.ChannelAccessException):
                    ca.clear_channel(chid)
            self._chids[name] = ca.create_channel(name, connect=False, auto_cb=False, callback=self._on_connection)
        ca.flush_io()
        return len(stale)

    def wait_connected(self, timeout: float) -> bool:
        """Block until every PV is connected or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self._connected) >= len(self.pvnames):
                return True
            time.sleep(0.02)
        return len(self._connected) >= len(self.pvnames)
