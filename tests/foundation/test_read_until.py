"""Waiting for a child's readiness banner: what the simulators' and the stack's start-up checks rely on."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from trackerdcs_devstack.supervisor import read_lines_until, read_until


def child(script: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)


def test_a_banner_printed_in_one_burst_with_the_marker_is_found_at_once():
    # several lines in a single write, then the child stays alive and silent: every line is already in
    # the reader's buffer, none is left waiting on the pipe
    proc = child("import sys, time; sys.stdout.write('one\\ntwo\\nthree\\nstack is up\\nmore\\n'); "
                 "sys.stdout.flush(); time.sleep(30)")  # fmt: skip
    try:
        t0 = time.monotonic()
        lines = read_lines_until(proc, "stack is up", timeout=10)
        assert time.monotonic() - t0 < 5
        assert lines == ["one\n", "two\n", "three\n", "stack is up\n"]
    finally:
        proc.kill()
        proc.wait()


def test_the_marker_line_is_returned():
    proc = child("print('starting'); print('READY {\"port\": 5}', flush=True); import time; time.sleep(30)")
    try:
        assert read_until(proc, "READY ", timeout=10) == 'READY {"port": 5}\n'
    finally:
        proc.kill()
        proc.wait()


def test_a_silent_child_does_not_block_the_caller_past_the_timeout():
    proc = child("print('booting', flush=True); import time; time.sleep(30)")
    try:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"not seen within 1\.0 s; output: booting"):
            read_until(proc, "ready", timeout=1.0)
        assert time.monotonic() - t0 < 3
    finally:
        proc.kill()
        proc.wait()


def test_a_child_that_exits_before_the_marker_is_reported_with_its_output():
    proc = child("print('config error: no such file', flush=True)")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="not seen before the output ended; output: config error: no such file"):
        read_until(proc, "ready", timeout=20)
    assert time.monotonic() - t0 < 10
    proc.wait()


def test_drain_keeps_a_chatty_child_from_filling_its_pipe():
    # 1 MB after the marker is far more than a pipe holds (64 kB): without draining the child would block
    proc = child("import sys; print('ready', flush=True); sys.stdout.write('x' * 1_000_000 + '\\n'); "
                 "sys.stdout.flush(); print('done', file=sys.stderr)")  # fmt: skip
    read_lines_until(proc, "ready", timeout=10, drain=True)
    assert proc.wait(timeout=10) == 0
