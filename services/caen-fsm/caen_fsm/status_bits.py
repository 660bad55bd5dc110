"""Decoding of the CAEN channel Status bitfield and derivation of the channel state (pure functions).

Bit meanings (SY4527/SY5527 EPICS server): 0 ON, 1 RUP, 2 RDW, 3 OVC, 4 OVV, 5 UNV, 6 EXTTRIP, 7 MAXV,
8 EXT_DIS, 9 INTTRIP, 10 CALERR, 11 UNPLUGGED, 13 OVP, 14 PWFAIL, 15 TEMPERR. States are derived from
individual bits, never from the magnitude of the word.
"""

from __future__ import annotations

from enum import IntFlag

from .states import ChannelState


class StatusBit(IntFlag):
    """One bit of the channel Status word."""

    ON = 1 << 0
    RUP = 1 << 1
    RDW = 1 << 2
    OVC = 1 << 3
    OVV = 1 << 4
    UNV = 1 << 5
    EXTTRIP = 1 << 6
    MAXV = 1 << 7
    EXT_DIS = 1 << 8
    INTTRIP = 1 << 9
    CALERR = 1 << 10
    UNPLUGGED = 1 << 11
    OVP = 1 << 13
    PWFAIL = 1 << 14
    TEMPERR = 1 << 15


#: Latched trip conditions (cleared only by ClearAlarm).
TRIP_BITS = StatusBit.INTTRIP | StatusBit.EXTTRIP
#: Hardware faults that make the channel unusable.
ERROR_BITS = StatusBit.CALERR | StatusBit.OVP | StatusBit.PWFAIL | StatusBit.TEMPERR


def decode(status: int | None) -> list[str]:
    """Names of the bits set in ``status``, lowest bit first; unknown bits appear as ``BIT<n>``."""
    if status is None:
        return []
    word = int(status)
    names = []
    for n in range(32):
        if word & (1 << n):
            try:
                names.append(StatusBit(1 << n).name or f"BIT{n}")
            except ValueError:
                names.append(f"BIT{n}")
    return names


#: Bits that say whether the output is on or moving (ON, RUP, RDW).
OUTPUT_BITS = StatusBit.ON | StatusBit.RUP | StatusBit.RDW


def channel_state(status: int | None, connected: bool, partial: bool = False) -> ChannelState:
    """The state of a channel given its Status word and whether all its PVs are connected.

    ``partial``: the word holds only the highest set bit (an IOC giving the Status as a highest-bit enum).
    Then a condition bit (OVC, OVV, UNV, MAXV, EXT_DIS) hides whether the output is on or ramping: the state
    is ERROR (no power-on from it, switching off allowed), never a guessed ON or OFF. A trip or fault above it
    hides nothing more than the raw word would decide anyway, except that a trip hidden under a higher fault
    bit reads ERROR, not TRIPPED."""
    if not connected or status is None:
        return ChannelState.DISCONNECTED
    word = int(status)
    if partial and word and not word & (OUTPUT_BITS | TRIP_BITS | ERROR_BITS | StatusBit.UNPLUGGED):
        return ChannelState.ERROR
    if word & StatusBit.UNPLUGGED:
        return ChannelState.UNPLUGGED
    if word & TRIP_BITS:
        return ChannelState.TRIPPED
    if word & ERROR_BITS:
        return ChannelState.ERROR
    if word & StatusBit.RUP:
        return ChannelState.RAMP_UP
    if word & StatusBit.RDW:
        return ChannelState.RAMP_DOWN
    if word & StatusBit.ON:
        return ChannelState.ON
    return ChannelState.OFF
