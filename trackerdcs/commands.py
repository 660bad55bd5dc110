"""Command payload parsing and argument validation, free of I/O.

Every service command arrives as ``<root>/cmd/<name>`` with a JSON object payload.  This module turns
the raw bytes into a validated :class:`CommandRequest` or raises :class:`CommandError` with a message
fit to be shown to an operator.  Nothing here touches the network or a device.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .completion import Completion

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
#: the only bytes JSON counts as whitespace (bytes.strip() would also drop form feeds and vertical tabs)
JSON_WHITESPACE = b" \t\r\n"


class CommandError(Exception):
    """A command was refused. The message goes verbatim into the reply's ``error`` field."""


_MISSING = object()


@dataclass(frozen=True)
class Arg:
    """One named argument of a command.

    ``kind`` is one of ``str``, ``int``, ``float``, ``bool``, ``list`` (of ``item_kind``) or ``"any"``.
    ``minimum``/``maximum`` bound numbers (inclusive); ``choices`` restricts values.
    """

    name: str
    kind: Any = str
    required: bool = True
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: Sequence[Any] | None = None
    item_kind: Any = None
    help: str = ""

    def describe(self) -> dict[str, Any]:
        """This argument as published in the command table: name, type (``string``, ``integer``, ``number``,
        ``boolean``, ``list``, ``any``), ``items`` (type of a list's items), required, default, minimum,
        maximum, choices, help; absent bounds and choices are null."""
        return {
            "name": self.name,
            "type": kind_name(self.kind),
            "items": None if self.kind is not list else kind_name(self.item_kind),
            "required": self.required,
            "default": _plain(self.default),
            "minimum": self.minimum,
            "maximum": self.maximum,
            "choices": None if self.choices is None else [_plain(c) for c in self.choices],
            "help": self.help,
        }

    def coerce(self, value: Any) -> Any:
        """Return ``value`` checked against this argument, or raise :class:`CommandError`."""
        if self.kind == "any":
            return value
        if self.kind is list:
            if not isinstance(value, list):
                raise CommandError(f"argument '{self.name}' must be a list, got {_type_name(value)}")
            if len(value) > 10_000:
                raise CommandError(f"argument '{self.name}' has too many items ({len(value)})")
            if self.item_kind is None:
                return list(value)
            item = Arg(self.name + "[]", self.item_kind, choices=self.choices)
            return [item.coerce(v) for v in value]
        checked = _check_scalar(self.name, self.kind, value)
        if self.kind in (int, float):
            if self.minimum is not None and checked < self.minimum:
                raise CommandError(f"argument '{self.name}'={checked} is below the minimum {self.minimum}")
            if self.maximum is not None and checked > self.maximum:
                raise CommandError(f"argument '{self.name}'={checked} is above the maximum {self.maximum}")
        if self.choices is not None and checked not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise CommandError(f"argument '{self.name}'={checked!r} is not one of: {allowed}")
        return checked


KIND_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list", "any": "any"}


def kind_name(kind: Any) -> str:
    """The JSON-schema-like name of an argument kind (``None``, a list of anything: ``any``)."""
    return "any" if kind is None else KIND_NAMES.get(kind, str(kind))


def _plain(value: Any) -> Any:
    """A default or choice as JSON can carry it."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _check_scalar(name: str, kind: Any, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise CommandError(f"argument '{name}' must be a boolean, got {_type_name(value)}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CommandError(f"argument '{name}' must be an integer, got {_type_name(value)}")
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise CommandError(f"argument '{name}' must be an integer, got {value!r}")
            return int(value)
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CommandError(f"argument '{name}' must be a number, got {_type_name(value)}")
        number = float(value)
        if not math.isfinite(number):
            raise CommandError(f"argument '{name}' must be a finite number")
        return number
    if kind is str:
        if not isinstance(value, str):
            raise CommandError(f"argument '{name}' must be a string, got {_type_name(value)}")
        if len(value) > 4096:
            raise CommandError(f"argument '{name}' is too long ({len(value)} characters)")
        return value
    raise CommandError(f"argument '{name}' has an unsupported type")  # pragma: no cover - programming error


@dataclass(frozen=True)
class CommandSpec:
    """A command a service accepts: its name, its arguments and the handler that carries it out."""

    name: str
    handler: Callable[[dict[str, Any]], dict[str, Any] | None]
    args: tuple[Arg, ...] = ()
    help: str = ""
    allow_extra: bool = False
    #: what "done" means for a command whose reply comes before its effect (a ramp, a run); None: the reply
    completion: Completion | None = None

    def describe(self) -> dict[str, Any]:
        """This command as published in the command table (handler left out)."""
        return {
            "name": self.name,
            "help": self.help,
            "args": [a.describe() for a in self.args],
            "allow_extra": self.allow_extra,
            "completion": None if self.completion is None else self.completion.describe(),
        }

    def validate(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Check ``raw`` (the payload without ``id``) and return the arguments with defaults filled in."""
        known = {a.name for a in self.args}
        if not self.allow_extra:
            extra = sorted(set(raw) - known)
            if extra:
                raise CommandError(
                    f"unknown argument(s) for '{self.name}': {', '.join(extra)}"
                    + (f" (accepted: {', '.join(sorted(known))})" if known else " (it takes none)")
                )
        out: dict[str, Any] = dict(raw) if self.allow_extra else {}
        for arg in self.args:
            value = raw.get(arg.name, _MISSING)
            if value is _MISSING or value is None:
                if arg.required:
                    raise CommandError(f"missing argument '{arg.name}' for '{self.name}'")
                out[arg.name] = arg.default
                continue
            out[arg.name] = arg.coerce(value)
        return out


@dataclass
class CommandRequest:
    """A parsed command: its name, the caller's id (if any) and the raw arguments."""

    command: str
    id: Any = None
    args: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None
    #: who sent it, as the sender declares it (the ``dcs`` client: its MQTT user; the operator UI: the login)
    by: str | None = None
    #: where it came from, as declared (e.g. ``dcs alice@host``, ``ui 10.0.0.5``)
    origin: str | None = None


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a decoded JSON value, stopping early once ``limit`` is passed."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def peek_id(payload: bytes) -> Any:
    """Best-effort extraction of ``id`` from a payload that may fail validation, for the error reply."""
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(obj, dict):
        ident = obj.get("id")
        if isinstance(ident, (str, int)) and not isinstance(ident, bool):
            return ident if not isinstance(ident, str) or len(ident) <= 200 else None
    return None


def parse_payload(command: str, payload: bytes) -> CommandRequest:
    """Decode a command payload into a :class:`CommandRequest`; raise :class:`CommandError` if malformed.

    An empty payload means "no arguments". Besides ``id``, the optional ``deadline`` (seconds since the epoch)
    is taken out of the arguments: a service refuses a command that reaches it after its deadline; so are ``by``
    and ``from`` (who sent it and from where, for the audit trail, docs/security.md).
    ``NaN``/``Infinity`` literals, non-objects, payloads larger
    than :data:`MAX_PAYLOAD_BYTES` and JSON nested deeper than :data:`MAX_JSON_DEPTH` are refused.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError(f"payload too large ({len(payload)} bytes, limit {MAX_PAYLOAD_BYTES})")
    if not payload.strip(JSON_WHITESPACE):
        return CommandRequest(command=command)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError(f"payload is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise CommandError("malformed JSON: nested too deeply") from None
    except ValueError as exc:
        raise CommandError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandError(f"payload must be a JSON object, got {_type_name(obj)}")
    if _depth(obj, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise CommandError(f"payload nested deeper than {MAX_JSON_DEPTH} levels")
    ident = obj.pop("id", None)
    if ident is not None and (isinstance(ident, bool) or not isinstance(ident, (str, int))):
        raise CommandError(f"'id' must be a string or an integer, got {_type_name(ident)}")
    if isinstance(ident, str) and len(ident) > 200:
        raise CommandError("'id' is longer than 200 characters")
    deadline = obj.pop("deadline", None)
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not math.isfinite(deadline)
    ):
        raise CommandError(f"'deadline' must be a time in seconds since the epoch, got {_type_name(deadline)}")
    by, origin = _envelope_text(obj, "by"), _envelope_text(obj, "from")
    return CommandRequest(command=command, id=ident, args=obj, deadline=deadline, by=by, origin=origin)


def _envelope_text(obj: dict[str, Any], key: str) -> str | None:
    """Take the optional envelope field ``key`` (a short string saying who/where) out of the arguments."""
    value = obj.pop(key, None)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise CommandError(f"'{key}' must be a string of at most 200 characters, got {_type_name(value)}")
    return value


def command_table(specs: Iterable[CommandSpec]) -> dict[str, CommandSpec]:
    """Index command specs by name, refusing duplicates."""
    table: dict[str, CommandSpec] = {}
    for spec in specs:
        if spec.name in table:
            raise ValueError(f"command '{spec.name}' registered twice")
        table[spec.name] = spec
    return table


#: version of the command table document (``<root>/commands``); bumped when a field changes meaning
TABLE_SCHEMA = 1


def describe_table(
    service: str, specs: Iterable[CommandSpec], version: str = "", root: str | None = None
) -> dict[str, Any]:
    """The command table a service publishes retained on ``<root>/commands`` (docs/mqtt-api.md): every command
    with its arguments (type, range, choices, help) and what "done" means for it. ``dcs SERVICE --help``, shell
    completion and forms are built from it."""
    return {
        "schema": TABLE_SCHEMA,
        "service": service,
        "root": root or service,
        "version": version,
        "commands": [spec.describe() for spec in sorted(specs, key=lambda s: s.name)],
    }
