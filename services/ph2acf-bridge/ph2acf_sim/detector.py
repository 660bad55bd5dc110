"""The chips a Ph2_ACF hardware-description XML declares (BeBoard > OpticalGroup > Hybrid > chip)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

IT_CHIP_TAGS = ("RD53", "RD53A", "RD53B", "CROC")
OT_CHIP_TAGS = ("CBC", "SSA", "MPA", "SSA2", "MPA2", "CIC", "CIC2")


@dataclass(frozen=True)
class ChipId:
    """One readout chip's address in the detector tree."""

    board: int
    optical_group: int
    hybrid: int
    chip: int
    kind: str

    @property
    def key(self) -> str:
        """Compact name, e.g. ``B0_O0_H1_C3``."""
        return f"B{self.board}_O{self.optical_group}_H{self.hybrid}_C{self.chip}"


class DetectorError(ValueError):
    """The XML cannot be used (missing, malformed or without chips)."""


def _id(element: ET.Element) -> int:
    try:
        return int(element.get("Id", "0"))
    except ValueError:
        raise DetectorError(f"<{element.tag}> has a non-integer Id {element.get('Id')!r}") from None


def parse_chips(xml_text: str) -> list[ChipId]:
    """Every chip in the hardware description, in document order."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise DetectorError(f"XML parse error: {exc}") from None
    chips: list[ChipId] = []
    for board in root.iter("BeBoard"):
        for og in board.iter("OpticalGroup"):
            for hybrid in og.iter("Hybrid"):
                for child in hybrid:
                    if child.tag in IT_CHIP_TAGS + OT_CHIP_TAGS:
                        chips.append(ChipId(_id(board), _id(og), _id(hybrid), _id(child), child.tag))
    if not chips:
        raise DetectorError("the hardware description declares no chips (BeBoard/OpticalGroup/Hybrid/<chip>)")
    return chips


def load_chips(path: str | Path) -> tuple[str, list[ChipId]]:
    """Read ``path`` and return its text and chips."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DetectorError(f"cannot read configuration file {p}: {exc.strerror}") from None
    return text, parse_chips(text)


def example_xml(flavour: str, hybrids: int = 1, chips: int = 4) -> str:
    """A small hardware description for the simulator (one board, one optical group)."""
    tag = "RD53B" if flavour == "it" else "CBC"
    body = []
    for h in range(hybrids):
        chip_lines = "\n".join(
            f'          <{tag} Id="{c}" Lane="{c}" configfile="chip_{h}_{c}.txt"/>' for c in range(chips)
        )
        body.append(f'        <Hybrid Id="{h}" Status="1">\n{chip_lines}\n        </Hybrid>')
    hybrid_text = "\n".join(body)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<HwDescription>\n'
        '  <BeBoard Id="0" boardType="RD53" eventType="VR">\n'
        '    <connection id="board" uri="chtcp-2.0://localhost:10203?target=192.168.1.80:50001" '
        'address_table="file://address_map.xml"/>\n'
        f'      <OpticalGroup Id="0" FMCId="L12">\n{hybrid_text}\n      </OpticalGroup>\n'
        '  </BeBoard>\n  <Settings>\n    <Setting name="nEvents">100</Setting>\n  </Settings>\n</HwDescription>\n'
    )
