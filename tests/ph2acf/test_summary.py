"""The per-chip summary finds exactly the dead and noisy channels the simulator injected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ph2acf_bridge.summary import SummaryError, flag_channels, summarise
from ph2acf_sim.detector import example_xml, parse_chips
from ph2acf_sim.histograms import write_results

IT_CHIPS = parse_chips(example_xml("it", chips=3))
OT_CHIPS = parse_chips(example_xml("ot", hybrids=2, chips=8))


@pytest.mark.parametrize("calibration", ["scurve", "pixelalive", "threqu", "gain"])
def test_inner_tracker_summary_counts_the_injected_dead_and_noisy_pixels(tmp_path: Path, calibration: str) -> None:
    path = tmp_path / "Run000007_X.root"
    truths = write_results(path, "it", calibration, 7, IT_CHIPS, matrix=(60, 50))
    summary = summarise(path)
    assert [c["chip"] for c in summary.chips] == [t.chip.key for t in truths]
    for chip, truth in zip(summary.chips, truths, strict=True):
        assert chip["channels"] == 3000
        assert chip["dead"] == len(truth.dead)
        arrays = summary.channels[truth.chip.key]
        assert set(arrays["dead"].tolist()) == truth.dead
        if calibration in ("scurve", "pixelalive", "threqu"):
            assert set(arrays["noisy"].tolist()) == truth.noisy
    if calibration == "scurve":
        assert 38 < summary.chips[0]["mean_noise"] < 42
        assert 290 < summary.chips[0]["mean_threshold"] < 310
    assert summary.totals()["chips"] == 3


def test_noise_scan_reports_noisy_pixels_and_says_dead_ones_are_not_measurable(tmp_path: Path) -> None:
    path = tmp_path / "Run000001_NoiseScan.root"
    truths = write_results(path, "it", "noise", 1, IT_CHIPS[:1], matrix=(60, 50))
    (chip,) = summarise(path).chips
    assert chip["dead"] is None
    assert chip["noisy"] == len(truths[0].noisy)


def test_outer_tracker_pedestal_noise_summary_per_cbc(tmp_path: Path) -> None:
    path = tmp_path / "Results.root"
    truths = write_results(path, "ot", "pedenoise", 3, OT_CHIPS)
    summary = summarise(path)
    assert len(summary.chips) == 16
    assert all(c["channels"] == 254 for c in summary.chips)
    assert [c["dead"] for c in summary.chips] == [len(t.dead) for t in truths]
    assert [c["noisy"] for c in summary.chips] == [len(t.noisy) for t in truths]
    assert 4.8 < summary.chips[5]["mean_noise"] < 5.2
    assert 585 < summary.chips[5]["mean_pedestal"] < 595


def test_a_file_that_is_not_root_is_a_summary_error(tmp_path: Path) -> None:
    bogus = tmp_path / "broken.root"
    bogus.write_bytes(b"not a ROOT file at all")
    with pytest.raises(SummaryError, match="cannot open"):
        summarise(bogus)


def test_noise_rule_flags_outliers_not_the_core() -> None:
    values = np.r_[np.full(1000, 5.0) + np.linspace(-0.3, 0.3, 1000), [0.0, 30.0]]
    dead, noisy = flag_channels("noise", values)
    assert dead is not None
    assert np.flatnonzero(dead).tolist() == [1000]
    assert np.flatnonzero(noisy).tolist() == [1001]
