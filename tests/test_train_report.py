"""write_report: a valid PNG with the expected panels and a markdown file that references it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from vagent_jax.train.metrics_writer import MetricsWriter, read_jsonl_scalars
from vagent_jax.train.report import Bars, Curve, report_figure, write_report

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history() -> dict[str, list[tuple[int, float]]]:
    steps = range(1, 6)
    return {"rl/reward_mean": [(s, 0.1 * s) for s in steps], "rl/pass_rate": [(s, 0.2 * s) for s in steps],
            "rl/entropy": [(s, 2.0 - 0.1 * s) for s in steps],
            "rl/response_length": [(s, 100.0 + s) for s in steps], "rl/clip_frac": [(s, 0.01) for s in steps],
            "perf/step_time": [(s, 1.5) for s in steps]}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == _PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_has_fixed_and_requested_panels(tmp_path: Path) -> None:
    rep = write_report(tmp_path / "run", _history(), sections={"Eval": "| pass@1 | 0.5 |"},
                       extra_tags=["rl/clip_frac"])
    assert rep.panels == ("Reward (rl/reward_mean)", "Pass rate (rl/pass_rate)", "Entropy (rl/entropy)",
                          "Response length (rl/response_length)", "rl/clip_frac")
    width, height = _png_size(rep.png)
    assert (width, height) == (1000, 960)  # 2 columns x 3 rows of 5.0 x 3.2 inch panels at 100 dpi
    pixels = imread(rep.png)
    assert pixels.shape[:2] == (960, 1000)
    assert np.asarray(pixels).std() > 0.01  # something was drawn
    md = rep.markdown.read_text()
    assert "![training curves](report.png)" in md
    assert "| `rl/pass_rate` | 1..5 (5) | 0.2 | 1 | 0.2 | 1 |" in md
    assert "## Eval\n\n| pass@1 | 0.5 |" in md


def test_missing_curves_get_an_empty_panel_and_bad_input_names_the_tag(tmp_path: Path) -> None:
    rep = write_report(tmp_path, {"loss": [(0, 1.0), (1, float("nan"))]})
    assert rep.panels == ("Reward (no data)", "Pass rate (no data)", "Entropy (no data)",
                          "Response length (no data)")
    assert _png_size(rep.png) == (1000, 640)
    assert "| `loss` | 0..1 (2) | 1 | nan | 1 | 1 |" in rep.markdown.read_text()
    with pytest.raises(ValueError, match="report tag 'kl'"):
        write_report(tmp_path, {"loss": [(0, 1.0)]}, extra_tags=["kl"])
    with pytest.raises(ValueError, match=r"history\['loss'\]\[1\]"):
        write_report(tmp_path, {"loss": [(0, 1.0), (1,)]})


def test_report_from_the_metrics_writer_jsonl(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, process_index=0) as w:
        for step in range(3):
            w.write_scalars(step, {"rl/reward": step / 2, "rl/entropy": 1.0})
    rep = write_report(tmp_path, read_jsonl_scalars(tmp_path))
    assert rep.panels[0] == "Reward (rl/reward)" and rep.panels[1] == "Pass rate (no data)"
    assert "| `rl/reward` | 0..2 (3) | 0 | 1 | 0 | 1 |" in rep.markdown.read_text()


def test_given_panels_draw_a_band_and_interval_bars(tmp_path: Path) -> None:
    hist = {"e": [(1, 1.0), (2, 0.8), (3, 0.6)], "e_p10": [(1, 0.5), (2, 0.4), (3, 0.3)],
            "e_p90": [(1, 1.5), (3, 0.9)]}
    bars = Bars("held-out pass@1", {"before": (0.25, 0.2, 0.3), "after": (0.5, 0.4, 0.7)})
    fig = report_figure(hist, [Curve("entropy", "e", band=("e_p10", "e_p90")), bars, Curve("missing", "nope")])
    band_ax, bar_ax, empty_ax = fig.axes
    (band,) = band_ax.collections  # the p10/p90 band, at the steps where both edges are logged (1 and 3)
    xs, ys = band.get_paths()[0].vertices.T
    assert set(np.round(xs, 6)) == {1.0, 3.0} and set(np.round(ys, 6)) == {0.5, 0.3, 1.5, 0.9}
    assert [tuple(line.get_ydata()) for line in band_ax.lines] == [(1.0, 0.8, 0.6)]
    assert [p.get_height() for p in bar_ax.patches] == [0.25, 0.5]
    (caps,) = [c for c in bar_ax.collections]  # the error bars span each interval
    assert [tuple(seg[:, 1]) for seg in caps.get_segments()] == [(0.2, 0.3), (0.4, 0.7)]
    assert [t.get_text() for t in empty_ax.texts] == ["no data"]
    rep = write_report(tmp_path, hist, panels=[bars], extra_tags=["e"])
    assert rep.panels == ("held-out pass@1", "e")
