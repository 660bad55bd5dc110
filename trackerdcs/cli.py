"""``dcs``: the command-line client for operators and scripts.

    dcs status [--watch] [--detail] [SERVICE...]         live view of every service
    dcs SERVICE COMMAND [key=value ...] [--args JSON]     send a command, wait for its reply
    dcs SERVICE COMMAND ... --wait [--timeout S]          ... then for its outcome (a ramp, a run), with progress
    dcs SERVICE --help | dcs SERVICE COMMAND --help       the service's commands, from the table it publishes
    dcs ph2acf runs [limit=N] | dcs ph2acf show RUN       stored calibration runs
    dcs burnin start RECIPE operator=NAME --follow        start a burn-in and follow it to its end
    dcs burnin status --follow                            follow the burn-in in progress (Ctrl-C leaves it running)
    dcs audit [--since 1h] [--user U] [--service S]       who sent which command, and the reply (docs/security.md)
    dcs backup ... | dcs restore ...                      see docs/operations.md
    dcs completion bash                                   shell completion from the services' command tables
    dcs export --from 7d [--modules M] [--tier 1m] -o F.parquet   time series for analysis (docs/operations.md)

Global options (``--config``, ``--host``, ``--port``, ``--user``, ``--password-file``, ``--json``,
``--timeout``) may come before or after the subcommand (after ``audit``, ``--user`` filters the trail; give
the login before it). Connection settings come from ``--config FILE`` (a YAML file with an ``mqtt:``
section), else ``$DCS_CONFIG``, else ``~/.config/trackerdcs/dcs.yml``, then ``DCS_MQTT_*`` environment
variables and the options.

Exit status: 0 success, 1 the service refused the command (or, with ``--wait``, its outcome failed: a trip,
an alarm, a failed run), 2 no reply / cannot reach the broker, 3 (``--wait``) not done within the time limit,
64 usage error, 130 stopped waiting with Ctrl-C (the action goes on).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .client import ActionFailed, ActionTimeout, CommandFailed, DcsClient, DcsError, NoReply
from .completion import Completion, CompletionTracker, progress_line
from .config import ConfigError, MqttSettings, load_yaml

EXIT_OK, EXIT_REFUSED, EXIT_NO_REPLY, EXIT_TIMEOUT, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3, 64, 130
DEFAULT_TIMEOUT_S = 10.0
#: burn-in states after which ``--follow`` returns (DONE: exit 0; the others: exit 1); used when the burn-in
#: service's command table is not there (it names them: its ``start`` outcome)
BURNIN_FINAL = ("DONE", "ABORTED", "FAILED", "IDLE")
#: subcommands of dcs itself; any other first word is a service
BUILTINS = ("status", "audit", "backup", "restore", "export", "completion")

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


def parse_typed(text: str, arg: dict[str, Any] | None) -> Any:
    """One value as the command table types its argument: a ``string`` argument takes the text as written
    (``comment=42`` is the string "42"), a ``list`` takes ``[a,b]`` or a single item (``modules=M1``); anything
    else (or an argument the table does not know) is read by :func:`parse_value`."""
    if arg is None:
        return parse_value(text)
    kind = arg.get("type")
    if kind == "string":
        return text
    if kind == "list":
        if text.startswith("[") and text.endswith("]"):
            if arg.get("items") == "string":
                return [item.strip() for item in text[1:-1].split(",") if item.strip()]
            return parse_value(text)
        return [text if arg.get("items") == "string" else parse_value(text)]
    return parse_value(text)


def parse_assignments(
    tokens: list[str], service: str = "", command: str = "", spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Turn ``key=value`` tokens into command arguments.

    Values are read as JSON when they parse (numbers, true/false, null, lists, objects), ``[a,b]`` as a list
    of strings, otherwise as strings. A key given several times becomes a list (``modules=M1 modules=M2``).
    With ``spec`` (the command's entry in its service's command table) values are read as their argument's type
    says (:func:`parse_typed`).
    """
    typed = {a.get("name"): a for a in (spec or {}).get("args") or [] if isinstance(a, dict)}
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
        value = parse_typed(text, typed.get(key)) if spec is not None else parse_value(text)
        if key in args:
            if typed.get(key, {}).get("type") == "list":
                args[key] = [*args[key], *value]
                continue
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


class ProgressLine:
    """The one progress line of ``--wait`` on ``stream`` (stderr): rewritten in place on a terminal; elsewhere
    (a log, a pipe) a new line only when a watched state changes, or every ``every_s``, so logs stay short."""

    def __init__(self, stream: Any, label: str, limit: float | None, every_s: float = 10.0) -> None:
        self.stream, self.label, self.limit, self.every_s = stream, label, limit, every_s
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.shown: Any = None
        self.at = -every_s
        self.width = shutil.get_terminal_size((100, 20)).columns - 1

    def update(self, tracker: CompletionTracker, elapsed: float) -> None:
        """Show where ``tracker`` stands after ``elapsed`` seconds."""
        line = progress_line(self.label, tracker, elapsed, self.limit)
        if self.tty:
            self.stream.write("\r\x1b[K" + line[: self.width])
            self.stream.flush()
            self.shown = True
            return
        key = tuple(tracker.values().items())
        if key != self.shown or elapsed - self.at >= self.every_s:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.shown, self.at = key, elapsed

    def finish(self) -> None:
        """End the line (a terminal's cursor goes to the next line)."""
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
        self.shown = None


def reply_timeout(ns: argparse.Namespace) -> float:
    """Seconds to wait for the reply: ``--timeout`` (default 10); with ``--wait`` it bounds the outcome instead
    and the reply gets at most the default."""
    if ns.timeout is None:
        return DEFAULT_TIMEOUT_S
    return min(ns.timeout, DEFAULT_TIMEOUT_S) if getattr(ns, "wait", False) else ns.timeout


def cmd_command(ns: argparse.Namespace, client: DcsClient) -> int:
    """``dcs SERVICE COMMAND [key=value ...] [--wait]``: send, print the reply, with ``--wait`` follow the
    outcome the service's command table defines (progress on stderr) and exit by it."""
    spec = getattr(ns, "spec", None)
    label = f"{ns.service} {ns.command}"
    try:
        args = parse_assignments(ns.assignments, ns.service, ns.command, spec)
        if ns.args:
            extra = json.loads(ns.args)
            if not isinstance(extra, dict):
                raise ValueError("--args must be a JSON object")
            args.update(extra)
    except ValueError as exc:
        print(f"dcs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    completion: Completion | None = None
    if getattr(ns, "wait", False):
        completion = client.completion(ns.service, ns.command)
        if completion is None:
            why = "its reply is the outcome" if spec is not None else "it publishes no command table"
            print(f"dcs: {label}: nothing to wait for ({why}); leave out --wait", file=sys.stderr)
            return EXIT_USAGE
        client.subscribe([completion.subscription(ns.service)])  # before sending: no state change is missed
    try:
        reply = client.command(ns.service, ns.command, args, timeout=reply_timeout(ns))
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
    if not ns.json:
        result = reply.get("result")
        print("ok" + (" (duplicate: not acted on again)" if reply.get("duplicate") else ""), flush=True)
        if isinstance(result, dict) and isinstance(result.get("plan"), list):  # dcs burnin plan: the table
            print("\n".join(map(str, result["plan"])))
        elif result is not None:
            print(json.dumps(result, indent=2, default=str), flush=True)
    if completion is not None:
        return wait_for_outcome(ns, client, completion, reply)
    if ns.json:
        print(json.dumps(reply))
    if getattr(ns, "follow", False):
        result = reply.get("result")
        started = result.get("uid") if ns.command == "start" and isinstance(result, dict) else None
        return follow_burnin(client, uid=started, final=final_states(client))
    return EXIT_OK


def wait_for_outcome(ns: argparse.Namespace, client: DcsClient, completion: Completion, reply: dict[str, Any]) -> int:
    """Follow an accepted command to its outcome: exit 0 done, 1 failed (tripped, alarm, run failed), 3 not
    done within the time limit, 130 stopped by Ctrl-C (the action goes on)."""
    label = f"{ns.service} {ns.command}"
    limit = ns.timeout if ns.timeout is not None else completion.timeout_s
    line = ProgressLine(sys.stderr, label, limit)
    outcome: dict[str, Any] = {"done": False}
    code = EXIT_OK
    try:
        tracker = client.await_outcome(ns.service, ns.command, completion, reply, limit, line.update)
        line.finish()
        outcome = {"done": True, "status": tracker.docs}
        if not ns.json:
            print(f"done: {tracker.describe_state()}")
    except (ActionFailed, ActionTimeout) as exc:
        line.finish()
        code = EXIT_REFUSED if isinstance(exc, ActionFailed) else EXIT_TIMEOUT
        outcome = {"done": False, "error": str(exc), "status": exc.tracker.docs}
        print(f"dcs: {exc}", file=sys.stderr)
    except DcsError as exc:
        line.finish()
        print(f"dcs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        line.finish()
        print(f"dcs: stopped waiting; {label} goes on (dcs status {ns.service})", file=sys.stderr)
        return EXIT_INTERRUPTED
    if ns.json:
        print(json.dumps({**reply, "outcome": outcome}, default=str))
    return code


def final_states(client: DcsClient) -> tuple[str, ...]:
    """The burn-in states that end ``--follow``: those ending the wait of ``burnin start`` in its command table,
    plus IDLE (no burn-in loaded); the built-in list if the table is not there."""
    completion = client.completion("burnin", "start")
    if completion is None:
        return BURNIN_FINAL
    return (*completion.done, *completion.failed, "IDLE")


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
    for key, dest in (("until", "until"), ("user", "sent_by"), ("service", "of_service")):
        if getattr(ns, dest) is not None:
            args[key] = getattr(ns, dest)
    try:
        reply = client.command("audit", "query", args, timeout=reply_timeout(ns))
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


def follow_burnin(
    client: DcsClient,
    uid: str | None = None,
    out: Any = None,
    every_s: float = 10.0,
    final: tuple[str, ...] = BURNIN_FINAL,
) -> int:
    """Print the burn-in's progress and events until it reaches a ``final`` state (Ctrl-C stops following only):
    a line at every change of state or step, otherwise one every ``every_s`` (a plateau lasts hours).
    ``uid``: the burn-in just started; an older one's final state (still retained) does not end the wait.
    Exit 0 if it ended DONE, else 1."""
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
            if state in final and not lines and (uid is None or doc.get("uid") == uid):
                return EXIT_OK if state == "DONE" else EXIT_REFUSED
        time.sleep(0.2)


# ---------------------------------------------------------------------- command line
class UsageError(Exception):
    """A usage error, already explained on stderr."""


class Parser(argparse.ArgumentParser):
    """argparse with the exit status of dcs for usage errors (64) instead of argparse's 2 (2 means no reply)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageError(message)


#: The options every subcommand takes, before or after it: (flags, argparse keywords).
GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--config",), {"metavar": "FILE", "help": "YAML file with an mqtt: section (default $DCS_CONFIG)"}),
    (("--host",), {"help": "MQTT broker host"}),
    (("--port",), {"type": int, "help": "MQTT broker port"}),
    (("--user",), {"help": "MQTT login (after 'audit': the trail's sender filter)"}),
    (("--password-file",), {"metavar": "FILE", "help": "file holding the MQTT password"}),
    (("--json",), {"action": "store_true", "help": "machine-readable output"}),
    (
        ("--timeout",),
        {
            "type": float,
            "metavar": "S",
            "help": f"seconds to wait for the reply (default {DEFAULT_TIMEOUT_S:g}); with --wait, for the outcome "
            "(default: the command's own limit from its table)",
        },
    ),
)
GLOBAL_DEFAULTS = {"config": None, "host": None, "port": None, "user": None, "password_file": None,
                   "json": False, "timeout": None}  # fmt: skip
#: global options followed by a value (the others are flags)
_VALUED = {flag for flags, kw in GLOBAL_OPTIONS for flag in flags if kw.get("action") != "store_true"}


def global_options(*, top: bool, skip: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A parent parser with the global options. ``top``: the main parser's copy, with the defaults; the copies
    in subcommands default to "not given" so that an option before the subcommand is not reset after it."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("global options (before or after the subcommand)")
    for flags, kwargs in GLOBAL_OPTIONS:
        if flags[0] in skip:
            continue
        extra = {} if top else {"default": argparse.SUPPRESS}
        group.add_argument(*flags, **kwargs, **extra)
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The main parser: global options, then a subcommand (a built-in one or a service)."""
    parser = Parser(
        prog="dcs",
        description="trackerdcs command-line client",
        parents=[global_options(top=True)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="subcommands:\n"
        "  status [SERVICE...]            every service, its state and health (--watch, --detail)\n"
        "  SERVICE COMMAND [key=value...] send a command (--wait: until its outcome); SERVICE --help lists them\n"
        "  audit                          who sent which command\n"
        "  backup | restore               back up and restore the data (docs/operations.md)\n"
        "  completion bash                shell completion from the services' command tables\n\n"
        "Examples: dcs status --detail | dcs caen lv_on modules=[M1,M2] --wait | dcs --json julabo start",
    )
    parser.add_argument("subcommand", nargs="?", help="a built-in subcommand or a service")
    return parser


def split_argv(argv: Sequence[str]) -> tuple[list[str], str | None, list[str]]:
    """``argv`` cut at the subcommand: (global options before it, the subcommand, everything after it)."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            i += 1
            break
        if not token.startswith("-") or token == "-":
            break
        i += 2 if token in _VALUED else 1
    if i >= len(argv):
        return list(argv), None, []
    return list(argv[:i]), argv[i], list(argv[i + 1 :])


def merge(ns: argparse.Namespace, sub: argparse.Namespace) -> argparse.Namespace:
    """The global options given before the subcommand, overridden by those given after it."""
    merged = argparse.Namespace(**vars(ns))
    for key, value in vars(sub).items():
        setattr(merged, key, value)
    return merged


def status_parser() -> Parser:
    sub = Parser(
        prog="dcs status", description="every service, its state and health", parents=[global_options(top=False)]
    )
    sub.add_argument("services", nargs="*", help="only these services")
    sub.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    sub.add_argument("--detail", action="store_true", help="also list per-channel/per-module topics")
    sub.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    return sub


def audit_parser() -> Parser:
    sub = Parser(
        prog="dcs audit",
        description="the audit trail: who sent which command (the login goes before 'audit': dcs --user U audit)",
        parents=[global_options(top=False, skip=("--user",))],
    )
    sub.add_argument("--since", default="1h", help="30m, 2h, 7d or an ISO time, UTC (default 1h)")
    sub.add_argument("--until", help="same forms as --since")
    sub.add_argument("--user", "--by", dest="sent_by", help="only commands sent by this user (the record's 'by')")
    sub.add_argument("--service", dest="of_service", help="only commands to this service")
    sub.add_argument("--limit", type=int, default=200, help="at most this many, the latest (default 200)")
    return sub


def completion_parser() -> Parser:
    sub = Parser(
        prog="dcs completion",
        description="print a shell completion script built from the command tables the services publish now "
        "(load it with: source <(dcs completion bash); regenerate after a service gained commands)",
        parents=[global_options(top=False)],
    )
    sub.add_argument("shell", choices=("bash",))
    return sub


def arg_usage(arg: dict[str, Any]) -> str:
    """``name=TYPE`` (``[name=TYPE]`` when optional) for a usage line."""
    kind = str(arg.get("type") or "any").upper()
    if arg.get("type") == "list":
        kind = f"[{str(arg.get('items') or 'any').upper()},...]"
    if arg.get("choices"):
        kind = "|".join(str(c) for c in arg["choices"])
    text = f"{arg.get('name')}={kind}"
    return text if arg.get("required") else f"[{text}]"


def arg_help(arg: dict[str, Any]) -> str:
    """The words about one argument: required or its default, its range, its own help."""
    parts = ["required" if arg.get("required") else f"optional (default {json.dumps(arg.get('default'))})"]
    low, high = arg.get("minimum"), arg.get("maximum")
    if low is not None and high is not None:
        parts.append(f"{low:g} to {high:g}")
    elif low is not None:
        parts.append(f"at least {low:g}")
    elif high is not None:
        parts.append(f"at most {high:g}")
    if arg.get("choices"):
        parts.append("one of " + ", ".join(str(c) for c in arg["choices"]))
    if arg.get("help"):
        parts.append(str(arg["help"]))
    return "; ".join(parts)


def wait_help(completion: dict[str, Any] | None) -> str:
    if not completion:
        return "the reply is the outcome: --wait does not apply"
    limit = completion.get("timeout_s")
    limit_text = f"{limit:g} s" if isinstance(limit, (int, float)) else "none"
    failed = ", ".join(completion.get("failed") or []) or "-"
    return (
        f"--wait: until {completion.get('description') or 'done'} ({completion.get('topic')} "
        f"{completion.get('field')} in {', '.join(completion.get('done') or [])}; fails at {failed}; "
        f"time limit {limit_text}, --timeout S to change)"
    )


def add_command_options(sub: argparse.ArgumentParser, service: str, has_completion: bool | None) -> None:
    """The options of ``dcs SERVICE COMMAND``: ``--args``, ``--wait`` (and ``--follow`` for burnin)."""
    sub.add_argument("assignments", nargs="*", metavar="key=value", help="the command's arguments")
    sub.add_argument("--args", metavar="JSON", help="arguments as one JSON object")
    wait_text = "then wait for the outcome (see below), with a progress line on stderr"
    sub.add_argument(
        "--wait", action="store_true", help=wait_text if has_completion is not False else argparse.SUPPRESS
    )
    if service == "burnin":
        sub.add_argument("--follow", action="store_true", help="then print progress and events until the burn-in ends")


def service_parser(service: str, table: dict[str, Any] | None) -> Parser:
    """``dcs SERVICE``: one subcommand per command of the service's published table (none: any command)."""
    top = Parser(
        prog=f"dcs {service}",
        usage=f"dcs {service} COMMAND [key=value ...] [--wait] [--args JSON] [global options]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[global_options(top=False)],
    )
    if table is None:
        top.description = (
            f"{service} publishes no command table ({service}/commands): a command and its arguments are sent as "
            "given, and the service answers (an unknown service: no reply, exit 2)"
        )
        top.add_argument("command", metavar="COMMAND")
        add_command_options(top, service, None)
        return top
    entries = [c for c in table.get("commands") or [] if isinstance(c, dict) and c.get("name")]
    top.description = (
        f"the commands of {service} (from the table it publishes on {service}/commands, version "
        f"{table.get('version') or '?'}); dcs {service} COMMAND --help for one command's arguments"
    )
    subs = top.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=Parser)
    subs.required = True
    for entry in entries:
        args = [a for a in entry.get("args") or [] if isinstance(a, dict)]
        usage = " ".join(arg_usage(a) for a in args)
        lines = [f"  {a.get('name')}: {arg_help(a)}" for a in args] or ["  (none)"]
        if entry.get("allow_extra"):
            lines.append("  other key=value arguments are passed on")
        epilog = "arguments:\n" + "\n".join(lines) + "\n\n" + wait_help(entry.get("completion"))
        summary = "  ".join(p for p in (usage, entry.get("help") or "") if p)
        if entry.get("completion"):
            summary += f"  (--wait: until {entry['completion'].get('description') or 'done'})"
        sub = subs.add_parser(
            entry["name"],
            help=summary or " ",
            description=entry.get("help") or None,
            usage=f"dcs {service} {entry['name']} {usage} [--wait] [--args JSON] [global options]".replace("  ", " "),
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[global_options(top=False)],
        )
        add_command_options(sub, service, bool(entry.get("completion")))
        sub.set_defaults(spec=entry)
    return top


def connection(ns: argparse.Namespace) -> DcsClient:
    """A connected client with the settings of ``ns``."""
    return DcsClient(load_settings(ns)).connect()


def run_connected(ns: argparse.Namespace, handler: Callable[[argparse.Namespace, DcsClient], int]) -> int:
    """Connect, run ``handler``; broker and config trouble become exit 2 with one line."""
    try:
        client = connection(ns)
    except (ConfigError, DcsError) as exc:
        print(f"dcs: {exc}", file=sys.stderr)
        return EXIT_NO_REPLY
    try:
        return handler(ns, client)
    except DcsError as exc:
        print(f"dcs: {exc}", file=sys.stderr)
        return EXIT_NO_REPLY
    finally:
        client.close()


def cmd_service(ns: argparse.Namespace, rest: list[str]) -> int:
    """``dcs SERVICE ...``: parse against the service's command table (fetched from the broker), then send."""
    try:
        client = connection(ns)
    except (ConfigError, DcsError) as exc:
        if any(t in ("-h", "--help") for t in rest):  # help without a broker: say why it is short
            print(f"dcs: {exc}; the commands of {ns.subcommand} come from the broker", file=sys.stderr)
        else:
            print(f"dcs: {exc}", file=sys.stderr)
        return EXIT_NO_REPLY
    try:
        table = client.commands(ns.subcommand)
        parser = service_parser(ns.subcommand, table)
        if not rest:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        sub = parser.parse_args(rest)
        full = merge(ns, sub)
        full.service = ns.subcommand
        full.spec = getattr(sub, "spec", None)
        return cmd_command(full, client)
    except DcsError as exc:
        print(f"dcs: {exc}", file=sys.stderr)
        return EXIT_NO_REPLY
    finally:
        client.close()


def cmd_completion(ns: argparse.Namespace) -> int:
    """``dcs completion bash``: the completion script, with the command tables on the broker now."""
    tables: dict[str, dict[str, Any]] = {}
    try:
        client = connection(ns)
    except (ConfigError, DcsError) as exc:
        print(f"dcs: {exc}: completing built-in subcommands only", file=sys.stderr)
    else:
        try:
            tables = discover_tables(client)
        finally:
            client.close()
    print(bash_completion(tables))
    return EXIT_OK


def discover_tables(client: DcsClient, timeout: float = 3.0) -> dict[str, dict[str, Any]]:
    """Every command table retained on the broker, by service root."""
    client.subscribe(["+/commands"])
    client.sync(timeout)
    tables: dict[str, dict[str, Any]] = {}
    for topic, message in sorted(client.latest("+/commands").items()):
        try:
            table = message.json()
        except ValueError:
            continue
        if isinstance(table, dict) and isinstance(table.get("commands"), list):
            tables[topic.split("/")[0]] = table
    return tables


def _words(items: Sequence[str]) -> str:
    return " ".join(sorted(dict.fromkeys(items)))


def bash_completion(tables: dict[str, dict[str, Any]]) -> str:
    """A bash completion script for ``dcs``: subcommands, global options, and from the command tables every
    service, its commands, their ``key=`` arguments and the values of arguments with choices."""
    command_cases, arg_cases = [], []
    for service, table in sorted(tables.items()):
        entries = [c for c in table.get("commands") or [] if isinstance(c, dict) and c.get("name")]
        command_cases.append(f"    {_quote(service)}) echo {_quote(_words([c['name'] for c in entries]))} ;;")
        for entry in entries:
            words = []
            for arg in entry.get("args") or []:
                if not isinstance(arg, dict) or not arg.get("name"):
                    continue
                choices = arg.get("choices") or ([True, False] if arg.get("type") == "boolean" else [])
                if choices:
                    words += [f"{arg['name']}={json.dumps(c) if isinstance(c, bool) else c}" for c in choices]
                else:
                    words.append(f"{arg['name']}=")
            words += ["--wait"] if entry.get("completion") else []
            words += ["--follow"] if service == "burnin" else []
            words += ["--args", "--help"]
            arg_cases.append(f"    {_quote(service + ' ' + entry['name'])}) echo {_quote(_words(words))} ;;")
    global_flags = _words([f for flags, _ in GLOBAL_OPTIONS for f in flags] + ["--help"])
    valued = "|".join(sorted(_VALUED))
    return f"""# bash completion for dcs (trackerdcs), generated by `dcs completion bash` from the command tables
# published on the broker ({len(tables)} services). Load with: source <(dcs completion bash)
_dcs_commands() {{
  case "$1" in
{chr(10).join(command_cases)}
  esac
}}
_dcs_args() {{
  case "$1 $2" in
{chr(10).join(arg_cases)}
  esac
}}
_dcs() {{
  local line=${{COMP_LINE:0:COMP_POINT}} cur="" words=() rest=() i=1 choices=""
  read -ra words <<< "$line"
  [[ $line == *[[:space:]] ]] || {{ cur=${{words[-1]}}; unset 'words[-1]'; }}
  while (( i < ${{#words[@]}} )); do  # skip global options before the subcommand
    case "${{words[i]}}" in
      {valued}) i=$((i + 2)) ;;
      -*) i=$((i + 1)) ;;
      *) break ;;
    esac
  done
  if (( ${{#words[@]}} > 1 )) && [[ ${{words[-1]}} =~ ^({valued})$ ]]; then
    COMPREPLY=(); return 0  # the value of an option: nothing to offer
  fi
  rest=("${{words[@]:i}}")
  if (( ${{#rest[@]}} == 0 )); then
    choices="status audit backup restore export completion {_words(list(tables))} {global_flags}"
  elif [[ ${{rest[0]}} == status ]]; then
    choices="--watch --detail --interval {_words(list(tables))} {global_flags}"
  elif [[ ${{rest[0]}} == completion ]]; then
    choices="bash"
  elif [[ ${{rest[0]}} == audit ]]; then
    choices="--since --until --user --service --limit {global_flags}"
  elif [[ ${{rest[0]}} == backup || ${{rest[0]}} == restore ]]; then
    choices="--dest --keep --no-pause --components --dir --pod --prefix {global_flags}"
  elif (( ${{#rest[@]}} == 1 )); then
    choices="$(_dcs_commands "${{rest[0]}}") --help"
  else
    choices="$(_dcs_args "${{rest[0]}}" "${{rest[1]}}") {global_flags}"
  fi
  local IFS=$'\\n' prefix=""
  [[ $cur == *=* && $COMP_WORDBREAKS == *=* ]] && prefix="${{cur%%=*}}="
  COMPREPLY=($(compgen -W "${{choices// /$'\\n'}}" -- "$cur"))
  COMPREPLY=("${{COMPREPLY[@]#"$prefix"}}")
  [[ ${{#COMPREPLY[@]}} == 1 && ${{COMPREPLY[0]}} == *= ]] && compopt -o nospace 2>/dev/null
  return 0
}}
complete -F _dcs dcs"""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def main(argv: list[str] | None = None) -> int:
    """Run ``dcs`` with ``argv`` (default: the command line); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    before, subcommand, rest = split_argv(argv)
    parser = build_parser()
    try:
        ns = parser.parse_args(before + ([subcommand] if subcommand else []))
        if subcommand is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if subcommand == "export":  # InfluxDB, not MQTT: its own options (dcs export --help)
            from . import export

            return export.main(rest)
        if subcommand in ("backup", "restore"):
            try:  # the operations tooling lives in a checkout (scripts/setup.sh), not in the services' images
                from trackerdcs_ops import backup
            except ImportError:
                print(
                    f"dcs {subcommand}: run it from a checkout of trackerdcs set up by scripts/setup.sh",
                    file=sys.stderr,
                )
                return EXIT_USAGE

            make = backup.backup_parser if subcommand == "backup" else backup.restore_parser
            full = merge(ns, make([global_options(top=False)]).parse_args(rest))
            run = backup.run_backup if subcommand == "backup" else backup.run_restore
            return run(full, json_output=full.json)
        if subcommand == "status":
            return run_connected(merge(ns, status_parser().parse_args(rest)), cmd_status)
        if subcommand == "audit":
            return run_connected(merge(ns, audit_parser().parse_args(rest)), cmd_audit)
        if subcommand == "completion":
            return cmd_completion(merge(ns, completion_parser().parse_args(rest)))
        return cmd_service(ns, rest)
    except UsageError:
        return EXIT_USAGE
    except SystemExit as exc:  # --help (0); a plain argparse parser's usage error (2: backup, restore)
        if exc.code == 2:
            return EXIT_USAGE
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
