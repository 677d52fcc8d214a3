"""Run the main job (`vagent demo`) on several seeds and print the table: does the recipe learn on every one?

Each seed is a full demo (SFT with its evidence-based stop, held-out eval, DAPO, held-out eval) in
OUT/seed<k>, run with --resume: an interrupted seed continues from its checkpoints, a finished one is
read back from its summary.json and not retrained (delete OUT/seed<k> to redo it), so the script is
resumable and a rerun only prints.
Extra `key=value` arguments go to every seed's demo config (e.g. tasks.eval_tasks=100 rl.steps=10).
The seed drives model init, data order, demonstration mix and sampling; the task set is the same.

Per seed: SFT steps (where the stop fell), held-out pass@1 after SFT and after DAPO with 95% Wilson
intervals, the lift in points, minutes (wall time of the
invocation that finished the seed; `resumed` marks a seed whose earlier part ran before) and whether
it meets the bar (--min-sft, --min-lift). The footer gives mean, min and max of each column.
Usage: python scripts/demo_seeds.py [--seeds 0,1,2,3,4] [--out runs/demo_seeds] [--json] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from vagent_jax.config import load_config  # noqa: E402
from vagent_jax.jobs.demo import DemoConfig, run_demo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Options and the key=value overrides; bad options stop with argparse's message naming them."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    p.add_argument("--out", default="runs/demo_seeds")
    p.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    p.add_argument("--min-sft", type=float, default=0.30, help="bar: held-out pass@1 after SFT")
    p.add_argument("--min-lift", type=float, default=10.0, help="bar: DAPO lift in points")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args, extra = p.parse_known_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.seeds or len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        p.error(f"--seeds needs distinct non-negative integers, got {args.seeds}")
    bad = [e for e in extra if "=" not in e or e.startswith("-")]
    if bad:
        p.error(f"unrecognised arguments: {' '.join(bad)} (overrides are key=value)")
    for key in ("seed", "out_dir"):
        if any(e.split("=", 1)[0] == key for e in extra):
            p.error(f"{key} is set by the script (--seeds / --out), not as an override")
    return args, extra


def run_seed(args: argparse.Namespace, extra: list[str], seed: int) -> dict[str, Any]:
    """The seed's demo summary (running or resuming it unless it is already finished) and its row."""
    out = Path(args.out) / f"seed{seed}"
    cfg = load_config(DemoConfig, args.config, [*extra, f"seed={seed}", f"out_dir={out}"])
    done, settings = out / "summary.json", out / "demo_seeds_settings.json"
    mine = {"config": str(Path(args.config).resolve()), "overrides": extra}
    if settings.is_file() and json.loads(settings.read_text()) != mine:
        sys.exit(f"demo_seeds: {out} was run with other settings ({settings.read_text().strip()}); "
                 "use another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(mine))
    resumed = (out / "sft" / "checkpoints").is_dir() and not done.is_file()
    s = json.loads(done.read_text()) if done.is_file() else run_demo(cfg, resume=True)
    return {"seed": seed, "sft_steps": s["sft_steps"], "sft_stopped_early": s.get("sft_stopped_early", False),
            "sft_pass_rate": s["sft_pass_rate"], "sft_pass_rate_95ci": s["sft_pass_rate_95ci"],
            "rl_pass_rate": s["rl_pass_rate"], "rl_pass_rate_95ci": s["rl_pass_rate_95ci"],
            "lift_points": s["rl_lift_points"], "eval_tasks": s["eval_tasks"],
            "minutes": s["total_seconds"] / 60, "resumed": resumed,
            "meets_bar": s["sft_pass_rate"] >= args.min_sft and s["rl_lift_points"] >= args.min_lift,
            "run_dir": str(out)}


def _stats(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    vals = [float(r[key]) for r in rows]
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The markdown table: one row per seed, then mean / min / max."""
    pct = lambda r, k: f"{100 * r[k]:.1f} [{100 * r[k + '_95ci'][0]:.1f}, {100 * r[k + '_95ci'][1]:.1f}]"  # noqa: E731
    lines = ["| seed | SFT steps | SFT pass@1 % (95% CI) | + DAPO pass@1 % (95% CI) | lift (points) | minutes | bar |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['sft_steps']} | {pct(r, 'sft_pass_rate')} | {pct(r, 'rl_pass_rate')} | "
                     f"{r['lift_points']:+.1f} | {r['minutes']:.1f} | {'yes' if r['meets_bar'] else 'NO'} |")
    for name in ("mean", "min", "max"):
        st = {k: _stats(rows, k)[name] for k in ("sft_steps", "sft_pass_rate", "rl_pass_rate", "lift_points", "minutes")}
        lines.append(f"| {name} | {st['sft_steps']:.0f} | {100 * st['sft_pass_rate']:.1f} | "
                     f"{100 * st['rl_pass_rate']:.1f} | {st['lift_points']:+.1f} | {st['minutes']:.1f} | |")
    met = sum(r["meets_bar"] for r in rows)
    lines.append(f"\n{met} of {len(rows)} seeds meet the bar (SFT pass@1 >= {100 * args.min_sft:.0f}%, "
                 f"lift >= +{args.min_lift:.0f} points) on {rows[0]['eval_tasks']} held-out tasks.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every seed in order, write OUT/demo_seeds.{json,md}, print the table (or the JSON)."""
    args, extra = parse_args(argv)
    rows = [run_seed(args, extra, seed) for seed in args.seeds]
    result = {"seeds": args.seeds, "overrides": extra, "rows": rows,
              "stats": {k: _stats(rows, k) for k in ("sft_pass_rate", "rl_pass_rate", "lift_points", "minutes")},
              "meets_bar": sum(r["meets_bar"] for r in rows), "min_sft": args.min_sft, "min_lift": args.min_lift}
    out = Path(args.out)
    (out / "demo_seeds.json").write_text(json.dumps(result, indent=2))
    (out / "demo_seeds.md").write_text(table(rows, args) + "\n")
    print(json.dumps(result, indent=2) if args.json else table(rows, args))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
