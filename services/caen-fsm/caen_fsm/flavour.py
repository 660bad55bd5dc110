"""IOC flavours: how one CAEN mainframe IOC names and shapes its PVs, as data (pure, no I/O besides reading
the shipped YAML files).

Public EPICS IOCs for CAEN mainframes agree on the crate's parameters and on the meaning of enum values, but not
on PV names, on how the channel Status is given, on label spelling, on where units come from or on the sign of
setpoints on negative boards. A :class:`Flavour` says all of that for one IOC; the service takes every PV name,
Status form and label alias from it. Shipped flavours live in ``caen_fsm/flavours/*.yml``; a site picks one with
``flavour: <name>`` in its config, or writes its own inline (``flavour: {base: <name>, ...overrides}`` or a full
mapping). See docs/services/caen.md, "IOC flavours".
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from trackerdcs.config import ConfigError

from .states import Kind

DEFAULT_FLAVOUR = "trackerdcs"
STATUS_FORMS = ("word", "bits", "highest")
UNIT_SOURCES = ("egu", "fixed")
#: The decoded Status bits (:class:`caen_fsm.status_bits.StatusBit` names) and their bit numbers.
BIT_NUMBERS = {
    "ON": 0,
    "RUP": 1,
    "RDW": 2,
    "OVC": 3,
    "OVV": 4,
    "UNV": 5,
    "EXTTRIP": 6,
    "MAXV": 7,
    "EXT_DIS": 8,
    "INTTRIP": 9,
    "CALERR": 10,
    "UNPLUGGED": 11,
    "OVP": 13,
    "PWFAIL": 14,
    "TEMPERR": 15,
}
#: The words the service means for each enum parameter (the IOC's spelling is matched through aliases).
ENUM_WORDS: dict[str, tuple[str, ...]] = {
    "Pw": ("Off", "On"),
    "PDwn": ("Kill", "Ramp"),
    "ImRange": ("High", "Low"),
    "ClearAlarm": ("No", "Yes"),
}
#: The units the service works in (limits, published values, docs): an IOC giving other units is refused.
SERVICE_UNITS: dict[str, dict[Kind, str]] = {
    "VMon": {Kind.LV: "V", Kind.HV: "V"},
    "IMon": {Kind.LV: "A", Kind.HV: "uA"},
}
#: Spellings of a unit accepted in an EGU field (compared case-sensitively after stripping: mA is not MA).
UNIT_SPELLINGS: dict[str, tuple[str, ...]] = {
    "V": ("V", "Volt", "Volts", "volt", "volts"),
    "A": ("A", "Amp", "Amps", "amp", "amps", "Ampere"),
    "uA": ("uA", "µA", "μA", "microA", "ua", "UA"),
}
_KNOWN_KEYS = {
    "name",
    "base",
    "description",
    "channel",
    "crate",
    "read",
    "write",
    "names",
    "readbacks",
    "absent",
    "status",
    "labels",
    "units",
    "sign",
    "clear",
}


@dataclass(frozen=True)
class StatusSpec:
    """How the IOC gives the channel Status."""

    form: str  # word | bits | highest (the PV of word and highest is the parameter "Status" in ``names``)
    bits: Mapping[str, str] = field(default_factory=dict)  # bits form: decoded bit name -> the IOC's PV name
    offset: int = 1  # highest form: value = number of the highest set bit + offset; below offset: no bit set


@dataclass(frozen=True)
class Flavour:
    """One IOC's PV layout and conventions (see the module docstring and docs/services/caen.md)."""

    name: str
    description: str
    channel: str  # template of the channel prefix: {system} {slot} {ch}
    crate: str  # template of the crate prefix: {system}
    read: str  # template of a read PV: {prefix} {name} (+ {system} {slot} {ch})
    write: str  # template of a write PV
    names: Mapping[str, str]  # canonical parameter -> the IOC's name (default: the canonical name)
    readbacks: Mapping[str, str]  # canonical parameter -> read template overriding ``read``
    absent: frozenset[str]  # parameters this IOC does not have
    status: StatusSpec
    labels: Mapping[str, Mapping[str, tuple[str, ...]]]  # param -> word -> accepted labels (case-insensitive)
    units: str  # egu | fixed
    fixed_units: Mapping[str, str]  # fixed: "IMon.hv" -> unit as the IOC's documentation gives it
    signed: frozenset[str]  # parameters written with the board's sign
    negative_slots: frozenset[int]  # boards of negative polarity (signed parameters are written negative)
    clear: str | None  # template of the crate-level clear PV ({crate} {system}); None: the IOC has none

    # ------------------------------------------------------------------ names
    def prefix(self, system: str, slot: int, ch: int) -> str:
        return self.channel.format(system=system, slot=slot, ch=ch)

    def ioc_name(self, param: str) -> str:
        return self.names.get(param, param)

    def read_pv(self, system: str, slot: int, ch: int, param: str) -> str:
        """The PV this IOC reads ``param`` of a channel from."""
        template = self.readbacks.get(param, self.read)
        return self._fill(template, system, slot, ch, param)

    def write_pv(self, system: str, slot: int, ch: int, param: str) -> str:
        """The PV this IOC takes writes of ``param`` on."""
        return self._fill(self.write, system, slot, ch, param)

    def _fill(self, template: str, system: str, slot: int, ch: int, param: str) -> str:
        prefix = self.prefix(system, slot, ch)
        return template.format(prefix=prefix, name=self.ioc_name(param), system=system, slot=slot, ch=ch)

    def status_pvs(self, system: str, slot: int, ch: int) -> dict[str, str]:
        """Status PVs of a channel: ``{"Status": pv}`` (word, highest) or ``{"Status.<BIT>": pv}`` (bits)."""
        if self.status.form == "bits":
            prefix = self.prefix(system, slot, ch)
            return {
                f"Status.{bit}": name.format(prefix=prefix, system=system, slot=slot, ch=ch)
                for bit, name in self.status.bits.items()
            }
        return {"Status": self.read_pv(system, slot, ch, "Status")}

    def clear_pv(self, system: str) -> str | None:
        if self.clear is None:
            return None
        return self.clear.format(crate=self.crate.format(system=system), system=system)

    # ------------------------------------------------------------------ labels, sign
    def aliases(self, param: str, word: str) -> tuple[str, ...]:
        """The labels accepted for ``word`` of ``param`` (the word itself first)."""
        extra = self.labels.get(param, {}).get(word, ())
        return (word, *[a for a in extra if a.lower() != word.lower()])

    def find(self, param: str, labels: tuple[str, ...], word: str) -> int | None:
        """Index of ``word`` (or one of its aliases) in the IOC's ``labels``; None when absent or ambiguous."""
        lowered = [label.lower() for label in labels]
        hits = {i for alias in self.aliases(param, word) for i, lab in enumerate(lowered) if lab == alias.lower()}
        return hits.pop() if len(hits) == 1 else None

    def word(self, param: str, label: str | None) -> str | None:
        """The service's word for the IOC's ``label`` of ``param`` (None when it is none of them)."""
        if label is None:
            return None
        for word in ENUM_WORDS.get(param, ()):
            if any(label.lower() == alias.lower() for alias in self.aliases(param, word)):
                return word
        return None

    def polarity(self, slot: int) -> int:
        """-1 for a board written with negative setpoints, else +1."""
        return -1 if slot in self.negative_slots else 1

    @property
    def partial_status(self) -> bool:
        """True when the IOC gives less than every Status bit (highest-bit form)."""
        return self.status.form == "highest"


# ---------------------------------------------------------------------------------------------- loading
def shipped() -> list[str]:
    """Names of the flavours shipped with caen-fsm."""
    folder = resources.files(__package__).joinpath("flavours")
    return sorted(p.name[: -len(".yml")] for p in folder.iterdir() if p.name.endswith(".yml"))


def _shipped_raw(name: str) -> dict[str, Any]:
    if name not in shipped():
        raise ConfigError(f"flavour: unknown flavour {name!r}; shipped: {', '.join(shipped())}")
    text = resources.files(__package__).joinpath("flavours", f"{name}.yml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"flavour {name}: the file is not a mapping")
    return dict(raw)


def _merge(base: dict[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in more.items():
        if key == "base":
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_flavour(raw: Any = None) -> Flavour:
    """The flavour a config's ``flavour:`` key names (None: the default), or raise ConfigError.

    ``raw`` is a shipped flavour's name, or a mapping: with ``base: <shipped name>`` it overrides that
    flavour key by key (nested mappings merged), without ``base`` it is a complete flavour of its own."""
    if raw is None:
        raw = DEFAULT_FLAVOUR
    if isinstance(raw, str):
        return parse_flavour(_shipped_raw(raw))
    if not isinstance(raw, Mapping):
        raise ConfigError(f"flavour: a shipped flavour's name or a mapping, got {raw!r}")
    if "base" in raw:
        if not isinstance(raw["base"], str):
            raise ConfigError("flavour.base: the name of a shipped flavour")
        merged = _merge(_shipped_raw(raw["base"]), raw)
        merged.setdefault("name", raw["base"])
        if "name" not in raw:
            merged["name"] = f"{raw['base']}+site"
        return parse_flavour(merged)
    return parse_flavour(dict(raw))


def _text(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{key}: a non-empty string, got {value!r}")
    return value


def _check_template(template: str, where: str, allowed: set[str]) -> None:
    import string

    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigError(f"{where}: bad template {template!r} ({exc})") from None
    unknown = fields - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown placeholder(s) {sorted(unknown)} in {template!r}; use {sorted(allowed)}")


def parse_flavour(raw: Mapping[str, Any]) -> Flavour:
    """Validate a flavour mapping (a shipped file's content or a site's own) into a :class:`Flavour`."""
    name = _text(raw, "name", "flavour")
    where = f"flavour {name}"
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    channel = _text(raw, "channel", where)
    _check_template(channel, f"{where}.channel", {"system", "slot", "ch"})
    crate = _text(raw, "crate", where, "{system}")
    _check_template(crate, f"{where}.crate", {"system"})
    param_fields = {"prefix", "name", "system", "slot", "ch"}
    read = _text(raw, "read", where, "{prefix}:{name}")
    write = _text(raw, "write", where, read)
    for key, tpl in (("read", read), ("write", write)):
        _check_template(tpl, f"{where}.{key}", param_fields)
    names = _str_map(raw.get("names"), f"{where}.names")
    readbacks = _str_map(raw.get("readbacks"), f"{where}.readbacks")
    for param, tpl in readbacks.items():
        _check_template(tpl, f"{where}.readbacks.{param}", param_fields)
    absent = raw.get("absent") or []
    if not isinstance(absent, list) or not all(isinstance(a, str) for a in absent):
        raise ConfigError(f"{where}.absent: a list of parameter names")
    if {"Pw", "Status", "VMon", "IMon", "V0Set", "I0Set"} & set(absent):
        raise ConfigError(f"{where}.absent: Pw, Status, VMon, IMon, V0Set and I0Set are needed by the service")
    status = _status(raw.get("status") or {"form": "word"}, f"{where}.status", param_fields)
    labels = _labels(raw.get("labels") or {}, f"{where}.labels")
    units_raw = raw.get("units") or {"source": "egu"}
    if not isinstance(units_raw, Mapping) or units_raw.get("source") not in UNIT_SOURCES:
        raise ConfigError(f"{where}.units: {{source: egu}} or {{source: fixed, fixed: {{IMon.hv: uA, ...}}}}")
    fixed = _str_map(units_raw.get("fixed"), f"{where}.units.fixed")
    if units_raw["source"] == "fixed":
        for param, kinds in SERVICE_UNITS.items():
            for kind, unit in kinds.items():
                given = fixed.get(f"{param}.{kind.value}", fixed.get(param))
                if given is None:
                    raise ConfigError(f"{where}.units.fixed: the unit of {param}.{kind.value} is missing")
                if given.strip() not in UNIT_SPELLINGS[unit]:
                    raise ConfigError(
                        f"{where}.units.fixed: {param}.{kind.value} in {given!r}; the service works in {unit} "
                        "and does not rescale"
                    )
    sign = raw.get("sign") or {}
    if not isinstance(sign, Mapping) or set(sign) - {"signed", "negative_slots"}:
        raise ConfigError(f"{where}.sign: {{signed: [V0Set], negative_slots: [12, 13]}}")
    signed = sign.get("signed") or []
    slots = sign.get("negative_slots") or []
    if not isinstance(signed, list) or not all(p in ("V0Set",) for p in signed):
        raise ConfigError(f"{where}.sign.signed: only V0Set can be signed, got {signed!r}")
    if not isinstance(slots, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in slots):
        raise ConfigError(f"{where}.sign.negative_slots: a list of slot numbers, got {slots!r}")
    if slots and not signed:
        raise ConfigError(f"{where}.sign: negative_slots given but no parameter is signed (sign.signed)")
    clear = raw.get("clear", "{crate}:ClearAlarm")
    if clear is not None:
        if not isinstance(clear, str) or not clear:
            raise ConfigError(f"{where}.clear: a PV template or null (the IOC has no crate-level clear)")
        _check_template(clear, f"{where}.clear", {"crate", "system"})
    return Flavour(
        name=name,
        description=str(raw.get("description", "")),
        channel=channel,
        crate=crate,
        read=read,
        write=write,
        names=names,
        readbacks=readbacks,
        absent=frozenset(absent),
        status=status,
        labels=labels,
        units=units_raw["source"],
        fixed_units=fixed,
        signed=frozenset(signed),
        negative_slots=frozenset(slots),
        clear=clear,
    )


def _str_map(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    _no_bool_keys(raw, where)
    if not isinstance(raw, Mapping) or not all(isinstance(v, str) and v for v in raw.values()):
        raise ConfigError(f"{where}: a mapping of names to strings")
    return {str(k): v for k, v in raw.items()}


def _status(raw: Any, where: str, fields: set[str]) -> StatusSpec:
    if not isinstance(raw, Mapping) or raw.get("form") not in STATUS_FORMS:
        raise ConfigError(f"{where}.form: one of {', '.join(STATUS_FORMS)}")
    form = raw["form"]
    if form == "bits":
        bits = _str_map(raw.get("bits"), f"{where}.bits")
        unknown = sorted(set(bits) - set(BIT_NUMBERS))
        if unknown:
            raise ConfigError(f"{where}.bits: unknown bit(s) {', '.join(unknown)}; known {', '.join(BIT_NUMBERS)}")
        missing = sorted(set(BIT_NUMBERS) - set(bits))
        if missing:  # a bit nobody reads would be guessed as 0: a safety-relevant guess (a trip unseen)
            raise ConfigError(f"{where}.bits: no PV for bit(s) {', '.join(missing)}")
        for bit, tpl in bits.items():
            _check_template(tpl, f"{where}.bits.{bit}", fields)
        return StatusSpec("bits", bits=bits)
    offset = raw.get("offset", 1)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ConfigError(f"{where}.offset: a non-negative integer")
    return StatusSpec(form, offset=offset)


def _no_bool_keys(raw: Any, where: str) -> None:
    if isinstance(raw, Mapping) and any(isinstance(k, bool) for k in raw):
        raise ConfigError(f'{where}: a key read as true/false: quote ON/OFF/Yes/No/On/Off ("ON":) in YAML')


def _labels(raw: Any, where: str) -> dict[str, dict[str, tuple[str, ...]]]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: param -> word -> [labels]")
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for param, words in raw.items():
        if param not in ENUM_WORDS:
            raise ConfigError(f"{where}.{param}: not an enum parameter ({', '.join(ENUM_WORDS)})")
        if not isinstance(words, Mapping):
            raise ConfigError(f"{where}.{param}: word -> [labels]")
        _no_bool_keys(words, f"{where}.{param}")
        out[param] = {}
        for word, aliases in words.items():
            if word not in ENUM_WORDS[param]:
                raise ConfigError(f"{where}.{param}.{word}: one of {', '.join(ENUM_WORDS[param])}")
            if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
                raise ConfigError(f"{where}.{param}.{word}: a list of labels")
            out[param][word] = tuple(aliases)
    return out
