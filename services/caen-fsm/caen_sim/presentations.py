"""How public EPICS IOCs for CAEN mainframes present the same crate (pure data, no EPICS).

The crate model (:mod:`caen_sim.model`) is the same for all; an IOC differs in record names, in how it gives the
channel Status, in its enum labels, in read-back records separate from the written ones, and in the crate-level
clear. Written from the IOCs' public descriptions on its own (the simulator shares nothing with caen-fsm): a
service flavour that disagrees with the IOC it claims to speak to fails against this simulator.

Presentations: ``trackerdcs`` (the SY4527 embedded server layout), ``halla``, ``cls-hvcaenx527``,
``slac-caenhvasyn``, ``jlab-clas12``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The manual's words of each enum parameter, in the model's value order (model value 0, 1).
ENUM_WORDS: dict[str, tuple[str, str]] = {
    "Pw": ("Off", "On"),
    "PDwn": ("Kill", "Ramp"),
    "ImRange": ("High", "Low"),
    "ClearAlarm": ("No", "Yes"),
}
#: Parameters that only read (no write record).
READ_ONLY = ("VMon", "IMon", "Status", "Temp")

# Status bit numbers of the crate (bit 12 unused)
STATUS_BITS = {
    "ON": 0, "RUP": 1, "RDW": 2, "OVC": 3, "OVV": 4, "UNV": 5, "EXTTRIP": 6, "MAXV": 7, "EXT_DIS": 8,
    "INTTRIP": 9, "CALERR": 10, "UNPLUGGED": 11, "OVP": 13, "PWFAIL": 14, "TEMPERR": 15,
}  # fmt: skip
#: The CLS highest-bit mbbi states: value = highest set bit + 1 (labels as such an IOC might show them).
HIGHEST_LABELS = (
    "Off", "On", "Ramping up", "Ramping down", "Over-current", "Over-voltage", "Under-voltage", "External trip",
    "Max V", "External disable", "Internal trip", "Calibration error", "Unplugged", "Bit 12", "Over-voltage prot",
    "Power fail",
)  # fmt: skip


@dataclass(frozen=True)
class Presentation:
    """One IOC's record layout for a channel parameter ``param`` (CAEN's name) of ``slot``/``ch``."""

    name: str
    prefix: str  # format with system, slot, ch
    crate_clear: str | None  # format with system
    aliases: dict[str, str] = field(default_factory=dict)  # CAEN name -> record name part
    write_suffix: str = ""
    read_suffix: str = ""  # "" with write_suffix "": one record read and written
    read_only_plain: bool = True  # read-only parameters have no suffix
    status: str = "word"  # word | bits | highest
    status_bits: dict[str, str] = field(default_factory=dict)  # bits: bit -> record name part
    upper_labels: tuple[str, ...] = ()  # enum parameters whose labels are upper case
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)  # param -> (index 0, index 1) labels
    absent: tuple[str, ...] = ()
    negative_polarity_ok: bool = False  # the IOC takes signed V0Set on negative boards

    def base(self, system: str, slot: int, ch: int) -> str:
        return self.prefix.format(system=system, slot=slot, ch=ch)

    def part(self, param: str) -> str:
        return self.aliases.get(param, param)

    def write_name(self, system: str, slot: int, ch: int, param: str) -> str:
        return f"{self.base(system, slot, ch)}:{self.part(param)}{self.write_suffix}"

    def read_name(self, system: str, slot: int, ch: int, param: str, writable: bool) -> str:
        if not writable and self.read_only_plain:
            return f"{self.base(system, slot, ch)}:{self.part(param)}"
        return f"{self.base(system, slot, ch)}:{self.part(param)}{self.read_suffix}"

    @property
    def separate_readbacks(self) -> bool:
        return self.read_suffix != self.write_suffix

    def words(self) -> dict[str, tuple[str, str]]:
        """This IOC's spelling of every enum parameter's words, in the model's value order (0, 1)."""
        words = dict(ENUM_WORDS)
        words.update(self.labels)
        for param in self.upper_labels:
            words[param] = (words[param][0].upper(), words[param][1].upper())
        return words

    def clear_name(self, system: str) -> str | None:
        return None if self.crate_clear is None else self.crate_clear.format(system=system)


_LOWER = {
    "V0Set": "v0set", "I0Set": "i0set", "RUp": "rampup", "RDWn": "rampdn", "Trip": "trip", "Pw": "pwonoff",
    "TripInt": "tripint", "TripExt": "tripext", "VMon": "vmon", "IMon": "imon", "UNVThr": "unvthr",
    "OVVThr": "ovvthr", "RUpTime": "ruptime", "RDwTime": "rdwtime", "Temp": "temp",
}  # fmt: skip

PRESENTATIONS: dict[str, Presentation] = {
    "trackerdcs": Presentation("trackerdcs", "{system}:{slot:02d}:{ch:03d}", "{system}:ClearAlarm"),
    "halla": Presentation(
        "halla", "{system}:{slot:02d}:{ch:03d}", "{system}:ClearAlarm", read_suffix="r", negative_polarity_ok=True
    ),
    "cls-hvcaenx527": Presentation(
        "cls-hvcaenx527",
        "{system}{slot:02d}:{ch:03d}",
        None,
        aliases={**_LOWER, "PDwn": "pwdnmode", "Status": "status"},
        read_suffix=":fbk",
        status="highest",
        labels={"PDwn": ("KILL", "Ramp")},
        absent=("ImRange",),
    ),
    "slac-caenhvasyn": Presentation(
        "slac-caenhvasyn",
        "{system}:S{slot:02d}:C{ch:02d}",
        "{system}:C:CLRALARM",
        aliases={p: p.upper() for p in (*_LOWER, "PDwn", "ImRange")} | {"Pw": "PW"},
        write_suffix=":St",
        read_suffix=":Rd",
        read_only_plain=False,
        status="bits",
        status_bits={
            "ON": "STATUS_ON",
            "RUP": "STATUS_RU",
            "RDW": "STATUS_RD",
            "OVC": "STATUS_OC",
            "OVV": "STATUS_OV",
            "UNV": "STATUS_UV",
            "EXTTRIP": "STATUS_ET",
            "MAXV": "STATUS_MV",
            "EXT_DIS": "STATUS_ED",
            "INTTRIP": "STATUS_IT",
            "CALERR": "STATUS_CE",
            "UNPLUGGED": "STATUS_UN",
            "OVP": "STATUS_OVP",
            "PWFAIL": "STATUS_PF",
            "TEMPERR": "STATUS_TE",
        },
        labels={"Pw": ("Disabled", "Enabled")},  # the crate's own strings (one board's spelling)
    ),
    "jlab-clas12": Presentation(
        "jlab-clas12",
        "B_HW_{system}_Sl{slot:02d}_Ch{ch:02d}",
        "B_HW_{system}:ClearAlarm",
        aliases={**_LOWER, "PDwn": "pdwn", "ImRange": "range", "Status": "stat"},
        upper_labels=("Pw",),
    ),
}
