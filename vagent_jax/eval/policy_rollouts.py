"""What `vagent eval` and `vagent distill` share: load a policy run directory, check a task list against
its environment, roll out k samples per task (optionally with per-task DeepConf stop thresholds), and turn
a rollout into the scored sample the metrics read.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vagent_jax.chat_template import stop_token_ids
from vagent_jax.config import config_scope, require
from vagent_jax.engine import DecodeEngine, EngineConfig, Trajectory, TurnEnd
from vagent_jax.envs import EnvWorkerPool, get_env
from vagent_jax.eval.sample_metrics import EvalSample
from vagent_jax.models.config import ModelConfig
from vagent_jax.rollout import RolloutResult, RolloutRunner
from vagent_jax.sharding import MeshConfig
from vagent_jax.train.policy_dir import Policy, load_policy
from vagent_jax.train.run_common import run_mesh


def check_out_file(path: str | Path, key: str) -> Path:
    """Make the parent directory of an output file and prove it writable (and the file, if it exists),
    or raise ValueError naming the config key and the path."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        probe = p.parent / f".{p.name}.write_probe"
        probe.write_text("ok")
        probe.unlink()
        if p.is_dir() or (p.exists() and not os.access(p, os.W_OK)):
            raise PermissionError(13, "is a directory or read-only")
    except OSError as e:
        raise ValueError(f"{key}: cannot write the output file '{p}' ({e.strerror or e})") from None
    return p


def load_checked_policy(checkpoint_dir: str | Path, mesh: MeshConfig, num_devices: int,
                        expect_model: ModelConfig | None, engine: EngineConfig) -> Policy:
    """The newest checkpoint of a run directory; stops naming the file when its model config differs from
    `expect_model` (when given) or the engine cache does not fit the model."""
    policy = load_policy(checkpoint_dir, run_mesh(mesh, num_devices), expect_model=expect_model)
    with config_scope("engine"):
        engine.validate(policy.model.vocab_size)
    require(engine.max_len <= policy.model.max_seq_len, "engine.max_len",
            f"{engine.max_len} exceeds max_seq_len {policy.model.max_seq_len} of the policy in {checkpoint_dir}")
    return policy


def check_tasks(tasks: Sequence[dict], env_name: str, source: str,
                env_kwargs: Mapping[str, Any] | None = None) -> None:
    """Every task must render a prompt and reach the verifier in `env_name`; a malformed record stops the
    run here (naming `source` and the record number) instead of costing trajectories later."""
    if len(tasks) == 0:
        raise ValueError(f"{source}: no tasks to evaluate")
    env = get_env(env_name, **(env_kwargs or {}))
    for i, task in enumerate(tasks):
        try:
            if not isinstance(task, dict):
                raise TypeError(f"expected a JSON object, got {type(task).__name__}")
            env.initial_messages(task)
            env.verify(task, "0")
        except Exception as e:  # noqa: BLE001 (any failure here means the record does not fit the env)
            raise ValueError(f"{source}: task record {i + 1} is malformed for environment {env_name!r} "
                             f"({type(e).__name__}: {e})") from None


class ThresholdEngine:
    """A DecodeEngine whose new requests get a DeepConf stop threshold chosen per request id, so the
    RolloutRunner stops low-confidence traces for real (reason 'deepconf')."""

    def __init__(self, engine: DecodeEngine, threshold_of: Callable[[Any], float]) -> None:
        self.engine, self.threshold_of = engine, threshold_of

    @property
    def free_slots(self) -> int:
        """As DecodeEngine.free_slots."""
        return self.engine.free_slots

    @property
    def has_work(self) -> bool:
        """As DecodeEngine.has_work."""
        return self.engine.has_work

    def submit(self, request_id: Any, prompt_ids: Sequence[int]) -> None:
        """Submit with this request's threshold."""
        self.engine.submit(request_id, prompt_ids, threshold=self.threshold_of(request_id))

    def step(self) -> list[TurnEnd]:
        """As DecodeEngine.step."""
        return self.engine.step()

    def resume(self, request_id: Any, suffix_ids: Sequence[int]) -> None:
        """As DecodeEngine.resume."""
        self.engine.resume(request_id, suffix_ids)

    def finish(self, request_id: Any) -> Trajectory:
        """As DecodeEngine.finish."""
        return self.engine.finish(request_id)


def task_index_of(request_id: Any) -> int:
    """The task position in a RolloutRunner request id (task index, sample index)."""
    if not (isinstance(request_id, tuple) and request_id and isinstance(request_id[0], (int, np.integer))):
        raise RuntimeError(f"RolloutRunner request id {request_id!r} is not (task index, sample index); "
                           "per-task DeepConf thresholds cannot be assigned")
    return int(request_id[0])


def sample_rollouts(policy: Policy, tasks: Sequence[dict], env_name: str, engine: EngineConfig, k: int, *,
                    seed: int, env_workers: int, env_modules: Sequence[str] = (),
                    thresholds: Sequence[float] | None = None,
                    env_kwargs: Mapping[str, Any] | None = None) -> list[list[RolloutResult]]:
    """k rollouts of every task, grouped per task in sample order. thresholds[i]: the DeepConf online
    threshold of task i's traces (the engine stops a trace whose window confidence falls below it)."""
    eng = DecodeEngine(policy.params, policy.model, engine, stop_token_ids(policy.template, policy.tokenizer),
                       seed=seed)
    runner_engine: Any = eng
    if thresholds is not None:
        if len(thresholds) != len(tasks):
            raise ValueError(f"sample_rollouts: {len(thresholds)} thresholds for {len(tasks)} tasks")
        runner_engine = ThresholdEngine(eng, lambda rid: float(thresholds[task_index_of(rid)]))
    with EnvWorkerPool(num_workers=env_workers, env_modules=env_modules) as pool:
        runner = RolloutRunner(runner_engine, policy.tokenizer, policy.template, pool, env_name, env_kwargs)
        results = runner.run(list(tasks), k)
    if len(results) != len(tasks) * k:
        raise RuntimeError(f"rollout returned {len(results)} results for {len(tasks)} tasks x {k} samples")
    return [results[i * k:(i + 1) * k] for i in range(len(tasks))]


def final_answer(result: RolloutResult, answer_of: Callable[[str], str | None]) -> str | None:
    """The final answer of a rollout by the env's own rule (`Environment.final_answer` of the last
    assistant turn), whitespace-stripped; None when the trajectory was cut or gave no answer. Votes
    compare these strings exactly."""
    if result.truncated:
        return None
    last = next((m.content for m in reversed(result.messages) if m.role == "assistant"), None)
    ans = None if last is None else answer_of(last)
    return None if ans is None else " ".join(ans.split())


def to_sample(result: RolloutResult, answer_of: Callable[[str], str | None]) -> EvalSample:
    """The scored form of a rollout: answer, verifier label, confidences of the generated tokens."""
    traj = result.trajectory
    conf = np.asarray(traj.confidence, np.float64)[np.asarray(traj.gen_mask, bool)]
    return EvalSample(final_answer(result, answer_of), bool(result.reward.correct), conf, traj.num_generated)


def solution_text(result: RolloutResult) -> str:
    """A candidate solution as GenSelect shows it: the assistant turns and tool observations in order."""
    return "\n".join(f"[{m.role}] {m.content}" for m in result.messages if m.role in ("assistant", "tool"))
