"""`vagent eval CONFIG --checkpoint DIR`: k samples per held-out task through the real rollout path, then
pass@1 / pass@k (unbiased), maj@k, DeepConf offline and online, and GenSelect by the policy itself.

Intervals: every task-averaged metric gets a 95% percentile bootstrap over tasks (the k samples of a task
are correlated, so the task is the resampled unit); pass@1 also gets a Wilson interval over all m*k
samples, which treats them as independent and is narrower. DeepConf online is reported twice: simulated
on the k full traces (warm-up = the first N_init samples; the rule is the engine's, so a trace's stop point
is exact for the same sampled tokens), and, with deepconf.online_live, live: the k - N_init later traces are
sampled again with the engine stopping them at the task's threshold, tokens compared to the full traces.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable


from vagent_jax.config import config_scope, require
from vagent_jax.data.task_source import TaskConfig, eval_tasks, make_env
from vagent_jax.engine import EngineConfig, SamplingConfig
from vagent_jax.eval.budgets import check_eval_budgets, problem_text
from vagent_jax.eval.genselect_policy import GenSelectSettings, PolicyJudge, genselect_rounds
from vagent_jax.eval.per_env import format_per_env, per_env_pass_at_1
from vagent_jax.eval.policy_rollouts import (check_out_file, check_tasks, load_checked_policy, sample_rollouts,
                                             solution_text, to_sample)
from vagent_jax.eval.sample_metrics import (CI_METHOD, DeepConfSettings, EvalSample, aggregate,
                                            label_of, live_online_scores, online_threshold_of, task_scores)
from vagent_jax.models.config import ModelConfig
from vagent_jax.seeds import Purpose, purpose_rng, purpose_seed
from vagent_jax.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """A `vagent eval` recipe (configs/eval_*.yaml). DeepConf's window is deepconf.window (the live online
    pass sets the engine's deepconf_window to it)."""

    tasks: TaskConfig = TaskConfig()  # held-out split (a seed of its own) or tasks.eval_path
    num_tasks: int = 64
    k: int = 8  # samples per task
    engine: EngineConfig = EngineConfig(batch_slots=64, max_len=512, max_new_tokens=96, chunk_steps=16,
                                        sampling=SamplingConfig(temperature=0.6, top_p=0.95))
    env_workers: int = 2
    deepconf: DeepConfSettings = DeepConfSettings()
    genselect: GenSelectSettings = GenSelectSettings()
    model: ModelConfig | None = None  # when set, a checkpoint of another model config is refused
    seed: int = 0
    out: str = "runs/eval/eval.json"
    mesh: MeshConfig = MeshConfig()
    num_devices: int = 1

    def validate(self) -> None:
        """Cross-field checks naming the key."""
        require(self.num_tasks >= 1, "num_tasks", f"must be >= 1, got {self.num_tasks}")
        require(self.k >= 1, "k", f"must be >= 1, got {self.k}")
        require(self.env_workers >= 1, "env_workers", f"must be >= 1, got {self.env_workers}")
        require(bool(self.out), "out", "needs an output JSON path")
        require(not self.deepconf.online or self.deepconf.warmup < self.k, "deepconf.warmup",
                f"online DeepConf needs warm-up traces fewer than k={self.k}, got {self.deepconf.warmup} "
                "(or set deepconf.online=false)")
        for name in ("engine", "deepconf", "genselect"):
            with config_scope(name):
                getattr(self, name).validate()


def score_all(samples: list[list[EvalSample]], cfg: EvalConfig) -> list[dict[str, float]]:
    """task_scores of every task (the part of the report that only needs the k samples)."""
    return [task_scores(s, cfg.k, cfg.deepconf) for s in samples]


def _live_online(policy: Any, tasks: list[dict], samples: list[list[EvalSample]], cfg: EvalConfig,
                 answer_of: Callable[[str], str | None]) -> list[dict[str, float]]:
    """Sample the later k - N_init traces again with each task's threshold in the engine."""
    w = cfg.deepconf.warmup
    thresholds = [online_threshold_of(s[:w], cfg.deepconf) for s in samples]
    engine = dataclasses.replace(cfg.engine, deepconf_window=cfg.deepconf.window)
    live = sample_rollouts(policy, tasks, cfg.tasks.env_name, engine, cfg.k - w,
                           seed=purpose_seed(cfg.seed, Purpose.EVAL_LIVE), env_workers=cfg.env_workers,
                           env_modules=cfg.tasks.env_modules, thresholds=thresholds, env_kwargs=cfg.tasks.env_kwargs)
    out = []
    for s, rs in zip(samples, live):
        stopped = [r.trajectory.reason == "deepconf" for r in rs]
        out.append(live_online_scores(s[:w], [to_sample(r, answer_of) for r in rs], stopped,
                                      sum(x.num_tokens for x in s), cfg.deepconf))
    return out


def _genselect(policy: Any, tasks: list[dict], results: list[list[Any]], samples: list[list[EvalSample]],
               cfg: EvalConfig) -> list[dict[str, float]]:
    """GenSelect@k per task: the policy picks among its own k solutions (label of the voted answer)."""
    env = make_env(cfg.tasks)
    judge = PolicyJudge(policy, cfg.engine, cfg.genselect, cfg.seed)
    problems = [problem_text(env, t) for t in tasks]
    sols = [[solution_text(r) for r in rs] for rs in results]
    answers = [[x.answer for x in s] for s in samples]
    rngs = [purpose_rng(cfg.seed, Purpose.EVAL_VOTES, j) for j in range(len(tasks))]
    picked = genselect_rounds(problems, sols, answers, judge, rngs, k=cfg.genselect.candidates,
                              num_rounds=cfg.genselect.rounds, fit=judge.fit)
    return [{f"genselect@{cfg.k}": label_of(g.answer, s), "genselect/invalid_judgment_rate":
             g.invalid_judgments / cfg.genselect.rounds} for g, s in zip(picked, samples)]


def _build_report(cfg: EvalConfig, checkpoint_dir: str | Path, step: int, tasks: list[dict],
                  per_task: list[dict[str, float]], samples: list[list[EvalSample]], seconds: float) -> dict[str, Any]:
    """The JSON report of the scores computed so far."""
    n_correct = sum(x.correct for s in samples for x in s)
    metrics, ci = aggregate(per_task, n_correct, len(samples) * cfg.k,
                            seed=purpose_seed(cfg.seed, Purpose.EVAL_BOOTSTRAP))
    return {
        "checkpoint": str(checkpoint_dir), "step": step, "env": cfg.tasks.env_name, "num_tasks": len(samples),
        "k": cfg.k, "temperature": cfg.engine.sampling.temperature, "ci_method": CI_METHOD,
        "metrics": metrics, "ci95": ci, "generated_tokens": int(sum(x.num_tokens for s in samples for x in s)),
        "unparsed_answers": int(sum(x.answer is None for s in samples for x in s)),
        "per_env": per_env_pass_at_1(tasks, [[x.correct for x in s] for s in samples]),
        "seconds": seconds, "config": dataclasses.asdict(cfg),
    }


def run_eval(cfg: EvalConfig, checkpoint_dir: str | Path) -> dict[str, Any]:
    """Evaluate the newest checkpoint of a policy run directory; writes cfg.out (JSON) and returns it.

    Every token budget is checked before the first compile. When a stage after the main sampling pass
    (live DeepConf, GenSelect) fails, cfg.out still gets the scores computed so far, with `incomplete`
    naming the stage and its error, and the error is raised."""
    out = check_out_file(cfg.out, "out")
    source = cfg.tasks.eval_path if cfg.tasks.source == "jsonl" else f"generated {cfg.tasks.env} held-out tasks"
    tasks = [dict(t) for t in eval_tasks(cfg.tasks, cfg.num_tasks)]
    check_tasks(tasks, cfg.tasks.env_name, str(source), cfg.tasks.env_kwargs)
    policy = load_checked_policy(checkpoint_dir, cfg.mesh, cfg.num_devices, cfg.model, cfg.engine)
    env = make_env(cfg.tasks)
    check_eval_budgets(policy, env, tasks, cfg.engine, cfg.genselect, cfg.k)
    t0 = time.perf_counter()
    results = sample_rollouts(policy, tasks, cfg.tasks.env_name, cfg.engine, cfg.k,
                              seed=purpose_seed(cfg.seed, Purpose.EVAL_SAMPLING), env_workers=cfg.env_workers,
                              env_modules=cfg.tasks.env_modules, env_kwargs=cfg.tasks.env_kwargs)
    samples = [[to_sample(r, env.final_answer) for r in rs] for rs in results]
    per_task = score_all(samples, cfg)
    stages: list[tuple[str, Callable[[], list[dict[str, float]]]]] = []
    if cfg.deepconf.online and cfg.deepconf.online_live:
        stages.append(("deepconf.online_live", lambda: _live_online(policy, tasks, samples, cfg, env.final_answer)))
    if cfg.genselect.enabled:
        stages.append(("genselect", lambda: _genselect(policy, tasks, results, samples, cfg)))
    for name, stage in stages:
        try:
            extras = stage()
        except (Exception, KeyboardInterrupt) as e:
            partial = _build_report(cfg, checkpoint_dir, policy.step, tasks, per_task, samples, time.perf_counter() - t0)
            partial["incomplete"] = {"stage": name, "error": f"{type(e).__name__}: {e}"}
            write_report(partial, out)
            raise
        for row, extra in zip(per_task, extras):
            row.update(extra)
    report = _build_report(cfg, checkpoint_dir, policy.step, tasks, per_task, samples, time.perf_counter() - t0)
    write_report(report, out)
    return report


def write_report(report: dict[str, Any], path: Path) -> None:
    """Write the report JSON; an OSError names the file."""
    try:
        path.write_text(json.dumps(report, indent=2, default=str))
    except OSError as e:
        raise ValueError(f"out: cannot write the eval report '{path}' ({e.strerror})") from None


def format_table(report: dict[str, Any]) -> str:
    """The report as an aligned text table: metric, value, 95% interval (bootstrap over tasks)."""
    metrics, ci = report["metrics"], report["ci95"]
    rows = [("metric", "value", "95% CI")]
    for key, val in metrics.items():
        if key.endswith(("tokens_full", "tokens_used", "traces_stopped")):
            rows.append((key, f"{val:.0f}", ""))
            continue
        lo_hi = ci.get(key)
        rows.append((key, f"{val:.4f}", f"[{lo_hi[0]:.4f}, {lo_hi[1]:.4f}]" if lo_hi else ""))
    if "pass@1_wilson" in ci:
        lo, hi = ci["pass@1_wilson"]
        rows.append(("pass@1 (Wilson, per sample)", f"{metrics['pass@1']:.4f}", f"[{lo:.4f}, {hi:.4f}]"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{width[0]}}  {r[1]:>{width[1]}}  {r[2]}" for r in rows]
    lines.insert(1, "-" * (sum(width) + 4))
    head = (f"vagent eval: {report['checkpoint']} (step {report['step']}), {report['num_tasks']} {report['env']} "
            f"tasks x k={report['k']} at T={report['temperature']}; intervals: {report['ci_method']}")
    per_env = format_per_env(report.get("per_env", {}))
    return head + "\n" + "\n".join(lines) + ("\n" + per_env if per_env else "")
