"""``dcs``: the command-line client for operators and scripts.

    dcs status [--watch] [--detail] [SERVICE...]      live view of every service
    dcs SERVICE COMMAND [key=value ...] [--args JSON]  send a command, wait for its reply
    dcs ph2acf runs [limit=N] | dcs ph2acf show RUN    stored calibration runs
    dcs burnin start RECIPE operator=NAME --follow     start a burn-in and follow it to its end
    dcs burnin status --follow                         follow the burn-in in progress (Ctrl-C leaves it running)
    dcs audit [--since 1h] [--user U] [--service S]    who sent which command, and the reply (docs/security.md)
    dcs backup ... | dcs restore ...                   see docs/operations.md
    dcs export --from 7d [--modules M] [--tier 1m] -o F.parquet   time series for analysis (docs/operations.md)

Connection settings come from ``--config FILE`` (a YAML file with an ``mqtt:`` section), else ``$DCS_CONFIG``,
else ``~/.config/trackerdcs/dcs.yml``, then ``DCS_MQTT_*`` environment variables and the options below.

Exit status: 0 success, 1 the service refused the command, 2 no reply / cannot reach the broker, 64 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .client import CommandFailed, DcsClient, DcsError, NoReply
from .config import ConfigError, MqttSettings, load_yaml

EXIT_OK, EXIT_REFUSED, EXIT_NO_REPLY, EXIT_USAGE = 0, 1, 2, 64
#: burn-in states after which ``--follow`` returns (DONE: exit 0; the others: exit 1)
BURNIN_FINAL = ("DONE", "ABORTED", "FAILED", "IDLE")

# Bare positional values accepted for some commands: (service, command) -> argument name.
POSITIONAL = {
    ("ph2acf", "show"): "run",
    ("julabo", "set_setpoint"): "value",
    ("burnin", "plan"): "recipe",
    ("burnin", "start"): "recipe",
    ("burnin", "iv"): "module",
}


def parse_value(text: str) -> Any:
    """JSON where it parses; ``[a,b]`` as a list of strings; anything else as a string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if text.startswith("[") and text.endswith("]"):
        return [parse_value(item.strip()) for item in text[1:-1].split(",") if item.strip()]
    return text


def parse_assignments(tokens: list[str], service: str = "", command: str = "") -> dict[str, Any]:
    """Turn ``key=value`` tokens into command arguments.

    Values are read as JSON when they parse (numbers, true/false, null, lists, objects), ``[a,b]`` as a list
    of strings, otherwise as strings. A key given several times becomes a list (``modules=M1 modules=M2``).
    """
    args: dict[str, Any] = {}
    repeated: set[str] = set()
    for token in tokens:
        if "=" not in token:
            positional = POSITIONAL.get((service, command))
            if positional is None or positional in args:
                raise ValueError(f"expected key=value, got {token!r}")
            key, text = positional, token
        else:
            key, text = token.split("=", 1)
        if not key:
            raise ValueError(f"empty argument name in {token!r}")
        value = parse_value(text)
        if key in args:
            if key not in repeated:
                args[key] = [args[key]]
                repeated.add(key)
            args[key].append(value)
        else:
            args[key] = value
    return args


def load_settings(ns: argparse.Namespace) -> MqttSettings:
    """Connection settings from the config file, the environment and the command line (in that order)."""
    path = ns.config or os.environ.get("DCS_CONFIG")
    default = Path.home() / ".config" / "trackerdcs" / "dcs.yml"
    section: dict[str, Any] = {}
    if path or default.exists():
        section = load_yaml(path or default).get("mqtt") or {}
    settings = MqttSettings.from_config(section)
    if ns.host:
        settings.host = ns.host
    if ns.port:
        settings.port = ns.port
    if ns.user:
        settings.username = ns.user
    if ns.password_file:
        settings.password_file = ns.password_file
    return settings


# ---------------------------------------------------------------------- status view
def collect_status(client: DcsClient, services: list[str], settle_s: float = 0.7) -> dict[str, dict[str, Any]]:
    """Gather availability, status, health (and sub-status topics) of every service seen on the broker."""
    client.subscribe(["+/availability", "+/status", "+/status/#", "+/health"])
    time.sleep(settle_s)
    view: dict[str, dict[str, Any]] = {}
    for topic, message in client.latest("#").items():
        parts = topic.split("/")
        svc = parts[0]
        if services and svc not in services:
            continue
        entry = view.setdefault(svc, {"availability": None, "status": None, "health": None, "sub": {}})
        try:
            payload = message.json() if parts[1] != "availability" else message.payload.decode()
        except (ValueError, UnicodeDecodeError):
            continue
        if parts[1] in ("availability", "health") and len(parts) == 2:
            entry[parts[1]] = payload
        elif parts[1] == "status" and len(parts) == 2:
            entry["status"] = payload
        elif parts[1] == "status":
            entry["sub"]["/".join(parts[2:])] = payload
    return dict(sorted(view.items()))


def _age(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    age = time.time() - ts
    return f"{age:.0f}s" if age < 120 else f"{age / 60:.0f}min"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


HEALTH_SUMMARY = (
    "version", "host", "uptime_s", "msgs_in_per_s", "msgs_out_per_s", "commands_ok", "commands_failed",
    "commands_queued", "mqtt_out_queued", "publish_failures",
)  # fmt: skip
STANDARD_HEALTH = {*HEALTH_SUMMARY, "service", "pid", "cpu_percent", "rss_mb", "threads", "mqtt_reconnects",
                   "last_error", "last_error_ts", "ts"}  # fmt: skip


def render_health(health: dict[str, Any]) -> str:
    """One line of a service's health: the standard figures, its own counters, the last error with its age."""
    parts = [f"{k}={_fmt(health[k])}" for k in HEALTH_SUMMARY if health.get(k) is not None]
    parts += [
        f"{k}={_fmt(v)}" for k, v in health.items() if k not in STANDARD_HEALTH and not isinstance(v, (dict, list))
    ]
    if health.get("last_error"):
        parts.append(f"last_error ({_age(health.get('last_error_ts'))} ago): {health['last_error']}")
    stale = isinstance(health.get("ts"), (int, float)) and time.time() - health["ts"] > 30
    return ("STALE " if stale else "") + ", ".join(parts)


def render_status(view: dict[str, dict[str, Any]], detail: bool = False) -> str:
    """A plain-text table of the status view."""
    if not view:
        return "no service has published anything on this broker"
    lines = [f"{'SERVICE':<10} {'AVAIL':<8} {'STATE':<14} {'AGE':>6}  {'CPU%':>5} {'RSS MB':>7} {'RECONN':>6}  DETAILS"]
    for svc, entry in view.items():
        status = entry["status"] or {}
        health = entry["health"] or {}
        details = ", ".join(
            f"{k}={_fmt(v)}" for k, v in status.items() if k not in ("state", "ts") and not isinstance(v, (dict, list))
        )
        if health.get("last_error"):
            details += f"  last error: {health['last_error']}"
        lines.append(
            f"{svc:<10} {entry['availability'] or '?':<8} {status.get('state', '-'):<14} "
            f"{_age(status.get('ts')):>6}  {health.get('cpu_percent', '-'):>5} {health.get('rss_mb', '-'):>7} "
            f"{health.get('mqtt_reconnects', '-'):>6}  {details[:160]}"
        )
        if detail and health:
            lines.append("  health: " + render_health(health))
        if detail:
            for sub, payload in sorted(entry["sub"].items()):
                if not isinstance(payload, dict):
                    continue
                fields = ", ".join(
                    f"{k}={_fmt(v)}" for k, v in payload.items() if k != "ts" and not isinstance(v, (dict, list))
                )
                lines.append(f"  {sub:<30} {fields[:150]}")
    return "\n".join(lines)


def cmd_status(ns: argparse.Namespace, client: DcsClient) -> int:
    while True:
        view = collect_status(client, ns.services)
        if ns.json:
            print(json.dumps(view, indent=2, default=str))
        else:
            if ns.watch:
                print("\x1b[2J\x1b[H", end="")
            print(render_status(view, ns.detail))
        if not ns.watch:
            return EXIT_OK
        time.sleep(max(0.0, ns.interval - 0.7))


def cmd_command(ns: argparse.Namespace, client: DcsClient) -> int:
    try:
        args = parse_assignments(ns.assignments, ns.service, ns.command)
        if ns.args:
            extra = json.loads(ns.args)
            if not isinstance(extra, dict):
                raise ValueError("--args must be a JSON object")
            args.update(extra)
    except ValueError as exc:
        print(f"dcs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        reply = client.command(ns.service, ns.command, args, timeout=ns.timeout)
    except CommandFailed as exc:
        if ns.json:
            print(json.dumps(exc.reply))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except NoReply as exc:
        if ns.json:
            print(json.dumps({"ok": False, "error": str(exc), "command": ns.command}))
        print(f"dcs: {exc}", file=sys.stderr)
        return EXIT_NO_REPLY
    if ns.json:
        print(json.dumps(reply))
    else:
        result = reply.get("result")
        print("ok" + (" (duplicate: not acted on again)" if reply.get("duplicate") else ""))
        if isinstance(result, dict) and isinstance(result.get("plan"), list):  # dcs burnin plan: the table
            print("\n".join(map(str, result["plan"])))
        elif result is not None:
            print(json.dumps(result, indent=2, default=str))
    if getattr(ns, "follow", False):
        result = reply.get("result")
        started = result.get("uid") if ns.command == "start" and isinstance(result, dict) else None
        return follow_burnin(client, uid=started)
    return EXIT_OK


def audit_line(record: dict[str, Any]) -> str:
    """One audit record as a line: time (UTC), command, who, from where, arguments, outcome."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.get("ts", 0)))
    reply = record.get("reply")
    if reply is None:
        outcome = "NO REPLY"
    elif reply.get("ok"):
        outcome = "ok"
    else:
        outcome = f"refused: {reply.get('error')}"
    args = json.dumps(record.get("args"), default=str, separators=(",", ":"))
    who = f"{record.get('by') or '?'} ({record.get('from') or '?'})"
    command = f"{record.get('service')}/{record.get('command')}"
    return f"{when}Z  {command:<24} {who:<36} {args:<40} -> {outcome}"


def cmd_audit(ns: argparse.Namespace, client: DcsClient) -> int:
    """``dcs audit``: ask the audit recorder for its records and print them, oldest first."""
    args: dict[str, Any] = {"since": ns.since, "limit": ns.limit}
    for key in ("until", "user", "service"):
        if getattr(ns, key) is not None:
            args[key] = getattr(ns, key)
    try:
        reply = client.command("audit", "query", args, timeout=ns.timeout)
    except CommandFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except NoReply as exc:
        print(f"dcs: {exc} (is dcs-audit running?)", file=sys.stderr)
        return EXIT_NO_REPLY
    records = (reply.get("result") or {}).get("records", [])
    if ns.json:
        print(json.dumps(records))
    else:
        print("\n".join(audit_line(r) for r in records) if records else "no commands recorded in that time")
    return EXIT_OK


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def burnin_progress_line(status: dict[str, Any]) -> str:
    """One line of ``dcs burnin ... --follow``: state, step i/N and name, cycle k/K, elapsed, ETA, gate message."""
    parts = [f"{status.get('state', '?'):8}"]
    if status.get("step"):
        parts.append(f"step {status['step']}/{status.get('steps')} {status.get('step_name') or ''}".rstrip())
    if (status.get("cycles") or 0) > 1:
        parts.append(f"cycle {status.get('cycle') or '-'}/{status['cycles']}")
    parts.append(f"elapsed {_clock(status.get('elapsed_s'))}")
    if status.get("eta_s") is not None:
        parts.append(f"ETA {_clock(status['eta_s'])}")
    for key in ("message", "abort_reason"):
        if status.get(key):
            parts.append(f"| {status[key]}")
    return "  ".join(parts)


def follow_burnin(client: DcsClient, uid: str | None = None, out: Any = None, every_s: float = 10.0) -> int:
    """Print the burn-in's progress and events until it reaches a final state (Ctrl-C stops following only): a
    line at every change of state or step, otherwise one every ``every_s`` (a plateau lasts hours).
    ``uid``: the burn-in just started; an older one's final state (still retained) does not end the wait."""
    out = out or sys.stdout
    lines: list[str] = []
    shown: dict[str, Any] = {"key": None, "at": 0.0}

    def on_status(msg: Any) -> None:
        if not msg.payload:
            return
        doc = msg.json()
        key = (doc.get("state"), doc.get("step"), doc.get("uid"))
        now = time.monotonic()
        if key != shown["key"] or now - shown["at"] >= every_s:
            shown["key"], shown["at"] = key, now
            lines.append(burnin_progress_line(doc))

    def on_event(msg: Any) -> None:
        if msg.payload:
            doc = msg.json()
            lines.append(f"  [{doc.get('severity', 'info')}] {doc.get('kind')}: {doc.get('message', '')}")

    client.watch("burnin/status", on_status)
    client.watch("burnin/event", on_event)
    client.subscribe(["burnin/status", "burnin/event"])
    last = ""
    while True:
        while lines:
            line = lines.pop(0)
            if line != last:
                print(line, file=out, flush=True)
                last = line
        latest = client.latest("burnin/status").get("burnin/status")
        if latest is not None and latest.payload:
            doc = latest.json()
            state = doc.get("state")
            if state in BURNIN_FINAL and not lines and (uid is None or doc.get("uid") == uid):
                return EXIT_OK if state == "DONE" else EXIT_REFUSED
        time.sleep(0.2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcs",
        description="trackerdcs command-line client",
        epilog="Examples: dcs status --detail | dcs caen lv_on modules=[M1,M2] | dcs julabo start",
    )
    parser.add_argument("--config", help="YAML file with an mqtt: section (default $DCS_CONFIG)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--user")
    parser.add_argument("--password-file")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply (default 10)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        from . import export

        return export.main(argv[1:])
    if argv and argv[0] in ("backup", "restore"):
        try:  # the operations tooling lives in a checkout (scripts/setup.sh), not in the services' images
            from trackerdcs_ops import backup
        except ImportError:
            print(f"dcs {argv[0]}: run it from a checkout of trackerdcs set up by scripts/setup.sh", file=sys.stderr)
            return 2
        return (backup.main_backup if argv[0] == "backup" else backup.main_restore)(argv[1:])
    parser = build_parser()
    ns, rest = parser.parse_known_args(argv)
    if not rest:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if rest[0] == "audit":
        sub = argparse.ArgumentParser(prog="dcs audit", description="the audit trail: who sent which command")
        sub.add_argument("--since", default="1h", help="30m, 2h, 7d or an ISO time, UTC (default 1h)")
        sub.add_argument("--until", help="same forms as --since")
        sub.add_argument("--user", help="only commands sent by this user (the 'by' of the record)")
        sub.add_argument("--service", help="only commands to this service")
        sub.add_argument("--limit", type=int, default=200, help="at most this many, the latest (default 200)")
        sub.add_argument("--json", action="store_true")
        sns = sub.parse_args(rest[1:])
        for key in ("since", "until", "user", "service", "limit"):
            setattr(ns, key, getattr(sns, key))
        ns.json = ns.json or sns.json
        handler = cmd_audit
    elif rest[0] == "status":
        sub = argparse.ArgumentParser(prog="dcs status")
        sub.add_argument("services", nargs="*")
        sub.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
        sub.add_argument("--detail", action="store_true", help="also list per-channel/per-module topics")
        sub.add_argument("--interval", type=float, default=2.0)
        sub.add_argument("--json", action="store_true")
        sns = sub.parse_args(rest[1:])
        ns.services, ns.watch, ns.detail, ns.interval = sns.services, sns.watch, sns.detail, sns.interval
        ns.json = ns.json or sns.json
        handler = cmd_status
    else:
        if len(rest) < 2:
            print("dcs: usage: dcs SERVICE COMMAND [key=value ...]", file=sys.stderr)
            return EXIT_USAGE
        sub = argparse.ArgumentParser(prog=f"dcs {rest[0]} {rest[1]}")
        sub.add_argument("assignments", nargs="*")
        sub.add_argument("--args", help="arguments as one JSON object")
        sub.add_argument("--json", action="store_true")
        if rest[0] == "burnin":
            sub.add_argument("--follow", action="store_true", help="then print progress until the burn-in ends")
        sns = sub.parse_args(rest[2:])
        ns.service, ns.command, ns.assignments, ns.args = rest[0], rest[1], sns.assignments, sns.args
        ns.follow = getattr(sns, "follow", False)
        ns.json = ns.json or sns.json
        handler = cmd_command
    try:
        settings = load_settings(ns)
        with DcsClient(settings) as client:
            return handler(ns, client)
    except (ConfigError, DcsError) as exc:
        print(f"dcs: {exc}", file=sys.stderr)
        return EXIT_NO_REPLY
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
