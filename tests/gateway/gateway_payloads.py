"""MQTT messages shaped exactly like the project's status and event contract (docs/mqtt-api.md, "Status snapshots"
and "Events", and the per-service status documents in docs/services/).

Used to check telegraf.conf's mapping and to fill InfluxDB for the Grafana query test. A series of ``points``
snapshots, 30 s apart, ending at ``end``; includes a CAEN trip, a chiller alarm, an interlock trip and one
calibration run (run_start/run_stop events), and one burn-in (burnin_start, a step, an IV scan, burnin_end).
"""

from __future__ import annotations

import json
from typing import Any

Message = tuple[str, bytes]


def _m(topic: str, payload: Any) -> Message:
    return topic, (payload if isinstance(payload, str) else json.dumps(payload)).encode()


def contract_messages(end: float, points: int = 20) -> list[Message]:
    """Messages of every contract topic, oldest first."""
    out: list[Message] = []
    for i in range(points):
        ts = end - 30.0 * (points - 1 - i)
        hv = 300.0 if i >= 2 else 0.0
        out.append(
            _m(
                "caen/status",
                {
                    "state": "HV_ON" if hv else "LV_ON",
                    "connected": True,
                    "modules_total": 2,
                    "modules_hv_on": 2 if hv else 0,
                    "modules_tripped": 0,
                    "ts": ts,
                },
            )
        )
        for n, module in enumerate(("M1", "M2")):
            out.append(
                _m(
                    f"caen/status/module/{module}",
                    {
                        "module": module,
                        "state": "HV_ON" if hv else "LV_ON",
                        "lv_channel": f"lv{n}",
                        "hv_channel": f"hv{n}",
                        "lv_vmon": 10.5 + 0.01 * i,
                        "lv_imon": 1.2,
                        "hv_vmon": hv - n,
                        "hv_imon": 0.5 + 0.01 * i,
                        "ts": ts,
                    },
                )
            )
            for kind, ch in (("lv", f"lv{n}"), ("hv", f"hv{n}")):
                out.append(
                    _m(
                        f"caen/status/channel/{ch}",
                        {
                            "channel": ch,
                            "module": module,
                            "kind": kind,
                            "slot": 0 if kind == "lv" else 12,
                            "ch": n,
                            "state": "ON",
                            "on": True,
                            "vmon": 10.5 if kind == "lv" else hv,
                            "imon": 1.2,
                            "v0set": 10.5 if kind == "lv" else 300.0,
                            "i0set": 2.0,
                            "status": 1,
                            "flags": ["ON"],
                            "ts": ts,
                        },
                    )
                )
        out.append(
            _m(
                "caen/status/channel/spare",
                {
                    "channel": "spare",
                    "module": None,
                    "kind": "hv",
                    "slot": 13,
                    "ch": 5,
                    "state": "OFF",
                    "on": False,
                    "vmon": 0,
                    "imon": 0,
                    "v0set": 0,
                    "i0set": 0,
                    "status": 0,
                    "flags": [],
                    "ts": ts,
                },
            )
        )
        out.append(
            _m(
                "julabo/status",
                {
                    "state": "RUNNING",
                    "connected": True,
                    "bath_temp": -20 + 0.01 * i,
                    "external_temp": None,
                    "heating_power": 12,
                    "setpoint": -20.0,
                    "setpoint_1": -20.0,
                    "setpoint_2": 20.0,
                    "setpoint_3": 0.0,
                    "active_setpoint": 1,
                    "control_sensor": "internal",
                    "pump_stage": 2,
                    "status_code": 3,
                    "status_text": "03 REMOTE START",
                    "remote": True,
                    "model": "JULABO FP50-HL",
                    "ts": ts,
                },
            )
        )
        out.append(
            _m(
                "ph2acf/status",
                {
                    "state": "RUNNING" if 5 <= i < 15 else "IDLE",
                    "run": 42 if 5 <= i < 15 else None,
                    "calibration": "pixelalive" if 5 <= i < 15 else None,
                    "progress": max(0.0, min(100.0, (i - 5) * 10.0)),
                    "operator": "ana" if 5 <= i < 15 else None,
                    "mode": "subprocess",
                    "spooled": 0,
                    "mongo_ok": True,
                    "ts": ts,
                },
            )
        )
        out.append(_m("env/box", {"temperature": 21.0 + 0.05 * i, "humidity": 3.0, "ts": ts}))
        out.append(_m("env/room", {"temperature": 23.0, "humidity": 40.0, "ts": ts}))
        out.append(
            _m(
                "interlock/status",
                {"state": "OK", "active": [], "conditions": [], "details": [], "lv_off_pending": False, "ts": ts},
            )
        )
        for svc in ("caen", "julabo", "ph2acf"):
            out.append(
                _m(
                    f"{svc}/health",
                    {
                        "service": svc,
                        "version": "0.1.0",
                        "host": "stand",
                        "pid": 100,
                        "uptime_s": 30.0 * i,
                        "cpu_percent": 1.5,
                        "rss_mb": 60.0,
                        "threads": 5,
                        "mqtt_reconnects": 0,
                        "commands_ok": i,
                        "commands_failed": 0,
                        "msgs_in_per_s": 1.0,
                        "msgs_out_per_s": 2.0,
                        "last_error": None,
                        "last_error_ts": None,
                        "ts": ts,
                    },
                )
            )
        if i == 5:
            out.append(
                _m(
                    "ph2acf/event",
                    {
                        "kind": "run_start",
                        "severity": "info",
                        "message": "run 42 pixelalive",
                        "service": "ph2acf",
                        "run": 42,
                        "calibration": "pixelalive",
                        "operator": "ana",
                        "modules": ["M1", "M2"],
                        "start_ts": ts,
                        "ts": ts,
                    },
                )
            )
        if i == 15:
            out.append(
                _m(
                    "ph2acf/event",
                    {
                        "kind": "run_stop",
                        "severity": "info",
                        "message": "run 42 done",
                        "service": "ph2acf",
                        "run": 42,
                        "calibration": "pixelalive",
                        "outcome": "done",
                        "start_ts": ts - 300,
                        "stop_ts": ts,
                        "ts": ts,
                    },
                )
            )
        if i == 10:
            out.append(
                _m(
                    "caen/event",
                    {
                        "kind": "trip",
                        "severity": "alarm",
                        "message": "hv1 tripped (OVC)",
                        "service": "caen",
                        "channel": "hv1",
                        "module": "M2",
                        "flags": ["OVC", "INTTRIP"],
                        "ts": ts,
                    },
                )
            )
            out.append(
                _m(
                    "julabo/event",
                    {
                        "kind": "alarm",
                        "severity": "alarm",
                        "message": "-01 LOW LEVEL ALARM",
                        "service": "julabo",
                        "status_code": -1,
                        "status_text": "LOW LEVEL ALARM",
                        "ts": ts,
                    },
                )
            )
            out.append(
                _m(
                    "interlock/event",
                    {
                        "kind": "trip",
                        "severity": "alarm",
                        "service": "interlock",
                        "message": "interlock chiller_alarm",
                        "reason": "chiller_alarm",
                        "action": "hv_off+lv_off",
                        "state": "TRIPPED",
                        "ts": ts,
                    },
                )
            )
        out += _burnin_events(i, ts)
    for svc in ("caen", "julabo", "ph2acf", "interlock"):
        out.append(_m(f"{svc}/availability", "online"))
    return out


BURNIN_UID = "stand-1-burnin-20261201T060000-abc123"


def _burnin_events(i: int, ts: float) -> list[Message]:
    """The burn-in sequencer's events as services/burnin/burnin/app.py publishes them (trackerdcs.service adds
    kind, severity, message, service and ts): start at i=3 with the first step, an IV scan at i=8, end at i=14."""
    base = {"severity": "info", "service": "burnin", "uid": BURNIN_UID, "ts": ts}
    if i == 3:
        return [
            _m(
                "burnin/event",
                {
                    **base,
                    "kind": "burnin_start",
                    "message": f"burn-in {BURNIN_UID} (sim-short) started by ana",
                    "recipe": "sim-short",
                    "modules": ["M1", "M2"],
                    "start_ts": ts,
                },
            ),
            _m(
                "burnin/event",
                {
                    **base,
                    "kind": "step_start",
                    "message": "step 1/11: chiller on",
                    "step": 1,
                    "name": "chiller on",
                    "step_kind": "chiller",
                },
            ),
        ]
    if i == 8:
        return [
            _m(
                "burnin/event",
                {
                    **base,
                    "kind": "iv_scan",
                    "message": "IV scan step 4: M1 done, M2 breakdown",
                    "step": 4,
                    "outcomes": {"M1": "done", "M2": "breakdown"},
                    "stored": "mongo",
                },
            )
        ]
    if i == 14:
        return [
            _m(
                "burnin/event",
                {
                    **base,
                    "kind": "burnin_end",
                    "message": f"burn-in {BURNIN_UID} done",
                    "outcome": "done",
                    "stop_ts": ts,
                },
            )
        ]
    return []


CONTRACT_TOPICS = sorted({t for t, _ in contract_messages(0.0, 16)})
