"""The charts of a run's curves (losses.png, metrics.png): each curve drawn where its values put it, read back from
the PNG's pixels."""
import numpy as np
from PIL import Image

from digitgan.core.charts import COLOURS, plot_curves


def ink(path, colour_index, rows=slice(None)):
    """(y, x) of the pixels drawn in a series' colour: on the way from white to it (anti-aliased edges are paler)
    at least 40 % of the way, and close to that line."""
    picture = np.asarray(Image.open(path).convert("RGB")).astype(float)[rows]
    colour = np.array([int(COLOURS[colour_index][i : i + 2], 16) for i in (1, 3, 5)])
    towards, off = 255 - colour, 255 - picture
    t = off @ towards / (towards @ towards)
    residual = np.linalg.norm(off - t[..., None] * towards, axis=-1)
    return np.argwhere((t > 0.4) & (residual < 30))


def height_at(points, x):
    """The mean row of a curve's pixels in the column x (the curve must be there)."""
    ys = points[points[:, 1] == x, 0]
    assert len(ys), f"nothing drawn at x={x}"
    return ys.mean()


def test_each_curve_is_drawn_at_its_values_and_gaps_between_evaluations_are_bridged(tmp_path):
    # "high" from step 50 on: the upper left corner is free for the legend, the right half all curves
    rows = [{"step": s, "high": 3.0 if s >= 50 else "", "low": 1.0} for s in range(101)]
    path = plot_curves(rows, tmp_path / "c.png", [("two levels", ("high", "low", "absent"))])
    assert Image.open(path).size == (640, 240)
    high, low = ink(path, 0), ink(path, 1)
    assert np.ptp(low[:, 1]) > 500  # across the box
    right_half = range(360, 580)
    heights = np.array([(height_at(high, x), height_at(low, x)) for x in right_half])
    assert (heights[:, 0] < heights[:, 1] - 100).all()  # the larger value higher up
    assert np.ptp(heights, axis=0).max() <= 1  # and level
    assert not len(high[(high[:, 1] > 150) & (high[:, 1] < 300)])  # nothing before step 50 (past the legend)
    # a metric logged every 50 rows is one line through its evaluations, not dots
    rows = [{"step": s, "fid": 100.0 if s == 0 else 10.0 if s == 50 else ""} for s in range(51)]
    fid = ink(plot_curves(rows, tmp_path / "m.png", [("FID", ("fid",))]), 0)
    for x in (150, 320, 450):
        height_at(fid, x)


def test_the_first_panel_can_be_logarithmic_and_an_empty_panel_is_blank(tmp_path):
    rows = [{"step": s, "fid": 10.0 ** (s / 33), "recall": 0.5} for s in range(0, 100, 33)]  # 1, 10, 100, 1000
    panels = [("FID (log)", ("fid",)), ("nothing logged yet", ("precision",))]
    for log in (True, False):
        path = plot_curves(rows, tmp_path / f"{log}.png", panels, log_first=log)
        assert Image.open(path).size == (640, 480)
        fid = ink(path, 0, slice(0, 240))
        # from its lowest point (step 0) to its right end (step 99), at equal steps (the first clear of the legend)
        left, right = fid[fid[:, 0].argmax(), 1], fid[:, 1].max() - 3
        rises = np.diff([height_at(fid, round(left + (right - left) * f)) for f in (0.1, 0.4, 0.7, 1.0)])
        if log:  # a straight line
            assert np.ptp(rises) < 3 and rises.mean() < -40
        else:  # a hockey stick: the last third climbs most of the way
            assert rises[2] < 5 * rises[0]
        # the second panel draws nothing (no curve, no legend): none of the series' colours below the first
        assert not any(len(ink(path, k, slice(240, 480))) for k in range(3))
