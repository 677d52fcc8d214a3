"""Compare RL objectives on one small task: DAPO, DAPO+TIS, CISPO and 80/20 high-entropy token selection.

Design. One policy is SFT'd once with the demo's model and data (vagent_jax/jobs/demo.py): the `calculator` environment
(difficulty 1: one two-digit multiplication through the calculator tool), the demo's 3-layer d=128 model,
demonstrations of which 30% answer at once without the tool (a habit this policy cannot execute), lr 1e-3,
for a fixed --sft-steps on a cosine schedule (not the demo's evidence-based stop: the study's input policy
is fixed by its settings).
It is cached under OUT/sft-<hash of its settings>. From it, each objective runs the real `vagent rl` loop
(run_rl, DAPO defaults: clip-higher, token-level loss, dynamic sampling, lr 3e-4) for --steps steps and
each of --seeds seeds (the seed drives sampling and update keys; the task set and its order are the same
for every run):
  dapo      loss.objective=ppo_clip (eps 0.2 / 0.28)
  dapo_tis  the same plus loss.mismatch=tis (cap C = 2)
  cispo     loss.objective=cispo (clipped, detached IS weight; upper bound 1 + 0.28, no lower bound)
  80_20     DAPO with loss.entropy_top_frac=0.2 (the loss on the top 20% tokens by entropy only)
The default updates_per_batch=2 makes the second mini-batch off-policy, so the clip rules differ (with one
update per batch the ratio is exactly 1 and DAPO and CISPO take the same gradient). The default top_p=0.95
truncates the sampler, so the sampler's and the trainer's probabilities differ and TIS has something to
correct (CPU fp32 decoding alone leaves a mismatch near 1e-7).

Measured, read from each run's tb/metrics.jsonl: rollout/reward_mean, rollout/pass_rate, update/entropy
(training-forward entropy of the policy tokens), time/step_s and update/mismatch_abs_prob_diff. "final" is
the mean over the last min(3, steps) steps of a run; the table gives its mean +- std over seeds (std with
ddof 0; "-" with one seed). Step time is the mean over steps after the first (which compiles).
Outputs in OUT: compare_objectives.md (table), compare_objectives.png (reward and entropy per step, mean
over seeds, band = min..max), compare_objectives.json; prints the table, or with --json one JSON object.
A rerun with the same settings reuses finished runs (each run resumes from its own checkpoints).

Scale. The default (400 SFT steps, 4 objectives x 2 seeds x 10 RL steps of 8 prompts x 8 samples) takes
about 25 minutes on an idle 2-core CPU. The SFT policy passes ~60% of tasks and calls the tool on ~70% of
them, so most groups carry signal; the rollout pass rate is the number to watch.

Usage: python scripts/compare_objectives.py [--steps 10] [--seeds 2] [--out runs/compare_objectives] [--json]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from vagent_jax.config import load_config  # noqa: E402
from vagent_jax.jobs.demo import DIRECT_DEMO_FRACTION, RL_LR, DemoConfig  # noqa: E402
from vagent_jax.jobs.rl import RLConfig, run_rl  # noqa: E402
from vagent_jax.jobs.sft import SFTConfig, run_sft  # noqa: E402
from vagent_jax.train.metrics_writer import read_jsonl_scalars  # noqa: E402

OBJECTIVES: dict[str, list[str]] = {
    "dapo": [],
    "dapo_tis": ["loss.mismatch=tis", "loss.mismatch_cap=2.0"],
    "cispo": ["loss.objective=cispo"],
    "80_20": ["loss.entropy_top_frac=0.2"],
}
TAGS = {"reward": "rollout/reward_mean", "pass_rate": "rollout/pass_rate", "entropy": "update/entropy",
        "step_time": "time/step_s", "mismatch": "update/mismatch_abs_prob_diff"}
FINAL_WINDOW = 3
_DEMO_SFT = DemoConfig().sft  # the demo's recipe is the one source of the model, demonstrations and lrs
MODEL = [f"tokenizer.vocab_size={_DEMO_SFT.tokenizer.vocab_size}",
         *(f"model.{k}={getattr(_DEMO_SFT.model, k)}" for k in
           ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "max_seq_len"))]
TASKS = ["tasks.env=calculator", "tasks.difficulty=1", "tasks.eval_tasks=0"]


def _tag(overrides: Sequence[str]) -> str:
    """Short stable hash of a list of overrides: runs with other settings get other directories."""
    return hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:10]


def sft_overrides(args: argparse.Namespace) -> list[str]:
    """The cached SFT run's settings (the demo's calculator recipe, mixed demonstrations)."""
    return [*TASKS, f"tasks.num_tasks={args.tasks}", f"steps={args.sft_steps}", "batch_size=16", "seq_len=256",
            *MODEL, f"direct_demo_fraction={DIRECT_DEMO_FRACTION}", f"optimizer.lr={_DEMO_SFT.optimizer.lr}",
            f"optimizer.total_steps={args.sft_steps}", f"optimizer.warmup_steps={min(20, args.sft_steps // 2)}",
            "num_devices=1", f"save_every={args.sft_steps}", "log_every=50"]


def rl_overrides(args: argparse.Namespace) -> list[str]:
    """Settings every RL run shares (the objective's keys and the seed come on top)."""
    return [*TASKS, f"tasks.num_tasks={args.tasks}", f"steps={args.steps}", f"prompts_per_step={args.prompts}",
            f"group_size={args.group_size}", "max_rounds=2", f"updates_per_batch={args.updates_per_batch}",
            "engine.batch_slots=64", "engine.max_len=192", "engine.max_new_tokens=48", "engine.chunk_steps=16",
            f"engine.sampling.top_p={args.top_p}", "allow_truncated_sampling=true",  # the study measures the mismatch
            f"optimizer.lr={RL_LR}", "num_devices=1", "env_workers=2",
            f"save_every={args.steps}", "checkpoint.keep_last=1"]


def ensure_policy(args: argparse.Namespace, out: Path) -> Path:
    """SFT the shared policy once (resumed if interrupted, skipped if finished); returns its run dir."""
    ov = sft_overrides(args)
    run_dir = out / f"sft-{_tag(ov)}"
    if not (run_dir / "summary.json").is_file():
        cfg = load_config(SFTConfig, None, ov + [f"out_dir={run_dir}", f"tasks.data_dir={out / 'data'}"])
        run_sft(cfg, resume=True)
    return run_dir


def run_one(args: argparse.Namespace, out: Path, policy: Path, objective: str, seed: int) -> Path:
    """One RL run of `objective` with `seed` (resumed/reused if its directory already holds one)."""
    shared = rl_overrides(args)
    run_dir = out / f"rl-{_tag(shared + [str(policy)])}" / objective / f"seed{seed}"
    summary = run_dir / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("steps") == args.steps:
        return run_dir
    cfg = load_config(RLConfig, None, shared + OBJECTIVES[objective] + [
        f"seed={seed}", f"init_from={policy}", f"out_dir={run_dir}", f"tasks.data_dir={out / 'data'}"])
    run_rl(cfg, resume=True)
    return run_dir


def _series(history: dict[str, list[tuple[int, float]]], tag: str, steps: int) -> np.ndarray:
    """Values of `tag` at steps 1..steps (NaN where a step logged none, e.g. no group with signal)."""
    out = np.full(steps, np.nan)
    for step, value in history.get(tag, []):
        if 1 <= step <= steps:
            out[step - 1] = value
    return out


def _nanmean(a: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean over the finite entries (NaN where there are none), without numpy's empty-slice warning."""
    ok = np.isfinite(a)
    n, total = ok.sum(axis), np.where(ok, a, 0.0).sum(axis)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan) if axis is not None else (
        float(total / n) if n else math.nan)


def summarize(runs: dict[str, list[Path]], steps: int) -> dict[str, Any]:
    """Per objective: final-window means per seed, their mean/std over seeds, and per-step curves."""
    window = min(FINAL_WINDOW, steps)
    result: dict[str, Any] = {}
    for name, dirs in runs.items():
        curves = {k: np.stack([_series(read_jsonl_scalars(d / "tb"), tag, steps) for d in dirs])
                  for k, tag in TAGS.items()}
        row: dict[str, Any] = {"seeds": len(dirs)}
        for k in ("reward", "pass_rate", "entropy", "mismatch"):
            finals = np.asarray([_nanmean(c[-window:]) for c in curves[k]])
            mean = _nanmean(finals)
            row[f"final_{k}_per_seed"] = finals.tolist()
            row[f"final_{k}_mean"] = mean
            row[f"final_{k}_std"] = _nanmean((finals - mean) ** 2) ** 0.5 if math.isfinite(mean) else math.nan
        timed = curves["step_time"][:, 1:] if steps > 1 else curves["step_time"]
        row["step_time_s"] = _nanmean(timed)
        row["curves"] = {k: _nanmean(curves[k], 0).tolist() for k in ("reward", "entropy")}
        result[name] = {"row": row, "bands": {k: curves[k] for k in ("reward", "entropy")}}
    return result


def _pm(mean: float, std: float, seeds: int, fmt: str = "{:.3f}") -> str:
    if not math.isfinite(mean):
        return "n/a"
    return fmt.format(mean) + (f" ± {fmt.format(std)}" if seeds > 1 else "")


def markdown_table(summary: dict[str, Any], steps: int, seeds: int) -> str:
    """The comparison table (mean ± std over seeds of the last-steps window)."""
    window = min(FINAL_WINDOW, steps)
    lines = [f"Final = mean of the last {window} of {steps} RL steps; ± = std over {seeds} seed(s).", "",
             "| objective | final reward | pass rate | entropy | mismatch |p_old - p_rollout| | step time (s) |",
             "|---|---|---|---|---|---|"]
    for name, s in summary.items():
        r = s["row"]
        lines.append(f"| {name} | {_pm(r['final_reward_mean'], r['final_reward_std'], seeds)} | "
                     f"{_pm(r['final_pass_rate_mean'], r['final_pass_rate_std'], seeds)} | "
                     f"{_pm(r['final_entropy_mean'], r['final_entropy_std'], seeds)} | "
                     f"{_pm(r['final_mismatch_mean'], r['final_mismatch_std'], seeds, '{:.2e}')} | "
                     f"{r['step_time_s']:.1f} |")
    return "\n".join(lines) + "\n"


PANELS = (("reward", "Reward (rollout mean)"), ("entropy", "Entropy (policy tokens)"))


def plot(summary: dict[str, Any], steps: int, path: Path, panels: Sequence[tuple[str, str]] = PANELS) -> None:
    """One panel per (curve key, title), one line per run name (mean over seeds; band = min..max);
    summary[name]["bands"][key] is a [seeds, steps] array (NaN where a step logged nothing)."""
    fig = Figure(figsize=(5 * len(panels), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    x = np.arange(1, steps + 1)
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name, s in summary.items():
            band = s["bands"][key]
            ok = np.isfinite(band).any(0)
            if not ok.any():
                continue
            (line,) = ax.plot(x[ok], _nanmean(band[:, ok], 0), marker="o", ms=3, label=name)
            if band.shape[0] > 1:
                lo = np.where(np.isfinite(band), band, np.inf).min(0)
                hi = np.where(np.isfinite(band), band, -np.inf).max(0)
                ax.fill_between(x[ok], lo[ok], hi[ok], alpha=0.15, color=line.get_color())
        ax.set_title(title)
        ax.set_xlabel("RL step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; sizes checked here so a bad one stops before any training."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10, help="RL steps per run")
    p.add_argument("--seeds", type=int, default=2, help="seeds per objective (0..seeds-1)")
    p.add_argument("--out", default="runs/compare_objectives", help="output directory (runs are cached here)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--objectives", default=",".join(OBJECTIVES), help=f"comma list from {list(OBJECTIVES)}")
    p.add_argument("--sft-steps", type=int, default=400, help="steps of the shared SFT run")
    p.add_argument("--tasks", type=int, default=8000, help="generated calculator tasks (SFT and RL share them)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per RL step")
    p.add_argument("--group-size", type=int, default=8, help="samples per prompt")
    p.add_argument("--updates-per-batch", type=int, default=2, help="sequential updates per rollout batch")
    p.add_argument("--top-p", type=float, default=0.95, help="sampler nucleus (1 = off)")
    args = p.parse_args(argv)
    for key in ("steps", "seeds", "sft_steps", "tasks", "prompts", "updates_per_batch"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.group_size < 2:
        p.error(f"--group-size must be >= 2 (group advantages), got {args.group_size}")
    if not 0 < args.top_p <= 1:
        p.error(f"--top-p must be in (0, 1], got {args.top_p}")
    unknown = [o for o in args.objectives.split(",") if o not in OBJECTIVES]
    if unknown or not args.objectives:
        p.error(f"--objectives: unknown {unknown}; choose from {list(OBJECTIVES)}")
    return args


def _finite(x: Any) -> Any:
    """JSON-safe copy: NaN/inf (a metric no step logged) become null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or reuse) every run, write the table, PNG and JSON; returns the JSON object."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    names = args.objectives.split(",")
    with contextlib.redirect_stdout(sys.stderr):  # run logs to stderr: stdout carries only the result
        policy = ensure_policy(args, out)
        runs = {name: [run_one(args, out, policy, name, seed) for seed in range(args.seeds)] for name in names}
    summary = summarize(runs, args.steps)
    table = markdown_table(summary, args.steps, args.seeds)
    paths = {"table": out / "compare_objectives.md", "png": out / "compare_objectives.png",
             "json": out / "compare_objectives.json"}
    paths["table"].write_text(table)
    plot(summary, args.steps, paths["png"])
    result = {"env": "calculator", "difficulty": 1, "steps": args.steps, "seeds": args.seeds,
              "prompts_per_step": args.prompts, "group_size": args.group_size,
              "updates_per_batch": args.updates_per_batch, "top_p": args.top_p, "sft_steps": args.sft_steps,
              "final_window": min(FINAL_WINDOW, args.steps), "policy": str(policy),
              "objectives": {n: s["row"] for n, s in summary.items()},
              "runs": {n: [str(d) for d in ds] for n, ds in runs.items()},
              "files": {k: str(v) for k, v in paths.items()}, "seconds": time.perf_counter() - t0}
    result = _finite(result)
    paths["json"].write_text(json.dumps(result, indent=2, allow_nan=False))
    print(json.dumps(result, allow_nan=False) if args.json else table)
    return result


if __name__ == "__main__":
    main()
