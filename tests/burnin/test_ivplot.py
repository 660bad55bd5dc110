"""The PNG drawn for every archived IV scan: it decodes, has the promised size, the points sit where the axes say,
every module has its own colour, and odd scans (no points, one point, a negative-bias stand, garbage values)
still give a picture. The PNG is decoded here by a small independent reader (chunk CRCs, zlib, all five row
filters) and, where the machine has it, checked by ``file``."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest

from burnin import store as store_module
from burnin.bitmapfont import GLYPH_H, GLYPH_W, GLYPHS
from burnin.ivplot import (
    BACKGROUND,
    GRID,
    Canvas,
    encode_png,
    module_colors,
    nice_ticks,
    plot_iv,
    render_iv_png,
    scan_temperature,
    tick_label,
)
from burnin.store import BurninStore

from .png_reader import decode_png


def scan_doc(modules: dict[str, list[tuple[float, float]]], sign: int = -1, **extra) -> dict:
    return {
        "burnin": "stand-1-burnin-20261201T060000-abcdef",
        "step": 4,
        "profile": "quick",
        "ts": 1_796_000_000.0,
        "modules": {
            m: {
                "module": m,
                "outcome": "done",
                "reason": "all points measured",
                "compliance_ua": 4.0,
                "points": [
                    {"set_v": sign * v, "vmon": sign * v, "imon": sign * i, "ts": 1.0, "t": 1.0, "temperature": -20.0}
                    for v, i in pts
                ],
            }
            for m, pts in modules.items()
        },
        **extra,
    }


THREE = {
    "module_0": [(0, 0.0), (50, 0.4), (100, 0.6), (150, 0.7), (200, 0.75)],
    "module_1": [(0, 0.0), (50, 0.9), (100, 1.3), (120, 3.9)],
    "module_2": [(0, 0.0), (60, 0.2), (120, 0.25), (180, 0.3)],
}


# ---------------------------------------------------------------------------------------------- the PNG
def test_png_encoder_round_trips_any_raster_through_an_independent_reader():
    cv = Canvas(7, 3)
    cv.set(0, 0, (1, 2, 3))
    cv.set(6, 2, (250, 0, 9))
    width, height, rows = decode_png(encode_png(7, 3, cv.pixels))
    assert (width, height) == (7, 3)
    assert rows[0][0] == (1, 2, 3) and rows[2][6] == (250, 0, 9) and rows[1][3] == BACKGROUND
    with pytest.raises(ValueError, match="do not make a 7x4"):
        encode_png(7, 4, cv.pixels)


def test_iv_png_decodes_with_the_promised_size(tmp_path):
    png = render_iv_png(scan_doc(THREE), width=900, height=600)
    width, height, _ = decode_png(png)
    assert (width, height) == (900, 600)
    if shutil.which("file"):
        path = tmp_path / "scan.png"
        path.write_bytes(png)
        out = subprocess.run(["file", str(path)], capture_output=True, text=True, check=True).stdout
        assert "PNG image data, 900 x 600, 8-bit/color RGB" in out


def test_every_point_is_drawn_in_its_module_colour_where_the_axes_put_it():
    doc = scan_doc(THREE)
    cv, frame, colors = plot_iv(doc)
    _, _, rows = decode_png(encode_png(cv.width, cv.height, cv.pixels))
    # the axes reach past the largest |V| and |I|, with round numbers
    assert frame.v_max >= 200 and frame.i_max >= 3.9
    for (module, pts), color in zip(THREE.items(), colors, strict=True):
        for v, i in pts[1:]:  # (0, 0) is shared by all three modules
            x, y = frame.to_px(v, i)
            assert rows[y][x] == color, (module, v, i)
    # higher voltage is further right, higher current further up
    assert frame.to_px(200, 0)[0] > frame.to_px(100, 0)[0]
    assert frame.to_px(0, 3.0)[1] < frame.to_px(0, 1.0)[1]
    # far from every curve, the plot area is background or grid
    x, y = frame.to_px(190, 3.5)
    assert rows[y][x] in (BACKGROUND, GRID)


def test_each_module_has_its_own_colour_even_with_many_modules():
    for n in (1, 3, 10, 11, 25, 40):
        colors = module_colors(n)
        assert len(colors) == n and len(set(colors)) == n, n
    many = {f"m{k}": [(10.0 * j, 0.1 * j + 0.01 * k) for j in range(6)] for k in range(12)}
    cv, _, colors = plot_iv(scan_doc(many))
    counts = {c: 0 for c in colors}
    px = cv.pixels
    for o in range(0, len(px), 3):
        c = (px[o], px[o + 1], px[o + 2])
        if c in counts:
            counts[c] += 1
    assert all(v > 0 for v in counts.values()), counts


def test_modules_that_measured_the_same_points_all_stay_visible():
    same = [(0.0, 0.0), (100.0, 0.1), (200.0, 0.2)]
    cv, frame, colors = plot_iv(scan_doc({"module_0": same, "module_1": same, "module_2": same}))
    for v, i in same[1:]:
        x, y = frame.to_px(v, i)
        around = {cv.get(x + dx, y) for dx in range(0, 8)}
        assert set(colors) <= around, (v, i, around)


def test_a_negative_bias_stand_and_a_positive_one_draw_the_same_picture():
    assert render_iv_png(scan_doc(THREE, sign=-1)) == render_iv_png(scan_doc(THREE, sign=+1))


@pytest.mark.parametrize(
    "doc",
    [
        scan_doc({}),
        scan_doc({"module_0": []}),
        scan_doc({"module_0": [(10.0, 0.02)]}),
        scan_doc({"module_0": [(0.0, 0.0)], "module_1": [(0.0, 0.0)]}),
        {"modules": {"module_0": {"points": [{"vmon": None, "imon": 1.0}, {"vmon": "x", "imon": math.nan}, 7]}}},
        {"modules": "not a mapping", "step": "x"},
        {},
    ],
    ids=["no-modules", "no-points", "one-point", "all-at-zero", "garbage-points", "garbage-doc", "empty-doc"],
)
def test_odd_scans_still_give_a_valid_picture(doc):
    width, height, _ = decode_png(render_iv_png(doc, width=640, height=420))
    assert (width, height) == (640, 420)


def test_a_single_point_is_drawn_where_it_belongs():
    cv, frame, (color,) = plot_iv(scan_doc({"module_0": [(40.0, 0.3)]}))
    x, y = frame.to_px(40.0, 0.3)
    assert cv.get(x, y) == color


def test_points_fall_back_to_the_set_voltage_when_vmon_is_missing():
    doc = {"modules": {"m": {"outcome": "done", "points": [{"set_v": -100, "imon": -0.5}]}}}
    cv, frame, (color,) = plot_iv(doc)
    assert cv.get(*frame.to_px(100, 0.5)) == color


def test_title_temperature_is_the_mean_module_temperature_else_the_chiller_bath():
    doc = scan_doc(THREE)
    doc["modules"]["module_2"]["points"][0]["temperature"] = -14.0
    t, what = scan_temperature(doc)
    n = sum(len(p) for p in THREE.values())
    assert what == "module" and t == pytest.approx((-20.0 * (n - 1) - 14.0) / n)
    for m in doc["modules"].values():
        for p in m["points"]:
            p["temperature"] = None
    assert scan_temperature({**doc, "bath_temp": -25.5}) == (-25.5, "bath")
    assert scan_temperature(doc) == (None, "")


# ---------------------------------------------------------------------------------------------- axes and font
@pytest.mark.parametrize(
    "hi,ticks",
    [
        (800, [0, 200, 400, 600, 800]),
        (200.3, [0, 50, 100, 150, 200]),
        (203, [0, 50, 100, 150, 200, 250]),
        (780, [0, 200, 400, 600, 800]),
        (0.43, [0, 0.1, 0.2, 0.3, 0.4, 0.5]),
        (3.9, [0, 1, 2, 3, 4]),
        (0, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (-5, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (math.inf, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    ],
)
def test_axis_ticks_are_round_numbers_reaching_the_largest_value(hi, ticks):
    assert nice_ticks(hi) == pytest.approx(ticks)


def test_tick_labels_show_the_decimals_the_step_needs():
    assert [tick_label(v, 200) for v in (0, 200, 800)] == ["0", "200", "800"]
    assert [tick_label(v, 0.1) for v in (0, 0.1, 0.5)] == ["0", "0.1", "0.5"]
    assert tick_label(0.05, 0.05) == "0.05" and tick_label(7.5, 2.5) == "7.5"


def test_the_font_has_a_distinct_glyph_for_every_letter_digit_and_the_units():
    wanted = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.,:-+_/|()°µ%="
    for ch in wanted:
        assert ch in GLYPHS, ch
    bitmaps = [frozenset(GLYPHS[ch]) for ch in wanted]
    clashes = {a for a in wanted for b in wanted if a < b and GLYPHS[a] == GLYPHS[b]}
    assert not clashes and len(set(bitmaps)) == len(wanted)
    for ch in wanted:
        assert all(0 <= x < GLYPH_W and 0 <= y < GLYPH_H + 2 for x, y in GLYPHS[ch]), ch


# ---------------------------------------------------------------------------------------------- the archive
def test_the_store_draws_a_png_next_to_every_archived_scan(tmp_path):
    store = BurninStore(tmp_path / "archive", tmp_path / "spool", None)
    doc = scan_doc(THREE)
    assert store.save_iv_scan("b-1/4/1", doc, Path("b-1") / "iv" / "0004-1.json") == "archive"
    png = tmp_path / "archive" / "b-1" / "iv" / "0004-1.png"
    assert decode_png(png.read_bytes())[:2] == (1000, 640)
    assert store.iv_scans("module_1")[0]["outcome"] == "done"  # the PNG does not confuse the scan index
    assert sorted(p.name for p in png.parent.iterdir()) == ["0004-1.json", "0004-1.png"]


def test_a_plot_that_cannot_be_drawn_costs_only_the_picture(tmp_path, monkeypatch, caplog):
    def broken(doc):
        raise RuntimeError("drawing failed (test)")

    monkeypatch.setattr(store_module, "render_iv_png", broken)
    store = BurninStore(tmp_path / "archive", tmp_path / "spool", None)
    doc = scan_doc(THREE)
    assert store.save_iv_scan("b-1/4/1", doc, Path("b-1") / "iv" / "0004-1.json") == "archive"
    folder = tmp_path / "archive" / "b-1" / "iv"
    assert sorted(p.name for p in folder.iterdir()) == ["0004-1.json"]
    assert store.iv_scans("module_0")[0]["points"] == doc["modules"]["module_0"]["points"]
    assert any("IV plot" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
