"""Typed configuration models: one strict way for every service to read its YAML (pydantic v2).

Each service describes its file as :class:`ConfigModel` subclasses (one field per line) and validates the loaded
mapping with :func:`validate`. The rules are the same everywhere:

- strict types: a number is a number (``heartbeat_s: abc`` is refused, an integer is accepted where a number is
  expected), a switch is ``true`` or ``false`` (a quoted ``'false'`` is refused rather than read as true), text
  is text;
- unknown keys are refused (``limts:`` is a mistake, never ignored), with the known keys listed;
- a mistake is a :class:`~trackerdcs.config.ConfigError` with one line per file: the key path, what was expected
  and what was found. ``trackerdcs.servicemain`` prints it with the file name and exits with status 2.

The models double as the published schema (``python -m trackerdcs.configschema``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .config import ConfigError

M = TypeVar("M", bound=BaseModel)


class ConfigModel(BaseModel):
    """Base of every config section: strict types, unknown keys refused, no NaN/inf, frozen after loading."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


#: pydantic error type -> what the key expects, in the operator's words
_EXPECTED = {
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dataclass_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


_TAGS = {"float", "int", "bool", "str", "list", "dict", "tuple", "none", "literal", "constrained-float"}


def _model_names() -> set[str]:
    names: set[str] = set()
    todo: list[type] = [BaseModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            names.add(sub.__name__)
            todo.append(sub)
    return names


def _is_tag(part: Any, models: set[str]) -> bool:
    """A union member's name in a pydantic location: not part of the operator's key path."""
    return isinstance(part, str) and (
        "[" in part or part in _TAGS or part in models or part.startswith(("function-", "tagged-union"))
    )


def key_path(loc: tuple[Any, ...]) -> str:
    """``("limits", "hv", 0)`` -> ``limits.hv[0]`` (pydantic's union member names left out)."""
    models = _model_names()
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (the key)"
        elif _is_tag(part, models):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _members(annotation: Any) -> list[Any]:
    """The alternatives of ``annotation`` (``Annotated`` and ``X | Y`` unwrapped)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _inside(annotation: Any, part: Any) -> list[Any]:
    """What ``annotation`` holds at key or index ``part``."""
    out: list[Any] = []
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            for name, field in member.model_fields.items():
                if part in (name, field.alias):
                    out.append(field.annotation)
        elif origin is dict:
            out.append(typing.get_args(member)[1])
        elif origin is list and isinstance(part, int):
            out.append(typing.get_args(member)[0])
    return out


def _field_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed where ``loc`` points (for 'unknown key' errors), when one model is known there."""
    current: list[Any] = [model]
    for part in loc[:-1]:
        current = [inner for annotation in current for inner in _inside(annotation, part)]
    models = {m for a in current for m in _members(a) if isinstance(m, type) and issubclass(m, BaseModel)}
    if len(models) != 1:
        return None
    (found,) = models
    return [f.alias or name for name, f in found.model_fields.items()]


def describe(exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> str:
    """One line for a validation failure: ``key: expected X, got Y`` for each mistake (at most three shown).

    Where a key accepts several shapes (a number or a mapping, say), the expectations are joined with "or";
    where one shape got further into the value (an unknown key inside the mapping), that deeper mistake is
    the one reported."""
    models = _model_names()
    found: dict[str, dict[str, Any]] = {}
    for error in exc.errors():
        loc = ((prefix,) if prefix else ()) + tuple(error["loc"])
        where = key_path(loc) or "(top level)"
        entry = found.setdefault(where, {"expected": [], "other": [], "input": error["input"]})
        kind = error["type"]
        if kind == "extra_forbidden":
            bare = tuple(p for p in error["loc"] if not _is_tag(p, models))
            known = _field_keys(model, bare) if model is not None else None
            entry["other"].append("unknown key" + (f" (known: {', '.join(known)})" if known else ""))
        elif kind == "missing":
            entry["other"].append("required key missing")
        elif kind in _EXPECTED:
            entry["expected"].append(_EXPECTED[kind])
        else:
            message = error["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            message = f"{message[:1].lower()}{message[1:]}"
            if kind not in ("value_error", "assertion_error"):
                message += f", got {error['input']!r}"
            entry["other"].append(message)
    # a deeper complaint (inside a mapping) explains a shallower one (the mapping was not a number)
    keys = [k for k in found if not any(o != k and o.startswith(k + ".") for o in found)]
    parts = []
    for where in keys:
        entry = found[where]
        if entry["other"]:
            parts.append(f"{where}: {entry['other'][0]}")
        else:
            expected = " or ".join(dict.fromkeys(entry["expected"]))
            parts.append(f"{where}: expected {expected}, got {entry['input']!r}")
    shown = "; ".join(parts[:3])
    if len(parts) > 3:
        shown += f" (and {len(parts) - 3} more)"
    return shown


def validate(model: type[M], data: Mapping[str, Any] | None, prefix: str = "") -> M:
    """``data`` validated against ``model``; a :class:`ConfigError` with one line naming each bad key if not.

    ``prefix`` is the key path of ``data`` inside the file (``"mqtt"`` for the ``mqtt:`` section)."""
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise ConfigError(describe(exc, model, prefix)) from None


class MqttSection(ConfigModel):
    """``mqtt:``: how a process reaches the broker (every key may be overridden by ``DCS_MQTT_<KEY>``)."""

    host: str = "127.0.0.1"
    port: int = Field(1883, gt=0, lt=65536)
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    client_id: str | None = None
    keepalive: int = Field(10, ge=0)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    session_expiry_s: int = Field(0, ge=0)


def from_environment(model: type[BaseModel], key: str, name: str, text: str) -> Any:
    """``text`` (from the environment variable ``name``) read as the type of ``model.key``, lax as text must be:
    ``"1884"`` for a port, ``"false"`` for a switch; nonsense is a :class:`ConfigError` naming the variable."""
    field = model.model_fields[key]
    try:
        value = TypeAdapter(field.annotation).validate_python(text, strict=False)
        # the field's own bounds (port range, ...) apply to what the environment gives too
        model.model_validate({key: value})
    except ValidationError as exc:
        raise ConfigError(f"{name}={text!r}: {describe(exc).split(': ', 1)[-1]}") from None
    return value
