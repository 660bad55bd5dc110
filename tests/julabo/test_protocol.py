"""The Julabo line protocol from bytes: what the service sends and how it reads what comes back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from julabo_fsm.protocol import (
    MODELS,
    ProtocolError,
    Reading,
    Setting,
    StatusCategory,
    encode,
    expects_reply,
    format_status,
    model_map,
    parse_float,
    parse_int,
    parse_reading,
    parse_status,
    parse_version,
    strip_flow_control,
)


def test_queries_and_settings_are_encoded_as_the_chiller_expects() -> None:
    assert encode("IN_PV_00") == b"IN_PV_00\r"
    assert encode("OUT_SP_00", 20.5) == b"OUT_SP_00 20.50\r"
    assert encode("OUT_SP_01", -25.5) == b"OUT_SP_01 -25.50\r"
    assert encode("OUT_MODE_05", 1) == b"OUT_MODE_05 1\r"
    assert encode("STATUS") == b"STATUS\r"


@pytest.mark.parametrize("bad", ["IN_PV_00\rOUT_MODE_05 1", "in_pv_00", "", "IN PV 00"])
def test_a_malformed_command_name_is_never_sent(bad: str) -> None:
    with pytest.raises(ValueError):
        encode(bad)


def test_non_finite_values_are_never_sent() -> None:
    with pytest.raises(ValueError):
        encode("OUT_SP_00", float("nan"))


def test_only_out_commands_go_without_reply() -> None:
    assert not expects_reply("OUT_SP_00")
    assert expects_reply("IN_PV_00") and expects_reply("STATUS") and expects_reply("VERSION")


def test_temperatures_parse_with_padding_and_sign() -> None:
    assert parse_float(b" 21.35\r\n") == 21.35
    assert parse_float(b"-25.00\r\n") == -25.0
    assert parse_float(b" 100.0\r\n") == 100.0


def test_an_absent_external_pt100_reads_as_none() -> None:
    assert parse_float(b"---.--\r\n") is None
    assert parse_reading(Reading.EXTERNAL_TEMP, b"---.--\r\n") is None


def test_xon_xoff_bytes_anywhere_in_a_reply_are_ignored() -> None:
    assert strip_flow_control(b"\x1121.\x13\x1135\r\n") == b"21.35\r\n"
    assert parse_float(b"\x11 21.\x13\x1135\r\n") == 21.35
    assert parse_status(b"\x1103 REMOTE\x13 START\r\n").code == 3


@pytest.mark.parametrize(
    "raw",
    [b"21.35", b"21.\xff5\r\n", b"abc\r\n", b"\r\n", b"2 1.35\r\n", b"21.35\x00\r\n"],
)
def test_garbled_or_truncated_numbers_are_refused_not_guessed(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_float(raw)


def test_mode_replies_are_range_checked() -> None:
    assert parse_reading(Reading.ACTIVE_SETPOINT, b"2\r\n") == 2
    assert parse_int(b"3\r\n") == 3
    with pytest.raises(ProtocolError):
        parse_reading(Reading.ACTIVE_SETPOINT, b"3\r\n")
    with pytest.raises(ProtocolError):
        parse_reading(Reading.RUNNING, b"7\r\n")


@pytest.mark.parametrize(
    ("raw", "code", "category", "remote", "running"),
    [
        (b"00 MANUAL STOP\r\n", 0, StatusCategory.STOPPED, False, False),
        (b"01 MANUAL START\r\n", 1, StatusCategory.RUNNING, False, True),
        (b"02 REMOTE STOP\r\n", 2, StatusCategory.STOPPED, True, False),
        (b"03 REMOTE START\r\n", 3, StatusCategory.RUNNING, True, True),
        (b"-01 LOW LEVEL ALARM\r\n", -1, StatusCategory.ALARM, None, None),
        (b"-03 EXCESS TEMPERATURE WARNING\r\n", -3, StatusCategory.ALARM, None, None),
        (b"-14 EXCESS TEMPERATURE PROTECTOR ALARM\r\n", -14, StatusCategory.ALARM, None, None),
        (b"-08 INVALID COMMAND\r\n", -8, StatusCategory.COMMAND_ERROR, None, None),
        (b"-10 VALUE TOO SMALL\r\n", -10, StatusCategory.COMMAND_ERROR, None, None),
        (b"-11 VALUE TOO LARGE\r\n", -11, StatusCategory.COMMAND_ERROR, None, None),
    ],
)
def test_status_lines_are_keyed_on_the_sign(raw, code, category, remote, running) -> None:
    report = parse_status(raw)
    assert (report.code, report.category, report.remote, report.running) == (code, category, remote, running)


@pytest.mark.parametrize("raw", [b"REMOTE START\r\n", b"03\r\n", b"07 SOMETHING\r\n", b"0\xff REMOTE\r\n"])
def test_unreadable_status_lines_are_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_status(raw)


@given(st.sampled_from([0, 1, 2, 3, -1, -3, -8, -10, -11, -14]))
def test_status_lines_round_trip(code: int) -> None:
    assert parse_status(format_status(code).encode() + b"\r\n").code == code


def test_version_identifies_the_chiller() -> None:
    assert parse_version(b"JULABO HIGHTECH FL HL/SL VERSION 4.0\r\n").startswith("JULABO")
    with pytest.raises(ProtocolError):
        parse_version(b" 21.35\r\n")


def test_each_model_has_its_own_command_map() -> None:
    hightech = model_map("HighTech")
    assert hightech.read_command(Reading.BATH_TEMP) == "IN_PV_00"
    assert hightech.write_command(Setting.PUMP_STAGE) == "OUT_SP_07"
    corio = model_map("corio")
    assert not corio.can_write(Setting.PUMP_STAGE)
    with pytest.raises(KeyError):
        corio.write_command(Setting.PUMP_STAGE)
    with pytest.raises(ValueError, match="known"):
        model_map("presto-9000")
    assert set(MODELS) >= {"hightech", "corio"}
