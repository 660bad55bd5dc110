"""Enum PVs as the IOC defines them: a value is an index into the IOC's own label list (pure, no I/O).

CAEN IOCs agree on the meaning of the words (Pw Off/On, PDwn Kill/Ramp, ImRange High/Low) but not on their
order or case (``KILL``/``Kill``, ``OFF``/``Off``). The service therefore never writes an index it chose
itself: it learns each enum PV's labels from the Channel Access control information when the PV connects,
writes the index of the wanted label *in the IOC's list* and decodes read-backs with the same list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnumReading:
    """One update of an enum PV: the index and the labels the IOC gave with it."""

    index: int
    labels: tuple[str, ...]

    @property
    def label(self) -> str | None:
        """The label of ``index`` (None when the IOC sent an index outside its own list)."""
        return self.labels[self.index] if 0 <= self.index < len(self.labels) else None


@dataclass(frozen=True)
class UnitsReading:
    """A number PV's engineering units (EGU) as the IOC gave them, read once each time the PV connects."""

    units: str


class LabelError(ValueError):
    """A label the IOC does not offer (the message is meant for the operator)."""


def find_label(labels: tuple[str, ...], wanted: str) -> int | None:
    """Index of ``wanted`` in ``labels`` (exact first, then case-insensitive), or None."""
    if wanted in labels:
        return labels.index(wanted)
    lowered = [label.lower() for label in labels]
    if lowered.count(wanted.lower()) == 1:
        return lowered.index(wanted.lower())
    return None


def index_of(pv: str, labels: tuple[str, ...] | None, wanted: str) -> int:
    """The index to put on ``pv`` for ``wanted``, or raise :class:`LabelError`."""
    if labels is None:
        raise LabelError(f"{pv}: enum labels not known yet (the PV has not sent its control information)")
    index = find_label(labels, wanted)
    if index is None:
        raise LabelError(f"{pv}: the IOC offers {', '.join(labels) or 'no labels'}; '{wanted}' is not one of them")
    return index


def same_label(a: str | None, b: str) -> bool:
    """True when label ``a`` means ``b`` (case-insensitive)."""
    return a is not None and a.lower() == b.lower()
