"""Train longer: how policy entropy is traded for reward over many RL steps, and what the interventions do.

Design. One policy is SFT'd once (the demo's model and demonstrations, a fixed number of steps; cached
under OUT/sft-<hash>) on a task where it passes 20-60% of held-out tasks: the study checks that band
before any RL run and stops, naming the measured pass@1, when the policy is outside it (--band-check off
skips the check). From that policy every method runs the real `vagent rl` loop for --steps steps and
each of --seeds seeds; the clipped methods take --updates mini-batch updates per rollout batch, so the
ratio leaves 1 and the clip bounds act (with one update per batch every clip fraction is 0):
  grpo_sym          symmetric clip eps 0.2 / 0.2 (GRPO's), otherwise the DAPO recipe
  dapo              clip-higher eps 0.2 / 0.28 (DAPO, arXiv 2503.14476)
  clip_cov          DAPO + Clip-Cov (Entropy Mechanism, arXiv 2505.22617)
  kl_cov            DAPO + KL-Cov (same paper)
  adaptive_entropy  DAPO + Skywork-OR1's adaptive entropy bonus (arXiv 2505.22312)
  opo               OPO: strict on-policy (one update per batch), optimal-baseline advantages (arXiv 2505.23585)
Formulas: docs/algorithms.md.

Measured per run (from its tb/metrics.jsonl and two held-out evaluations):
  curves of update/entropy (training-forward entropy of the policy tokens) and rollout/pass_rate;
  held-out pass@k, k = 1, 4, 16 (unbiased estimator from --k samples per task at the rollout temperature),
  of the SFT policy and of each run's final policy (does RL narrow pass@k?);
  the fit R = -a exp(H) + b over the run's (entropy, reward) points (least squares in exp(H)) with R^2;
  the first step whose entropy is below 10% of the start (mean of the first 3 steps), or "-" when none.
Outputs in OUT: study_entropy.md (table, rewritten after every run), study_entropy.png (entropy and pass
rate per step, mean over seeds, band = min..max), study_entropy.json, progress.json. Every run resumes
from its own checkpoints (saved every --save-every steps) and finished runs and evaluations are reused,
so a killed study continues where it stopped.

Default task: calculator difficulty 2 (one + - * / over operands below 1000), 600 SFT steps. Calibrated with
--calibrate (2026-12-02, session 9's machine): held-out pass@1 0.51 (pass@4 0.86, pass@16 0.94); 400 SFT
steps gave 0.014 (the copying of the expression into the tool call had not formed yet: loss 0.37, against 0.26 at 600).

Budget: the default (150 steps x 6 methods x 2 seeds of 8 prompts x 8 samples, 100 held-out tasks x 16
samples per evaluation) is sized for a few hours on a 2-core CPU: measured at load 6-7 on the default task,
one RL step takes ~6 s (56 s for the first) and one evaluation ~95 s, ~3.5 h for the 12 runs and their
evaluations. On the idle machine (2026-12-02) with the methods split over two processes sharing OUT (once the
SFT policy exists: --methods grpo_sym,dapo,clip_cov and --methods kl_cov,adaptive_entropy,opo), the 12 runs and
evaluations took 69 min; the same recipe's SFT policy scored 0.606 there (see README). --quick: a tiny version
for tests.

Usage: python scripts/study_entropy.py [--steps 150] [--seeds 2] [--out runs/study_entropy] [--json] [--quick]
       python scripts/study_entropy.py --calibrate --env E --difficulty D --sft-steps N   (SFT + band check only)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_objectives as co  # noqa: E402  (the shared run cache, series and JSON helpers)
import numpy as np  # noqa: E402

from vagent_jax.config import load_config  # noqa: E402
from vagent_jax.data.task_source import TaskConfig, eval_tasks  # noqa: E402
from vagent_jax.engine import EngineConfig, SamplingConfig  # noqa: E402
from vagent_jax.eval.estimators import mean_pass_at_k  # noqa: E402
from vagent_jax.eval.policy_rollouts import sample_rollouts  # noqa: E402
from vagent_jax.jobs.rl import RLConfig, run_rl  # noqa: E402
from vagent_jax.jobs.sft import SFTConfig, run_sft  # noqa: E402
from vagent_jax.seeds import Purpose, purpose_seed  # noqa: E402
from vagent_jax.sharding import MeshConfig  # noqa: E402
from vagent_jax.train.metrics_writer import read_jsonl_scalars  # noqa: E402
from vagent_jax.train.policy_dir import load_policy  # noqa: E402
from vagent_jax.train.run_common import run_mesh  # noqa: E402

METHODS: dict[str, list[str]] = {
    "grpo_sym": ["loss.eps_low=0.2", "loss.eps_high=0.2"],
    "dapo": ["loss.eps_low=0.2", "loss.eps_high=0.28"],
    "clip_cov": ["loss.covariance=clip_cov"],
    "kl_cov": ["loss.covariance=kl_cov"],
    "adaptive_entropy": ["adaptive_entropy=true"],
    "opo": ["advantage=opo", "updates_per_batch=1"],
}
KS = (1, 4, 16)
BAND = (0.2, 0.6)
ENTROPY, PASS, REWARD = "update/entropy", "rollout/pass_rate", "rollout/reward_mean"
QUICK = {"steps": 3, "seeds": 1, "sft_steps": 20, "tasks": 64, "eval_tasks": 4, "k": 4, "prompts": 2,
         "group_size": 2, "updates": 2, "save_every": 2, "methods": "dapo,opo", "band_check": "off",
         "dynamic_sampling": "off"}  # a 20-step SFT policy solves nothing: keep its zero-signal groups


def _tasks(args: argparse.Namespace) -> list[str]:
    return [f"tasks.env={args.env}", f"tasks.difficulty={args.difficulty}", f"tasks.num_tasks={args.tasks}",
            "tasks.eval_tasks=0"]


def ensure_policy(args: argparse.Namespace, out: Path) -> Path:
    """SFT the shared policy once (resumed if interrupted, skipped if finished); returns its run dir."""
    ov = [*_tasks(args), f"steps={args.sft_steps}", "batch_size=16", "seq_len=256", *co.MODEL,
          f"direct_demo_fraction={co.DIRECT_DEMO_FRACTION}", f"optimizer.lr={co._DEMO_SFT.optimizer.lr}",
          f"optimizer.total_steps={args.sft_steps}", f"optimizer.warmup_steps={min(20, args.sft_steps // 2)}",
          "num_devices=1", f"save_every={args.sft_steps}", "log_every=50"]
    run_dir = out / f"sft-{co._tag(ov)}"
    if not (run_dir / "summary.json").is_file():
        run_sft(load_config(SFTConfig, None, ov + [f"out_dir={run_dir}", f"tasks.data_dir={out / 'data'}"]),
                resume=True)
    return run_dir


def run_method(args: argparse.Namespace, out: Path, policy: Path, method: str, seed: int) -> Path:
    """One RL run of `method` with `seed` (resumed from its checkpoints, reused when finished)."""
    shared = [*_tasks(args), f"steps={args.steps}", f"prompts_per_step={args.prompts}",
              f"group_size={args.group_size}", "max_rounds=2", f"updates_per_batch={args.updates}",
              "engine.batch_slots=64", "engine.max_len=192", "engine.max_new_tokens=48",
              f"optimizer.lr={co.RL_LR}", "num_devices=1", "env_workers=2", f"save_every={args.save_every}",
              "checkpoint.keep_last=1", f"dynamic_sampling={str(args.dynamic_sampling == 'on').lower()}"]
    run_dir = out / f"rl-{co._tag(shared + [str(policy)])}" / method / f"seed{seed}"
    summary = run_dir / "summary.json"
    if not (summary.is_file() and json.loads(summary.read_text()).get("steps") == args.steps):
        cfg = load_config(RLConfig, None, shared + METHODS[method] + [
            f"seed={seed}", f"init_from={policy}", f"out_dir={run_dir}", f"tasks.data_dir={out / 'data'}"])
        run_rl(cfg, resume=True)
    return run_dir


def heldout_tasks(args: argparse.Namespace, out: Path) -> list[dict]:
    """The held-out tasks every evaluation uses (none of their questions among the training tasks)."""
    return eval_tasks(TaskConfig(env=args.env, difficulty=args.difficulty, num_tasks=args.tasks,
                                 eval_tasks=args.eval_tasks, data_dir=str(out / "data")))


def held_out_pass_at_k(args: argparse.Namespace, out: Path, run_dir: Path) -> dict[str, float]:
    """pass@k (k in KS up to --k) of the run's final policy on the held-out tasks; cached in the run dir."""
    path = run_dir / f"heldout_pass_at_k_{args.eval_tasks}x{args.k}.json"
    if path.is_file():
        return json.loads(path.read_text())
    policy = load_policy(run_dir, run_mesh(MeshConfig(), 1))
    tasks = heldout_tasks(args, out)
    engine = EngineConfig(batch_slots=64, max_len=192, max_new_tokens=48, sampling=SamplingConfig(temperature=1.0))
    groups = sample_rollouts(policy, tasks, args.env, engine, args.k, seed=purpose_seed(0, Purpose.HELD_OUT_EVAL),
                             env_workers=2)
    correct = [sum(int(r.reward.correct) for r in g) for g in groups]
    result = {f"pass@{k}": mean_pass_at_k([args.k] * len(groups), correct, k) for k in KS if k <= args.k}
    path.write_text(json.dumps(result))
    return result


def fit_entropy_reward(entropy: np.ndarray, reward: np.ndarray) -> dict[str, float]:
    """Least squares of R = -a exp(H) + b over the finite points; a, b and R^2 (NaN with < 3 points)."""
    ok = np.isfinite(entropy) & np.isfinite(reward)
    if ok.sum() < 3:
        return {"a": math.nan, "b": math.nan, "r2": math.nan}
    x, y = np.exp(entropy[ok]), reward[ok]
    slope, b = np.polyfit(x, y, 1)
    resid, total = y - (slope * x + b), y - y.mean()
    r2 = 1.0 - float(resid @ resid) / float(total @ total) if float(total @ total) > 0 else math.nan
    return {"a": float(-slope), "b": float(b), "r2": r2}


def collapse_step(entropy: np.ndarray, fraction: float = 0.1) -> int | None:
    """First step (1-based) whose entropy is below `fraction` of the start (mean of the first 3 finite steps)."""
    finite = entropy[np.isfinite(entropy)]
    if finite.size == 0:
        return None
    below = np.flatnonzero(np.isfinite(entropy) & (entropy < fraction * finite[:3].mean()))
    return int(below[0]) + 1 if below.size else None


def run_row(args: argparse.Namespace, out: Path, dirs: list[Path]) -> dict[str, Any]:
    """One method's numbers: per-seed fits, collapse steps and pass@k, plus the curves over seeds."""
    hist = [read_jsonl_scalars(d / "tb") for d in dirs]
    curves = {k: np.stack([co._series(h, tag, args.steps) for h in hist])
              for k, tag in (("entropy", ENTROPY), ("pass_rate", PASS), ("reward", REWARD))}
    fits = [fit_entropy_reward(curves["entropy"][i], curves["reward"][i]) for i in range(len(dirs))]
    evals = [held_out_pass_at_k(args, out, d) for d in dirs]
    return {"seeds": len(dirs), "fits": fits, "collapse_step": [collapse_step(c) for c in curves["entropy"]],
            "pass_at_k": {k: [e[k] for e in evals] for k in evals[0]},
            "final_entropy": [co._nanmean(c[-3:]) for c in curves["entropy"]],
            "final_pass_rate": [co._nanmean(c[-3:]) for c in curves["pass_rate"]],
            "curves": {k: v.tolist() for k, v in curves.items()}}


def _mean_sd(xs: Sequence[float | None], fmt: str = "{:.2f}") -> str:
    vals = [x for x in xs if x is not None and math.isfinite(x)]
    if not vals:
        return "-"
    m = sum(vals) / len(vals)
    sd = (sum((v - m) ** 2 for v in vals) / len(vals)) ** 0.5
    return fmt.format(m) + (f" ± {fmt.format(sd)}" if len(vals) > 1 else "")


def markdown_table(rows: dict[str, Any], base: dict[str, float], args: argparse.Namespace, done: int,
                   total: int) -> str:
    """The study's table: held-out pass@k after RL (SFT's in the header row), fit and entropy collapse."""
    ks = [k for k in base]
    head = "| method | " + " | ".join(ks) + " | final entropy | a | b | R^2 | step H < 10% start |"
    lines = [f"{done} of {total} runs done; {args.steps} RL steps, mean ± std over seeds (ddof 0).", "", head,
             "|" + "---|" * (len(ks) + 6),
             "| SFT policy | " + " | ".join(f"{base[k]:.3f}" for k in ks) + " | | | | | |"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(_mean_sd(r["pass_at_k"][k], "{:.3f}") for k in ks) + " | "
                     f"{_mean_sd(r['final_entropy'], '{:.3f}')} | {_mean_sd([f['a'] for f in r['fits']], '{:.3f}')} | "
                     f"{_mean_sd([f['b'] for f in r['fits']], '{:.3f}')} | "
                     f"{_mean_sd([f['r2'] for f in r['fits']])} | "
                     f"{', '.join('-' if s is None else str(s) for s in r['collapse_step'])} |")
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, Any], steps: int, path: Path) -> None:
    """Entropy and rollout pass rate per step, one line per method (mean over seeds, band = min..max)."""
    bands = {name: {"bands": {k: np.asarray(r["curves"][k], float) for k in ("entropy", "pass_rate")}}
             for name, r in rows.items()}
    co.plot(bands, steps, path, panels=(("entropy", "Entropy (policy tokens)"), ("pass_rate", "Rollout pass rate")))


def calibration_report(args: argparse.Namespace, out: Path, policy: Path, base: dict[str, float],
                       seconds: float) -> dict[str, Any]:
    """--calibrate: the SFT policy's held-out pass@k and whether pass@1 is in BAND, written to
    OUT/calibration-<env>-d<difficulty>-sft<steps>.json (candidates share OUT and its task data)."""
    result = {"env": args.env, "difficulty": args.difficulty, "sft_steps": args.sft_steps, "sft_policy": str(policy),
              "sft_pass_at_k": base, "band": list(BAND), "in_band": BAND[0] <= base["pass@1"] <= BAND[1],
              "seconds": seconds}
    name = f"calibration-{args.env}-d{args.difficulty}-sft{args.sft_steps}.json"
    (out / name).write_text(json.dumps(result, indent=2))
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options (--quick sets the tiny sizes); bad values stop before any training, naming the option."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--out", default="runs/study_entropy")
    add("--json", action="store_true", help="print one JSON object instead of the table")
    add("--quick", action="store_true", help="a tiny study (tests): " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    add("--methods", default=",".join(METHODS), help=f"comma list from {list(METHODS)}")
    add("--env", default="calculator")
    add("--difficulty", type=int, default=2)
    for name, default in (("steps", 150), ("seeds", 2), ("sft_steps", 600), ("tasks", 8000), ("eval_tasks", 100),
                          ("k", 16), ("prompts", 8), ("group_size", 8), ("updates", 4), ("save_every", 25)):
        add("--" + name.replace("_", "-"), type=int, default=default)
    add("--band-check", choices=("on", "off"), default="on", help=f"require SFT pass@1 in {BAND}")
    add("--dynamic-sampling", choices=("on", "off"), default="on", help="DAPO's filter of zero-signal groups")
    add("--calibrate", action="store_true", help="stop after the SFT policy's held-out pass@k and band check; "
        "writes OUT/calibration-<env>-d<difficulty>-sft<steps>.json (pick --env/--difficulty/--sft-steps with "
        "it; the SFT policy and its evaluation are cached for the study)")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    for key in ("steps", "seeds", "sft_steps", "tasks", "eval_tasks", "k", "prompts", "updates", "save_every"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.group_size < 2:
        p.error(f"--group-size must be >= 2 (group advantages), got {args.group_size}")
    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
    return args


def run_methods(args: argparse.Namespace, out: Path, policy: Path, base: dict[str, float], t0: float) -> dict[str, Any]:
    """Every method x seed from the shared policy; the table, JSON, progress and plot rewritten after each method."""
    methods = args.methods.split(",")
    total, rows, result = len(methods) * args.seeds, {}, {}
    for i, name in enumerate(methods):
        dirs = [run_method(args, out, policy, name, seed) for seed in range(args.seeds)]
        rows[name] = run_row(args, out, dirs)
        result = co._finite({"args": vars(args), "sft_policy": str(policy), "sft_pass_at_k": base,
                             "methods": rows, "seconds": time.perf_counter() - t0})
        (out / "study_entropy.md").write_text(markdown_table(rows, base, args, (i + 1) * args.seeds, total))
        (out / "study_entropy.json").write_text(json.dumps(result, indent=2, allow_nan=False))
        (out / "progress.json").write_text(json.dumps({"done": (i + 1) * args.seeds, "total": total,
                                                       "methods_done": list(rows)}))
        plot(rows, args.steps, out / "study_entropy.png")
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or resume) the study (--calibrate: only the SFT policy and its band check); prints table or JSON."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        heldout_tasks(args, out)  # a held-out split that cannot be drawn stops here, before SFT
        policy = ensure_policy(args, out)
        base = held_out_pass_at_k(args, out, policy)
        if args.calibrate:
            result = calibration_report(args, out, policy, base, time.perf_counter() - t0)
        elif args.band_check == "on" and not BAND[0] <= base["pass@1"] <= BAND[1]:
            raise SystemExit(f"study_entropy: the SFT policy's held-out pass@1 is {base['pass@1']:.3f}, outside "
                             f"{BAND}: pick another --env/--difficulty/--sft-steps (or --band-check off)")
        else:
            result = run_methods(args, out, policy, base, t0)
    if args.calibrate or args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        print((out / "study_entropy.md").read_text())
    return result


if __name__ == "__main__":
    main()
