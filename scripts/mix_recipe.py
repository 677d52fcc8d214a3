"""Run the task-mixture recipe (configs/mix_recipe.yaml): SFT, held-out eval, DAPO on the mixture, held-out
eval, and a report of per-environment pass@1 before and after RL and the mixture weights over steps.

Stages are the real `vagent sft`, `vagent eval` and `vagent rl` runs under OUT (sft/, rl/, eval_sft.json,
eval_rl.json). A finished stage is not redone (its summary or eval file is read back), so a rerun after an
interruption continues. Writes OUT/mix_report.md and OUT/mix_summary.json; prints the table (--json: one
JSON object). Usage: python scripts/mix_recipe.py [configs/mix_recipe.yaml] [--json] [key=value ...]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from vagent_jax.config import load_config, require  # noqa: E402
from vagent_jax.data.task_source import TaskConfig, eval_tasks, make_env, train_tasks  # noqa: E402
from vagent_jax.jobs.eval import EvalConfig, run_eval  # noqa: E402
from vagent_jax.jobs.rl import RLConfig, run_rl  # noqa: E402
from vagent_jax.jobs.sft import SFTConfig, run_sft  # noqa: E402
from vagent_jax.train.metrics_writer import read_scalars  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class MixRecipeConfig:
    """The recipe: `tasks`, `seed`, `num_devices`, `env_workers` apply to every stage."""

    out_dir: str = "runs/mix"
    seed: int = 0
    num_devices: int = 1
    env_workers: int = 2
    tasks: TaskConfig = TaskConfig()
    sft: SFTConfig = SFTConfig()
    rl: RLConfig = RLConfig(init_from="<sft>")
    eval: EvalConfig = EvalConfig()

    def validate(self) -> None:
        """The recipe trains on a mixture."""
        require(bool(self.tasks.mix), "tasks.mix", "the mixture recipe needs tasks.mix entries")


def stages(cfg: MixRecipeConfig) -> tuple[SFTConfig, RLConfig, EvalConfig]:
    """The stage configs inside out_dir, sharing tasks, seed, devices and env workers."""
    out = Path(cfg.out_dir)
    sft = dataclasses.replace(cfg.sft, out_dir=str(out / "sft"), tasks=cfg.tasks, seed=cfg.seed,
                              num_devices=cfg.num_devices)
    rl = dataclasses.replace(cfg.rl, out_dir=str(out / "rl"), init_from=str(out / "sft"), tasks=cfg.tasks,
                             seed=cfg.seed, num_devices=cfg.num_devices, env_workers=cfg.env_workers)
    ev = dataclasses.replace(cfg.eval, tasks=cfg.tasks, num_tasks=cfg.tasks.eval_tasks, seed=cfg.seed,
                             num_devices=cfg.num_devices, env_workers=cfg.env_workers)
    return sft, rl, ev


def _evaluate(ev: EvalConfig, run_dir: Path, path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return run_eval(dataclasses.replace(ev, out=str(path)), run_dir)


def heldout_seen(tasks: TaskConfig) -> dict[str, float]:
    """Per member, the fraction of held-out tasks whose prompt is also a training task's prompt: near 1 for
    datasets with few distinct questions, where held-out pass@1 measures recall more than generalisation."""
    env = make_env(tasks)
    train = train_tasks(tasks)
    seen = {(t["mix_env"], env.prompt(t)) for t in (train[i] for i in range(len(train)))}
    held = eval_tasks(tasks)
    names = sorted({t["mix_env"] for t in held})
    return {k: sum((k, env.prompt(t)) in seen for t in held if t["mix_env"] == k)
            / sum(t["mix_env"] == k for t in held) for k in names}


def weights_over_steps(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """mix/weight/<name> per logged step (normalised weights)."""
    scalars = read_scalars(tb_dir)
    return {k.split("/", 2)[2]: [(int(s), float(v)) for s, v in vals]
            for k, vals in sorted(scalars.items()) if k.startswith("mix/weight/")}


def run_recipe(cfg: MixRecipeConfig) -> dict[str, Any]:
    """Every stage (skipping finished ones); returns the summary."""
    sft, rl, ev = stages(cfg)
    eval_tasks(ev.tasks, ev.num_tasks)  # a held-out split that cannot be drawn stops here, before SFT
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    times = {}
    if not (out / "sft" / "summary.json").is_file():
        run_sft(sft)
    times["sft_s"] = time.perf_counter() - t0
    before = _evaluate(ev, out / "sft", out / "eval_sft.json")
    times["eval_sft_s"] = time.perf_counter() - t0 - times["sft_s"]
    if not (out / "rl" / "summary.json").is_file():
        run_rl(rl)
    times["rl_s"] = time.perf_counter() - t0 - sum(times.values())
    after = _evaluate(ev, out / "rl", out / "eval_rl.json")
    times["eval_rl_s"] = time.perf_counter() - t0 - sum(times.values())
    envs = sorted(before["per_env"])
    summary = {"out_dir": str(out), "seconds_this_invocation": time.perf_counter() - t0, **times,
               "sft_steps": sft.steps, "rl_steps": rl.steps, "eval_tasks_per_env": before["per_env"][envs[0]]["tasks"],
               "pass_at_1": {e: {"sft": before["per_env"][e]["pass@1"], "sft_ci95": before["per_env"][e]["ci95"],
                                 "rl": after["per_env"][e]["pass@1"], "rl_ci95": after["per_env"][e]["ci95"]}
                             for e in envs},
               "overall": {"sft": before["metrics"]["pass@1"], "rl": after["metrics"]["pass@1"]},
               "heldout_seen_in_training": heldout_seen(cfg.tasks),
               "weights": weights_over_steps(out / "rl" / "tb")}
    (out / "mix_summary.json").write_text(json.dumps(summary, indent=2))
    (out / "mix_report.md").write_text(format_report(summary))
    return summary


def format_report(s: dict[str, Any]) -> str:
    """Markdown: per-environment held-out pass@1 after SFT and after DAPO, then the weights per step."""
    lines = [f"# Mixture recipe ({s['sft_steps']} SFT steps, {s['rl_steps']} DAPO steps, "
             f"{s['eval_tasks_per_env']} held-out tasks per environment)", "",
             "| environment | SFT pass@1 (95% CI) | + DAPO pass@1 (95% CI) | change (points) | held-out prompts "
             "seen in training |", "|---|---|---|---|---|"]
    seen = s.get("heldout_seen_in_training", {})
    for e, v in s["pass_at_1"].items():
        ci = lambda c: f"[{100 * c[0]:.1f}, {100 * c[1]:.1f}]"  # noqa: E731
        lines.append(f"| {e} | {100 * v['sft']:.1f} {ci(v['sft_ci95'])} | {100 * v['rl']:.1f} {ci(v['rl_ci95'])} "
                     f"| {100 * (v['rl'] - v['sft']):+.1f} | {f'{100 * seen[e]:.0f}%' if e in seen else '-'} |")
    lines.append(f"| all | {100 * s['overall']['sft']:.1f} | {100 * s['overall']['rl']:.1f} | "
                 f"{100 * (s['overall']['rl'] - s['overall']['sft']):+.1f} | |")
    names = list(s["weights"])
    if names:
        lines += ["", "Mixture weights per DAPO step:", "", "| step | " + " | ".join(names) + " |",
                  "|---" * (len(names) + 1) + "|"]
        steps = [st for st, _ in s["weights"][names[0]]]
        for i, st in enumerate(steps):
            lines.append(f"| {st} | " + " | ".join(f"{s['weights'][n][i][1]:.3f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default=str(ROOT / "configs" / "mix_recipe.yaml"))
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args, extra = p.parse_known_args(argv)
    if "=" in args.config:  # no config path given: the first argument is an override
        extra, args.config = [args.config, *extra], str(ROOT / "configs" / "mix_recipe.yaml")
    bad = [e for e in extra if "=" not in e or e.startswith("-")]
    if bad:
        p.error(f"unrecognised arguments: {' '.join(bad)} (overrides are key=value)")
    summary = run_recipe(load_config(MixRecipeConfig, args.config, extra))
    print(json.dumps(summary) if args.json else format_report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
