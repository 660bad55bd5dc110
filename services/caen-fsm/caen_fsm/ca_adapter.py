"""Channel Access adapter (pyepics low-level ``epics.ca``): bulk connect, monitors, non-blocking puts.

All channels are created at once without waiting; each connection callback queues the event and the worker
thread subscribes (native type, value+alarm mask) the first time a channel connects. Enum PVs are subscribed
with their control information, so every update carries the IOC's labels (:class:`~caen_fsm.enums.EnumReading`)
and the service never assumes an index order. CA re-establishes subscriptions by itself after an IOC restart.
Callbacks run on CA threads and only enqueue; the ``handler`` passed to :class:`CaAdapter` runs on the
adapter's worker thread with batches of updates.

Reconnection after a long outage: libca searches a lost channel again with a period that doubles up to
EPICS_CA_MAX_SEARCH_PERIOD (60 s at least) and only restarts fast searching when it hears a beacon anomaly
through a CA repeater. Without a repeater (none ships with pyepics or epicscorelibs, and none runs in the pod)
a crate that was down for minutes was found again only after tens of seconds to minutes. While PVs are
disconnected the worker therefore recreates the channel of one of them (rotating over those that used to
connect) every ``probe_s``, once no connection event came for ``probe_s``: a new channel is searched at once. When that
*probe* connects the IOC is answering, and every other disconnected channel is recreated (searched at once).

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

from trackerdcs import latencytrace

from .enums import EnumReading, UnitsReading

log = logging.getLogger(__name__)
MASK = dbr.DBE_VALUE | dbr.DBE_ALARM

Batch = tuple[list[tuple[str, Any]], list[tuple[str, bool]]]
Handler = Callable[[list[tuple[str, Any]], list[tuple[str, bool]]], None]


class CaAdapter:
    """Connects a fixed list of PVs and streams their values and connection changes to ``handler``."""

    def __init__(
        self,
        pvnames: Iterable[str],
        handler: Handler,
        idle_s: float = 0.5,
        max_batch: int = 50_000,
        probe_s: float = 1.0,
        silent_s: float = 5.0,
        ctrl_pvs: Iterable[str] = (),
        put_only: Iterable[str] = (),
    ) -> None:
        self.pvnames = list(dict.fromkeys(pvnames))
        #: number PVs whose control information (EGU) is read once at each connect
        self.ctrl_pvs = frozenset(ctrl_pvs)
        self._unit_gets: dict[str, Any] = {}  # references kept alive until the one-shot get answered
        #: PVs only written (separate read-backs): connected and put to, never subscribed
        self.put_only = frozenset(put_only)
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
        self.probe_s = probe_s  # 0 disables the probe (and the silent-channel check)
        self.silent_s = silent_s  # a connected PV without a value for this long is recreated
        self._awaiting: dict[str, float] = {}  # connected PVs without a value since, and since when
        self._ever: set[str] = set()  # PVs that connected at least once
        self._probe: str | None = None  # the PV recreated last as a probe
        self._probes = 0
        self._probe_at = 0.0
        self._last_change = time.monotonic()  # of the latest connection event
        self.probe_hits = 0

    # ------------------------------------------------------------------ CA-thread callbacks (enqueue only)
    def _on_connection(self, pvname: str | None = None, conn: bool = False, chid: Any = None, **_: Any) -> None:
        if pvname is not None:
            self._queue.put(("c", pvname, (conn, chid)))

    def _on_value(self, pvname: str | None = None, value: Any = None, enum_strs: Any = None, **_: Any) -> None:
        if pvname is not None:
            if enum_strs is not None:
                value = EnumReading(int(value), tuple(str(s) for s in enum_strs))
            self._queue.put(("v", pvname, value))

    def _on_units(self, pvname: str | None = None, units: Any = None, **_: Any) -> None:
        if pvname is not None:
            text = units.decode(errors="replace") if isinstance(units, bytes) else str(units or "")
            self._queue.put(("v", pvname, UnitsReading(text.strip())))

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
        """Stop the worker and clear every channel (with its subscription): no callback can reach this
        adapter afterwards, even if the IOC comes back while the process lives on."""
        self._stop.set()
        self._queue.put(("x", "", None))
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            chids, self._chids = list(self._chids.values()), {}
            self._subs.clear()
            self._connected.clear()
        if chids:
            ca.use_initial_context()
            for chid in chids:
                with contextlib.suppress(ca.ChannelAccessException):
                    ca.clear_channel(chid)
            ca.flush_io()

    @property
    def connected_count(self) -> int:
        return len(self._connected)

    @property
    def last_change(self) -> float:
        """monotonic() of the latest connection event."""
        return self._last_change

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
                    self._awaiting.pop(name, None)
                else:
                    conn, chid = payload
                    try:
                        if self._connection_changed(name, conn, chid):
                            conns.append((name, conn))
                    except Exception:  # one PV must never stop the worker (the whole crate would look lost)
                        log.exception("connection event of %s failed", name)
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
            self._probe_tick(time.monotonic())

    # ------------------------------------------------------------------ reconnection probe (worker thread)
    def _probe_tick(self, now: float) -> None:
        """While PVs are lost: recreate one of them (one that used to connect) every ``probe_s``. A PV that
        connected but sent no value within ``silent_s`` is recreated too (it would stay unknown for good)."""
        if self.probe_s <= 0:
            return
        # only with the queue drained: a value still waiting in a backlog is not a silent PV
        silent = [n for n, t in list(self._awaiting.items()) if now - t > self.silent_s] if self._queue.empty() else []
        if silent:
            log.warning("no value from %d connected PV(s) within %g s (e.g. %s): recreating", len(silent),
                        self.silent_s, silent[0])  # fmt: skip
            with self._lock:
                for name in silent:
                    self._awaiting.pop(name, None)
                    self._queue.put(("c", name, (False, None)))  # the plant forgets it until it speaks again
                    self._recreate_locked(name)
            ca.flush_io()
        if now - self._probe_at < self.probe_s or now - self._last_change < self.probe_s:
            return  # not due, or channels are (re)connecting by themselves right now
        with self._lock:
            lost = [n for n in self.pvnames if n not in self._connected]
            if not lost:
                self._probe = None
                return
            self._probe_at = now
            candidates = [n for n in lost if n in self._ever] or lost
            self._probes += 1  # rotate: one PV gone for good (a board removed) must not hide the others
            name = candidates[self._probes % len(candidates)]
            self._probe = name
            self._recreate_locked(name)
        ca.flush_io()

    def _probe_answered_locked(self) -> None:
        """The probe connected: the IOC answers; search every other lost PV at once."""
        name, self._probe = self._probe, None
        self.probe_hits += 1
        count = self._reconnect_locked()
        log.info("IOC answers again (probe %s connected): recreated %d disconnected channels", name, count)

    def _connection_changed(self, name: str, conn: bool, chid: Any = None) -> bool:
        """Apply a connection event; False when it came from a channel recreated since (ignored)."""
        with self._lock:
            current = self._chids.get(name)
            if chid is not None and current is not None and _chid_int(current) != _chid_int(chid):
                return False  # queued before its channel was cleared and recreated: not about the current one
            if conn and current is not None and not _channel_up(current):
                # down again by now, or the event of a cleared channel whose id libca gave to the recreated one:
                # the channel's own next 'up' event connects it (subscribing now fails: no native type yet)
                return False
            self._connection_changed_locked(name, conn)
            return True

    def _connection_changed_locked(self, name: str, conn: bool) -> None:
        self._last_change = time.monotonic()
        if conn:
            self._connected.add(name)
            self._ever.add(name)
            if name not in self.put_only:  # a PV only written is not subscribed and sends no value
                self._awaiting.setdefault(name, self._last_change)
                if name not in self._subs:
                    chid = self._chids.get(name)
                    if chid is not None:
                        try:
                            self._subs[name] = self._subscribe(chid)
                        except Exception:  # the silent-PV check recreates it when no value comes
                            log.exception("cannot subscribe to %s", name)
                if name in self.ctrl_pvs:
                    self._read_units(name)
            if name == self._probe:
                self._probe_answered_locked()
        else:
            self._connected.discard(name)
            self._awaiting.pop(name, None)

    def _read_units(self, name: str) -> None:
        """Read the PV's control information once (its EGU) at each connect: one get, not a heavier monitor."""
        chid = self._chids.get(name)
        cb_event = getattr(ca, "_CB_EVENT", None)
        if chid is None:
            return
        try:
            ftype = ca.promote_fieldtype(ca.field_type(chid), use_time=False, use_ctrl=True)
            if cb_event is None:  # pyepics internals changed: the public (blocking) call
                self._on_units(pvname=name, units=(ca.get_ctrlvars(chid) or {}).get("units"))
                return
            uarg = ctypes.py_object(self._on_units)
            ret = ca.libca.ca_array_get_callback(ftype, 1, chid, cb_event, uarg)
            ca.PySEVCHK("array_get_callback", ret)
            self._unit_gets[name] = uarg
        except Exception:  # the channel then stays unknown (no units) and the self-check names it
            log.exception("cannot read the units of %s", name)

    def _subscribe(self, chid: Any) -> Any:
        """Subscribe (native type) without the two ``poll()`` calls ``ca.create_subscription`` makes per
        channel, which dominate the connect time at 10k+ PVs; the worker flushes once per batch."""
        cb_event = getattr(ca, "_CB_EVENT", None)
        if cb_event is None:  # pyepics internals changed: fall back to the public call
            return ca.create_subscription(
                chid, mask=MASK, callback=self._on_value, use_ctrl=ca.field_type(chid) == dbr.ENUM
            )
        native = ca.field_type(chid)
        # enums with their control information: every update carries the IOC's labels
        ftype = ca.promote_fieldtype(native, use_time=False, use_ctrl=native == dbr.ENUM)
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
        latencytrace.mark("ca_flushed")

    def reconnect(self) -> int:
        """Recreate the channels that are not connected (restarts their search at the fastest rate)."""
        ca.use_initial_context()
        with self._lock:
            return self._reconnect_locked()

    def _reconnect_locked(self) -> int:
        stale = [n for n in self.pvnames if n not in self._connected]
        for name in stale:
            self._recreate_locked(name)
        ca.flush_io()
        return len(stale)

    def _recreate_locked(self, name: str) -> None:
        """Clear the channel of ``name`` and create it again: libca searches a new channel at once."""
        chid = self._chids.pop(name, None)
        self._subs.pop(name, None)
        if chid is not None:
            with contextlib.suppress(ca.ChannelAccessException):
                ca.clear_channel(chid)
        self._chids[name] = ca.create_channel(name, connect=False, auto_cb=False, callback=self._on_connection)

    def wait_connected(self, timeout: float) -> bool:
        """Block until every PV is connected or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self._connected) >= len(self.pvnames):
                return True
            time.sleep(0.02)
        return len(self._connected) >= len(self.pvnames)


def _channel_up(chid: Any) -> bool:
    """Whether libca holds ``chid`` connected right now (a disconnected channel has no native type)."""
    try:
        return ca.field_type(chid) >= 0
    except Exception:
        return False


def _chid_int(chid: Any) -> int:
    """A channel id as a plain int (pyepics hands out ctypes ids and plain ints)."""
    return int(getattr(chid, "value", chid) or 0)
