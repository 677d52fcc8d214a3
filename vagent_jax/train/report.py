"""The end-of-run report: report.md (summary table + extra sections) and report.png (one panel per curve).

Fixed panels show reward, pass rate, entropy and response length per step, found in the history by
match_tag (so 'rl/reward_mean' fills the reward panel); callers may add panels for any other tags.
Plots use matplotlib's Agg canvas on a private Figure, so no display and no global pyplot state.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vagent_jax.train.metrics_writer import match_tag

History = Mapping[str, Sequence[tuple[int, float]]]
PANELS = (("reward", "Reward"), ("pass_rate", "Pass rate"), ("entropy", "Entropy"),
          ("response_length", "Response length"))
REPORT_MD, REPORT_PNG = "report.md", "report.png"
_DPI, _PANEL_W, _PANEL_H, _COLS = 100, 5.0, 3.2, 2


class Report(NamedTuple):
    """Paths written by write_report and the title of each panel of the PNG, in order."""

    markdown: Path
    png: Path
    panels: tuple[str, ...]


def _checked_history(history: History) -> dict[str, list[tuple[int, float]]]:
    """Copy `history` as {tag: [(step, value)]} sorted by step, rejecting malformed entries by tag."""
    out = {}
    for tag, points in history.items():
        rows = []
        for i, point in enumerate(points):
            try:
                step, value = point
                rows.append((int(step), float(value)))
            except (TypeError, ValueError):
                raise ValueError(f"history['{tag}'][{i}] must be a (step, value) pair, got {point!r}") from None
        out[tag] = sorted(rows, key=lambda r: r[0])
    return out


def _panel_specs(history: Mapping[str, list], extra_tags: Sequence[str]) -> list[tuple[str, str | None]]:
    """(title, tag or None) for each panel: the four fixed curves, then each requested extra tag."""
    specs: list[tuple[str, str | None]] = []
    for key, title in PANELS:
        tag = match_tag(history.keys(), key)
        specs.append((f"{title} ({tag})" if tag else f"{title} (no data)", tag))
    for tag in extra_tags:
        if tag not in history:
            raise ValueError(f"report tag '{tag}' is not in the history (tags: {sorted(history)})")
        specs.append((tag, tag))
    return specs


def _plot(path: Path, history: Mapping[str, list[tuple[int, float]]], specs: list[tuple[str, str | None]]) -> None:
    rows = math.ceil(len(specs) / _COLS)
    fig = Figure(figsize=(_PANEL_W * _COLS, _PANEL_H * rows), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    for i, (title, tag) in enumerate(specs):
        ax = fig.add_subplot(rows, _COLS, i + 1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        points = history.get(tag, []) if tag else []
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
            ax.grid(alpha=0.3)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path, format="png")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _summary_table(history: Mapping[str, list[tuple[int, float]]]) -> list[str]:
    lines = ["| tag | steps | first | last | min | max |", "|---|---|---|---|---|---|"]
    for tag in sorted(history):
        points = history[tag]
        if not points:
            lines.append(f"| `{tag}` | 0 | | | | |")
            continue
        values = [v for _, v in points]
        finite = [v for v in values if math.isfinite(v)] or [math.nan]
        lines.append(f"| `{tag}` | {points[0][0]}..{points[-1][0]} ({len(points)}) | {_fmt(values[0])} | "
                     f"{_fmt(values[-1])} | {_fmt(min(finite))} | {_fmt(max(finite))} |")
    return lines


def write_report(run_dir: str | Path, history: History, sections: Mapping[str, str] | None = None,
                 extra_tags: Sequence[str] = (), title: str = "Run report") -> Report:
    """Write `run_dir`/report.md and `run_dir`/report.png from `history` {tag: [(step, value)]}.

    `sections` maps a heading to markdown appended after the summary (e.g. eval tables, the config).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    hist = _checked_history(history)
    specs = _panel_specs(hist, extra_tags)
    png, md = run_dir / REPORT_PNG, run_dir / REPORT_MD
    _plot(png, hist, specs)
    lines = [f"# {title}", "", f"![training curves]({REPORT_PNG})", "", "## Summary", ""]
    lines += _summary_table(hist) if hist else ["No metrics were recorded."]
    for heading, body in (sections or {}).items():
        lines += ["", f"## {heading}", "", body.rstrip()]
    md.write_text("\n".join(lines) + "\n")
    return Report(markdown=md, png=png, panels=tuple(t for t, _ in specs))
