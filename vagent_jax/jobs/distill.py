"""`vagent distill CONFIG --checkpoint DIR`: two data recipes from k policy rollouts per training task.

Rejection-sampling SFT data: keep the verifier-passing trajectories (correct, not cut, optionally with
well-formed tool calls), write one {"messages": [...]} line each: `vagent sft` reads the file with
`demos: jsonl` and `demos_path`. Prompt filtering by measured pass rate: a task whose pass rate
p = c/k satisfies min_pass_rate < p < max_pass_rate (default 0 < p < 1: neither always solved nor never,
the tasks that carry a DAPO group signal) is written to a JSONL task file (`tasks.source: jsonl`,
`tasks.path`), with an `id` (added when missing) and its `measured_pass_rate`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Literal, Sequence

from vagent_jax.config import config_scope, require
from vagent_jax.data.jsonl_tasks import write_jsonl_tasks
from vagent_jax.data.task_source import TaskConfig, train_tasks
from vagent_jax.engine import EngineConfig, SamplingConfig
from vagent_jax.eval.distill import filter_by_pass_rate, passing_conversations, with_ids
from vagent_jax.eval.policy_rollouts import check_out_file, check_tasks, load_checked_policy, sample_rollouts
from vagent_jax.models.config import ModelConfig
from vagent_jax.rollout import RolloutResult
from vagent_jax.seeds import Purpose, purpose_seed
from vagent_jax.sharding import MeshConfig

Outputs = Literal["both", "sft", "tasks"]


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """A `vagent distill` recipe (configs/distill_*.yaml)."""

    tasks: TaskConfig = TaskConfig()  # the training tasks (tasks.path for jsonl, generated otherwise)
    num_tasks: int = 0  # the first n training tasks; 0 = all
    k: int = 8  # samples per task
    engine: EngineConfig = EngineConfig(batch_slots=64, max_len=512, max_new_tokens=96, chunk_steps=16,
                                        sampling=SamplingConfig(temperature=1.0))
    env_workers: int = 2
    model: ModelConfig | None = None  # when set, a checkpoint of another model config is refused
    seed: int = 0
    sft_out: str = "runs/distill/sft.jsonl"
    tasks_out: str = "runs/distill/tasks.jsonl"
    min_pass_rate: float = 0.0  # keep tasks with min_pass_rate < p < max_pass_rate
    max_pass_rate: float = 1.0
    max_per_task: int = 0  # passing trajectories kept per task; 0 = all
    require_format_ok: bool = True  # drop passing trajectories that made a malformed tool call
    dedupe: bool = True  # drop a task's repeated identical conversations
    mesh: MeshConfig = MeshConfig()
    num_devices: int = 1

    def validate(self) -> None:
        """Cross-field checks naming the key."""
        require(self.num_tasks >= 0, "num_tasks", f"must be >= 0 (0 = all), got {self.num_tasks}")
        require(self.k >= 1, "k", f"must be >= 1, got {self.k}")
        require(self.env_workers >= 1, "env_workers", f"must be >= 1, got {self.env_workers}")
        require(self.max_per_task >= 0, "max_per_task", f"must be >= 0 (0 = all), got {self.max_per_task}")
        require(0.0 <= self.min_pass_rate < self.max_pass_rate <= 1.0, "min_pass_rate",
                f"need 0 <= min_pass_rate < max_pass_rate <= 1, got {self.min_pass_rate}, {self.max_pass_rate}")
        with config_scope("engine"):
            self.engine.validate()


def write_sft_jsonl(path: Path, chats: Sequence[list[dict[str, str]]]) -> int:
    """One {"messages": [...]} line per chat (the `demos: jsonl` format of `vagent sft`)."""
    try:
        path.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in chats),
                        encoding="utf-8")
    except OSError as e:
        raise ValueError(f"sft_out: cannot write '{path}' ({e.strerror})") from None
    return len(chats)


def distill_from_results(cfg: DistillConfig, tasks: Sequence[dict], groups: Sequence[Sequence[RolloutResult]],
                         outputs: Outputs = "both") -> dict[str, Any]:
    """Write the chosen outputs from k rollouts per task (groups[i] belongs to tasks[i]); returns counts."""
    if len(groups) != len(tasks):
        raise ValueError(f"distill: {len(groups)} rollout groups for {len(tasks)} tasks")
    correct = [sum(bool(r.reward.correct) for r in g) for g in groups]
    rates = [c / len(g) for c, g in zip(correct, groups)]
    summary: dict[str, Any] = {
        "tasks": len(tasks), "samples": sum(len(g) for g in groups),
        "pass_rate": sum(correct) / max(1, sum(len(g) for g in groups)),
        "tasks_by_correct": {str(c): correct.count(c) for c in sorted(set(correct))},
    }
    if outputs in ("both", "sft"):
        chats = [c for g in groups for c in passing_conversations(
            g, require_format_ok=cfg.require_format_ok, max_per_task=cfg.max_per_task, dedupe=cfg.dedupe)]
        summary["sft_examples"] = write_sft_jsonl(Path(cfg.sft_out), chats)
        summary["sft_out"] = cfg.sft_out
    if outputs in ("both", "tasks"):
        kept = filter_by_pass_rate(with_ids(tasks, f"{cfg.tasks.env}-train"), rates, cfg.min_pass_rate,
                                   cfg.max_pass_rate)
        try:
            summary["tasks_kept"] = write_jsonl_tasks(cfg.tasks_out, kept)
        except OSError as e:
            raise ValueError(f"tasks_out: cannot write '{cfg.tasks_out}' ({e.strerror})") from None
        summary["tasks_out"] = cfg.tasks_out
    return summary


def run_distill(cfg: DistillConfig, checkpoint_dir: str | Path, outputs: Outputs = "both") -> dict[str, Any]:
    """Sample k rollouts per training task with the policy and write the chosen outputs."""
    require(outputs in ("both", "sft", "tasks"), "--outputs", f"must be both, sft or tasks, got {outputs!r}")
    if outputs in ("both", "sft"):
        check_out_file(cfg.sft_out, "sft_out")
    if outputs in ("both", "tasks"):
        check_out_file(cfg.tasks_out, "tasks_out")
    source = train_tasks(cfg.tasks)
    n = len(source) if cfg.num_tasks == 0 else min(cfg.num_tasks, len(source))
    tasks = [dict(source[i]) for i in range(n)]
    check_tasks(tasks, cfg.tasks.env_name, cfg.tasks.path if cfg.tasks.source == "jsonl" else "generated training tasks",
                cfg.tasks.env_kwargs)
    policy = load_checked_policy(checkpoint_dir, cfg.mesh, cfg.num_devices, cfg.model, cfg.engine)
    t0 = time.perf_counter()
    groups = sample_rollouts(policy, tasks, cfg.tasks.env_name, cfg.engine, cfg.k,
                             seed=purpose_seed(cfg.seed, Purpose.DISTILL), env_workers=cfg.env_workers,
                             env_modules=cfg.tasks.env_modules, env_kwargs=cfg.tasks.env_kwargs)
    summary = distill_from_results(cfg, tasks, groups, outputs)
    summary.update(checkpoint=str(checkpoint_dir), step=policy.step, k=cfg.k, seconds=time.perf_counter() - t0)
    return summary
