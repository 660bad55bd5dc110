"""Which Ph2_ACF log lines the bridge understands."""

from __future__ import annotations

from ph2acf_bridge.logparse import ErrorLine, Progress, ResultFile, RunStarted, parse_line


def test_coloured_progress_line_gives_the_percentage() -> None:
    assert parse_line("\x1b[1m\x1b[32m>>> Progress: 42.5% <<<\x1b[0m") == [Progress(42.5)]


def test_progress_is_clamped_to_100() -> None:
    assert parse_line(">>> Progress: 250% <<<") == [Progress(100.0)]


def test_outer_tracker_run_start_and_result_file() -> None:
    assert parse_line("|I| Run 17 started") == [RunStarted(17)]
    assert parse_line("Closing result file: Results/Run_17/Results.root") == [
        ResultFile("Results/Run_17/Results.root", 17)
    ]


def test_inner_tracker_result_file_name_gives_the_run_number() -> None:
    assert parse_line("Saving Results/Run000042_SCurve.root") == [ResultFile("Results/Run000042_SCurve.root", 42)]


def test_crash_lines_are_errors() -> None:
    (event,) = parse_line("terminate called after throwing an instance of 'std::runtime_error'")
    assert isinstance(event, ErrorLine)
    assert parse_line("ERROR: calibration 'x' not recognised")[0] == ErrorLine("ERROR: calibration 'x' not recognised")


def test_ordinary_lines_carry_nothing() -> None:
    assert parse_line("@@@ Configuring chips @@@") == []
    assert parse_line("") == []
