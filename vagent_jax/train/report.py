"""The end-of-run report: report.md (summary table + extra sections) and report.png (one panel per curve).

By default the panels show reward, pass rate, entropy and response length per step, found in the history
by match_tag (so 'rl/reward_mean' fills the reward panel); callers may add curves for any other tags, or
give their own panels: curves (with a shaded band between two tags, e.g. p10/p90) and interval bars.
Plots use matplotlib's Agg canvas on a private Figure, so no display and no global pyplot state.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

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


class Curve(NamedTuple):
    """A line panel of `tag` per step (None or a tag without points: an empty "no data" panel), shaded
    between the two `band` tags (e.g. a p10/p90 spread) at the steps where both are logged."""

    title: str
    tag: str | None
    band: tuple[str, str] | None = None


class Bars(NamedTuple):
    """A bar panel: label -> (value, lo, hi), each bar with its interval as an error bar."""

    title: str
    values: Mapping[str, tuple[float, float, float]]


Panel = Curve | Bars


def _default_panels(history: Mapping[str, list], extra_tags: Sequence[str]) -> list[Panel]:
    """The four fixed curves found by match_tag, then each requested extra tag."""
    panels: list[Panel] = []
    for key, title in PANELS:
        tag = match_tag(history.keys(), key)
        panels.append(Curve(f"{title} ({tag})" if tag else f"{title} (no data)", tag))
    return panels + _extra_curves(history, extra_tags)


def _extra_curves(history: Mapping[str, list], extra_tags: Sequence[str]) -> list[Panel]:
    for tag in extra_tags:
        if tag not in history:
            raise ValueError(f"report tag '{tag}' is not in the history (tags: {sorted(history)})")
    return [Curve(tag, tag) for tag in extra_tags]


def _draw_curve(ax: Any, history: Mapping[str, list[tuple[int, float]]], panel: Curve) -> None:
    points = history.get(panel.tag, []) if panel.tag else []
    if not points:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    if panel.band:
        lo, hi = (dict(history.get(t, [])) for t in panel.band)
        steps = sorted(set(lo) & set(hi))
        if steps:
            ax.fill_between(steps, [lo[s] for s in steps], [hi[s] for s in steps], alpha=0.25,
                            label=f"{panel.band[0]} .. {panel.band[1]}")
            ax.legend(fontsize=7)
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def _draw_bars(ax: Any, panel: Bars) -> None:
    labels = list(panel.values)
    vals, lo, hi = ([panel.values[k][i] for k in labels] for i in range(3))
    err = [[v - a for v, a in zip(vals, lo)], [b - v for v, b in zip(vals, hi)]]
    ax.bar(labels, vals, yerr=err, capsize=6, color=[f"C{i}" for i in range(len(labels))])
    for i, v in enumerate(vals):
        ax.text(i, v / 2, f"{v:.3g}\n[{lo[i]:.3g}, {hi[i]:.3g}]", ha="center", va="center", fontsize=8, color="white")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, axis="y")


def report_figure(history: Mapping[str, list[tuple[int, float]]], panels: Sequence[Panel]) -> Figure:
    """A private Agg figure with one subplot per panel, two per row."""
    rows = math.ceil(len(panels) / _COLS)
    fig = Figure(figsize=(_PANEL_W * _COLS, _PANEL_H * rows), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(rows, _COLS, i + 1)
        ax.set_title(panel.title, fontsize=10)
        if isinstance(panel, Bars):
            _draw_bars(ax, panel)
        else:
            _draw_curve(ax, history, panel)
    return fig


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
                 extra_tags: Sequence[str] = (), title: str = "Run report",
                 panels: Sequence[Panel] | None = None) -> Report:
    """Write `run_dir`/report.md and `run_dir`/report.png from `history` {tag: [(step, value)]}.

    `panels` replaces the four fixed curves (reward, pass rate, entropy, response length found by
    match_tag); `extra_tags` add one curve each after them. `sections` maps a heading to markdown appended
    after the summary (e.g. eval tables, the config).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    hist = _checked_history(history)
    chosen = _default_panels(hist, extra_tags) if panels is None else [*panels, *_extra_curves(hist, extra_tags)]
    png, md = run_dir / REPORT_PNG, run_dir / REPORT_MD
    report_figure(hist, chosen).savefig(png, format="png")
    lines = [f"# {title}", "", f"![training curves]({REPORT_PNG})", "", "## Summary", ""]
    lines += _summary_table(hist) if hist else ["No metrics were recorded."]
    for heading, body in (sections or {}).items():
        lines += ["", f"## {heading}", "", body.rstrip()]
    md.write_text("\n".join(lines) + "\n")
    return Report(markdown=md, png=png, panels=tuple(p.title for p in chosen))
