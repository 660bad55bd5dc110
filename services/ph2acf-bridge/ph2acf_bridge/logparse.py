"""Recognise the Ph2_ACF log lines the bridge acts on (pure, no I/O).

* progress of ``CMSITminiDAQ``: ``>>>> Progress :  42.5% <<<<`` (2019-2022 builds) and ``>>> Progress: 42.5% <<<``
  (newer builds, with colour and cursor-up codes, which are stripped);
* ``Run 12 started`` (outer-tracker ``runCalibration``);
* ``Closing result file: Results/Run_12/Results.root`` (outer tracker) and result files named
  ``Results/Run000012_PixelAlive.root`` (inner tracker) anywhere in a line;
* lines carrying ``ERROR``/``FATAL``/``terminate called`` (kept as the run's error message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROGRESS = re.compile(r">>>>?\s*Progress\s*:\s*([0-9]+(?:\.[0-9]*)?)\s*%\s*<<<<?")
RUN_STARTED = re.compile(r"\bRun\s+(\d+)\s+started\b")
CLOSING = re.compile(r"Closing result file:\s*(\S+\.root)")
IT_RESULT = re.compile(r"(\S*Run(\d{6})_([A-Za-z0-9]+)\.root)")
ERROR = re.compile(r"\b(ERROR|FATAL|terminate called|Segmentation fault)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Progress:
    percent: float


@dataclass(frozen=True)
class RunStarted:
    run: int


@dataclass(frozen=True)
class ResultFile:
    path: str
    run: int | None = None


@dataclass(frozen=True)
class ErrorLine:
    message: str


LogEvent = Progress | RunStarted | ResultFile | ErrorLine


def strip_ansi(line: str) -> str:
    """``line`` without terminal colour codes and surrounding whitespace."""
    return ANSI.sub("", line).strip()


def parse_line(line: str) -> list[LogEvent]:
    """The events one log line carries (usually none or one)."""
    text = strip_ansi(line)
    events: list[LogEvent] = []
    if m := PROGRESS.search(text):
        events.append(Progress(min(100.0, max(0.0, float(m.group(1))))))
    if m := RUN_STARTED.search(text):
        events.append(RunStarted(int(m.group(1))))
    if m := CLOSING.search(text):
        run = re.search(r"Run_?(\d+)", m.group(1))
        events.append(ResultFile(m.group(1), int(run.group(1)) if run else None))
    elif m := IT_RESULT.search(text):
        events.append(ResultFile(m.group(1), int(m.group(2))))
    if ERROR.search(text):
        events.append(ErrorLine(text[:500]))
    return events
