"""`vagent rl CONFIG`: the RL loop. Each step: draw prompts (grain iterator), roll out G samples each with
the decode engine and the environment workers, shape rewards, drop zero-signal groups and draw more
(DAPO dynamic sampling, capped rounds), compute group advantages, update (on-policy: one update per
batch by default), log, checkpoint. One decode engine serves the whole run: its KV cache is sharded on the
run's mesh by the training rules table, and each step it decodes with the train state's own device params
(no copy, no recompilation).

This module is the wiring (engine, env pool, checkpoint, writers); the algorithm is in rl/: the sampling
rounds in rl/dynamic_sampling.py, the update input in rl/rollout_batch.py (`build_step_batch`), the jitted
update in train/rl_step.py. RLTrainer is built from in-memory parts (bench_rl_workload.py builds one so);
`RLTrainer.from_config` loads them for a run directory, resolving the config's derived values (L_max, the
judge, the reference params, the task stream per curriculum level) once.

The training signal follows docs/algorithms.md: every training log-prob and entropy is taken at the
rollout temperature; dynamic sampling keeps a group iff 0 < #correct < G (on the verifier's verdict, not
on the shaped reward); L_max (`max_response_tokens`, default the generation budget) bounds generated
tokens in overlong shaping, overlong filtering and Dr. GRPO's constant alike.

Exact resume: the step's sampling seed is purpose_seed(seed, ROLLOUT, step) (each trajectory's noise stream
is then keyed by its index among the step's rollouts) and its update key fold_in(purpose_key(seed, UPDATE),
step) (vagent_jax/seeds.py); rollouts run in lockstep with the environment by default (`rollout_lockstep`),
so their result does not depend on worker timing; the checkpoint holds params, optimizer state, step, the
iterator position, the entropy controller, the curriculum and the mixture schedule.

Multi-host (train/multihost.py): each process draws its own shards' prompts (ShardedTaskIterator), rolls
them out in its own slots of the run's one engine (params globally sharded, never gathered; every host
steps the engine together) with its own env pool, numbering requests by their global index in the step
so sampled tokens do not depend on the host. The rollouts are then gathered
to every process, so dynamic sampling, advantages, the update batch and the logged metrics are global
and the same everywhere; the update runs on the global mesh; process 0 alone writes metrics and files.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from vagent_jax.aot_inputs import abstract_params
from vagent_jax.chat_template import stop_token_ids
from vagent_jax.config import config_scope, require
from vagent_jax.data.mixture_iterator import MixtureTaskIterator, build_member_tasks
from vagent_jax.data.task_source import ShardedTaskIterator, TaskConfig, TaskStream, make_env, train_tasks
from vagent_jax.engine import DecodeEngine, EngineConfig, SamplingConfig
from vagent_jax.envs import EnvWorkerPool
from vagent_jax.jobs.loop import BadStepGuard, check_writable, run_steps
from vagent_jax.models.config import ModelConfig
from vagent_jax.rl.advantages import ADVANTAGES
from vagent_jax.rl.curriculum import Curriculum, CurriculumConfig
from vagent_jax.rl.dynamic_sampling import sample_until_signal, verdicts_and_rewards
from vagent_jax.rl.entropy_control import AdaptiveEntropyConfig, entropy_bonus_coef, update_entropy_coef
from vagent_jax.rl.judge import Judge, JudgeConfig, needs_judge
from vagent_jax.rl.mix_schedule import MixSchedule
from vagent_jax.rl.policy_loss import PolicyLossConfig
from vagent_jax.rl.rollout_batch import RewardShapingConfig, build_step_batch, generation_budget
from vagent_jax.rollout import RolloutRunner
from vagent_jax.seeds import Purpose, purpose_key, purpose_seed
from vagent_jax.sharding import MeshConfig, check_params_sharded
from vagent_jax.tokenizer import Tokenizer
from vagent_jax.train.checkpoint import Checkpointer, CheckpointOptions, abstract_of
from vagent_jax.train.metrics_writer import MetricsWriter, ProgressBar
from vagent_jax.train.mix_metrics import per_env_metrics, rubric_metrics
from vagent_jax.train.multihost import (allgather_objects, check_same_config, is_primary, primary_first,
                                        to_host)
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.policy_dir import CHECKPOINT_DIR, load_policy, write_policy_meta
from vagent_jax.train.rl_step import make_compute_logprobs, make_rl_step
from vagent_jax.train.rollout_metrics import rollout_metrics
from vagent_jax.train.run_common import run_mesh
from vagent_jax.train.step_metrics import reduce_step_metrics
from vagent_jax.train.train_state import TrainState, train_state_from_params

@dataclasses.dataclass(frozen=True)
class RLConfig:
    """A `vagent rl` recipe (configs/rl_*.yaml); DAPO defaults."""

    out_dir: str = "runs/rl"
    init_from: str = ""  # the policy to start from: a run directory (e.g. `vagent sft`'s out_dir) or an HF directory
    seed: int = 0
    tasks: TaskConfig = TaskConfig()
    steps: int = 50
    prompts_per_step: int = 16
    group_size: int = 8
    dynamic_sampling: bool = True
    max_rounds: int = 3  # generation rounds per step to fill the batch with signal-carrying groups
    advantage: str = "dapo"
    loss: PolicyLossConfig = PolicyLossConfig()
    rewards: RewardShapingConfig = RewardShapingConfig()
    # L_max on GENERATED tokens (all turns of a trajectory): overlong shaping and filtering, Dr. GRPO's
    # constant. 0 = the generation budget, engine.max_new_tokens x the env's max_turns, at most engine.max_len
    max_response_tokens: int = 0
    # top_k / top_p / min_p make the sampler draw from a truncated distribution the trainer does not score:
    # allowed only with a correction (loss.mismatch) or when this opt-out is set
    allow_truncated_sampling: bool = False
    curriculum: CurriculumConfig = CurriculumConfig()
    judge: JudgeConfig = JudgeConfig()  # the model that scores rubric judge criteria (rl/judge.py)
    entropy_coef: float = 0.0  # fixed entropy bonus (ignored when adaptive_entropy)
    adaptive_entropy: bool = False
    entropy_control: AdaptiveEntropyConfig = AdaptiveEntropyConfig()
    updates_per_batch: int = 1  # >1: the batch is split into that many sequential mini-batch updates
    micro_batches: int = 1
    engine: EngineConfig = EngineConfig(batch_slots=64, max_len=320, max_new_tokens=96, chunk_steps=16,
                                        sampling=SamplingConfig(temperature=1.0))
    env_workers: int = 2
    rollout_lockstep: bool = True  # wait for the environment each engine step: timing-independent rollouts
    optimizer: OptimizerConfig = OptimizerConfig(lr=1e-4, warmup_steps=0, schedule="constant", total_steps=1000)
    mesh: MeshConfig = MeshConfig()
    num_devices: int = 0
    checkpoint: CheckpointOptions = CheckpointOptions(keep_last=2)
    save_every: int = 10
    log_every: int = 1
    max_bad_steps: int = 3

    def validate(self) -> None:
        """Cross-field checks naming the key."""
        require(bool(self.init_from), "init_from", "RL starts from a policy run directory (e.g. vagent sft's out_dir)")
        for key in ("steps", "prompts_per_step", "group_size", "max_rounds", "updates_per_batch", "micro_batches",
                    "env_workers", "save_every", "log_every", "max_bad_steps"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(self.group_size >= 2, "group_size", f"group advantages need >= 2 samples per prompt, got {self.group_size}")
        require(self.advantage in ADVANTAGES.names(), "advantage", f"{self.advantage!r} is not one of {ADVANTAGES.names()}")
        require(self.advantage != "opo" or self.updates_per_batch == 1, "updates_per_batch",
                "OPO's optimal baseline assumes strict on-policy updates: use updates_per_batch=1")
        rows = self.prompts_per_step * self.group_size
        require(rows % (self.updates_per_batch * self.micro_batches) == 0, "micro_batches",
                f"{rows} rows (prompts_per_step x group_size) do not split into updates_per_batch x micro_batches "
                f"= {self.updates_per_batch} x {self.micro_batches}")
        require(self.entropy_coef >= 0, "entropy_coef", f"must be >= 0, got {self.entropy_coef}")
        require(self.max_response_tokens >= 0, "max_response_tokens", f"must be >= 0, got {self.max_response_tokens}")
        s = self.engine.sampling
        require(s.temperature > 0, "engine.sampling.temperature",
                f"RL samples and scores tokens at temperature T > 0, got {s.temperature} (0 = greedy)")
        truncating = [f"{k}={getattr(s, k)}" for k, off in (("top_k", 0), ("top_p", 1.0), ("min_p", 0.0))
                      if getattr(s, k) != off]
        require(not truncating or self.loss.mismatch != "none" or self.allow_truncated_sampling,
                "engine.sampling", f"{', '.join(truncating)} truncates the sampling distribution, which the trainer "
                "does not score (a sampler-trainer mismatch): set loss.mismatch (a correction such as tis or mis), "
                "or allow_truncated_sampling=true to accept the mismatch",
                related=("loss.mismatch", "allow_truncated_sampling"))
        require(not needs_judge(self.tasks) or bool(self.judge.init_from), "judge.init_from",
                "a rubric criterion asks a judge question: set judge.init_from (a policy run or HF directory)")
        for name in ("loss", "rewards", "curriculum", "entropy_control", "judge"):
            with config_scope(name):  # loaded sections were checked by the loader; a config built in Python too
                getattr(self, name).validate()


def level_tasks(tasks: TaskConfig, level: int | None) -> TaskStream:
    """This process's task shards at curriculum `level` (tasks.difficulty when None); process 0 builds the
    task files, the others read them."""
    if tasks.mix:  # a curriculum level raises every member by level - 1
        lv = 1 if level is None else level
        primary_first(lambda: build_member_tasks(tasks, lv), "vagent-rl-tasks")
        return MixtureTaskIterator(tasks, lv, jax.process_index(), jax.process_count())
    at_level = tasks if level is None else dataclasses.replace(tasks, difficulty=level)
    primary_first(lambda: train_tasks(at_level), "vagent-rl-tasks")
    return ShardedTaskIterator(at_level, jax.process_index(), jax.process_count())


class RLTrainer:
    """Holds the run's state between steps: train state, iterator, entropy controller, curriculum, mixture
    schedule, the decode engine and the jitted update."""

    def __init__(self, cfg: RLConfig, model: ModelConfig, state: TrainState, tokenizer: Tokenizer, template: str,
                 mesh: Mesh, tasks_at_level: Callable[[int | None], TaskStream], *, l_max: int,
                 out: Path | None = None, ref_params: Any = None, judge: Judge | None = None,
                 unroll_layers: bool | None = None) -> None:
        """The trainer from in-memory parts (`from_config` loads them from a run; the benchmark builds its
        own). tasks_at_level(level) gives the task iterator at a curriculum level; l_max is the resolved
        L_max; out=None: no run directory (no checkpoints, `run` refuses)."""
        self.cfg, self.model, self.state, self.tok, self.template, self.mesh = cfg, model, state, tokenizer, template, mesh
        self.tasks_at_level, self.l_max, self.out = tasks_at_level, l_max, out
        self.ref_params, self.judge = ref_params, judge
        self.ckpt = Checkpointer(out / CHECKPOINT_DIR, cfg.checkpoint) if out is not None else None
        self.curriculum = Curriculum(cfg.curriculum)
        self.mix = MixSchedule(cfg.tasks.mix, cfg.tasks.mix_schedule) if cfg.tasks.mix else None
        self.iterator = tasks_at_level(self.curriculum.level)
        self.alpha = cfg.entropy_control.alpha_init
        self.start = 0
        self.guard = BadStepGuard(cfg.max_bad_steps)
        self.last_scalars: dict[str, float] = {}
        self.rows = cfg.prompts_per_step * cfg.group_size
        temperature = cfg.engine.sampling.temperature
        self.rl_step = make_rl_step(model, cfg.optimizer, cfg.loss, mesh, cfg.micro_batches, max_len=l_max,
                                    temperature=temperature, unroll_layers=unroll_layers)
        self.logprobs = (make_compute_logprobs(model, mesh, cfg.micro_batches, temperature=temperature,
                                               unroll_layers=unroll_layers)
                         if cfg.updates_per_batch > 1 else None)
        self.stop_ids = stop_token_ids(template, tokenizer)
        self.key = purpose_key(cfg.seed, Purpose.UPDATE)
        # One engine per run, its KV cache sharded on the run's mesh; each step hands it the new params.
        self.engine = DecodeEngine(state.params, model, cfg.engine, self.stop_ids, mesh=mesh)

    @classmethod
    def from_config(cls, cfg: RLConfig, resume: bool) -> "RLTrainer":
        """The trainer of a `vagent rl` run: the policy from cfg.init_from on the run's mesh, out_dir's
        policy.json and config.json, and (resume) the newest complete checkpoint's state."""
        check_same_config(cfg, "rl config")
        out = check_writable(cfg.out_dir, "rl")
        mesh = run_mesh(cfg.mesh, cfg.num_devices)
        init = load_policy(cfg.init_from, mesh)
        model = init.model
        check_params_sharded(abstract_params(model, mesh), mesh, cfg.mesh.max_replicated_fraction)
        with config_scope("engine"):
            cfg.engine.validate(model.vocab_size)
        require(cfg.engine.max_len <= model.max_seq_len, "engine.max_len",
                f"{cfg.engine.max_len} exceeds the policy's max_seq_len {model.max_seq_len}")
        if is_primary():
            write_policy_meta(out, model, cfg.optimizer, init.template, init.tokenizer_path)
            (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
        l_max = cfg.max_response_tokens or generation_budget(cfg.engine.max_new_tokens, make_env(cfg.tasks).max_turns,
                                                             cfg.engine.max_len)
        trainer = cls(cfg, model, train_state_from_params(init.params, model, cfg.optimizer, mesh), init.tokenizer,
                      init.template, mesh, functools.partial(level_tasks, cfg.tasks), l_max=l_max, out=out,
                      ref_params=init.params if cfg.loss.kl != "none" else None,
                      judge=Judge.load(cfg.judge, mesh) if needs_judge(cfg.tasks) else None)
        restored = trainer.ckpt.restore_latest(abstract_of(trainer.state)) if resume else None
        if restored is not None:
            trainer.restore(restored.state, restored.step, restored.extra)
        return trainer

    def restore(self, state: TrainState, step: int, extra: dict[str, Any]) -> None:
        """Continue after `step` from a checkpoint's state and the extra items `save` wrote."""
        cfg = self.cfg
        self.state, self.start = state, step
        self.curriculum = Curriculum(cfg.curriculum, extra["curriculum"])
        if self.mix is not None:
            self.mix = MixSchedule(cfg.tasks.mix, cfg.tasks.mix_schedule, extra["mix"])
        self.iterator = self.tasks_at_level(self.curriculum.level)
        self.iterator.set_state(extra["iterator"])
        self.alpha = float(extra["alpha"])
        self.guard = BadStepGuard(cfg.max_bad_steps, int(extra["bad_streak"]))

    def save(self, step: int, force: bool = True) -> None:
        """Checkpoint the state after `step` with the iterator position and controller state."""
        shard_states = [s for part in allgather_objects(self.iterator.get_state()) for s in part]  # shard order
        extra = {"stage": "rl", "iterator": shard_states, "alpha": float(self.alpha),
                 "bad_streak": self.guard.streak, "curriculum": self.curriculum.state()}
        if self.mix is not None:
            extra["mix"] = self.mix.state()
        metric = self.cfg.checkpoint.best_metric  # keep-best retention ranks steps by a logged scalar
        metrics = None
        if metric is not None:
            if metric not in self.last_scalars:
                raise ValueError(f"checkpoint.best_metric: '{metric}' is not a logged scalar "
                                 f"(e.g. rollout/pass_rate, rollout/reward_mean)")
            metrics = {metric: self.last_scalars[metric]}
        self.ckpt.save(step, self.state, extra=extra, metrics=metrics, force=force)

    # ----- one step -------------------------------------------------------------------------------------
    def collect(self, pool: EnvWorkerPool, step: int) -> tuple[list, np.ndarray, list, dict[str, float]]:
        """Rollout rounds until prompts_per_step groups carry signal (or max_rounds); returns the kept
        groups' results, their shaped rewards, every result of the step, and counters."""
        cfg, G = self.cfg, self.cfg.group_size
        self.engine.set_params(self.state.params)  # the updated params, used where they lie (no gather)
        self.engine.reset(seed=purpose_seed(cfg.seed, Purpose.ROLLOUT, step))
        runner = RolloutRunner(self.engine, self.tok, self.template, pool, cfg.tasks.env_name, cfg.tasks.env_kwargs,
                               lockstep=cfg.rollout_lockstep)
        first = self.iterator.first_index(cfg.prompts_per_step)
        env_wait = [0.0]

        def draw(round_index: int) -> list:
            # request seed = the trajectory's index among all of the step's rollouts, on whichever host
            mine = runner.run(self.iterator.take(cfg.prompts_per_step), G,
                              seed_offset=(round_index * cfg.prompts_per_step + first) * G)
            if self.judge is not None:  # rubric judge criteria: one batch through the judge's engine
                mine = self.judge.score(mine)
            parts = allgather_objects((mine, float(runner.stats["env_wait_s"])))
            env_wait[0] = max(w for _, w in parts)
            return [x for part, _ in parts for x in part]  # process order = the step's prompt order

        got = sample_until_signal(draw, lambda rs: verdicts_and_rewards(rs, G, cfg.rewards, self.l_max),
                                  groups=cfg.prompts_per_step, group_size=G, max_rounds=cfg.max_rounds,
                                  filter_groups=cfg.dynamic_sampling)
        counters = {"groups_kept": float(got.groups_kept), "groups_dropped": float(got.dropped),
                    "rounds": float(got.rounds), "env_wait_s": env_wait[0]}
        return got.rollouts, got.rewards, got.every, counters

    def update(self, results: list, rewards: np.ndarray, step: int, entropy_coef: float) -> dict[str, float]:
        """The step batch and updates_per_batch sequential updates on it; returns update metrics."""
        cfg = self.cfg
        sb = build_step_batch(results, rewards, advantage=cfg.advantage, group_size=cfg.group_size,
                              l_max=self.l_max, overlong_filter=cfg.rewards.overlong_filter, rows=self.rows,
                              seq_len=cfg.engine.max_len, pad_id=self.tok.pad_id or 0, updates=cfg.updates_per_batch)
        batch = dict(sb.arrays)
        if self.logprobs is not None:
            batch["old_logp"] = to_host(self.logprobs(self.state.params, batch)[0])
        key = jax.random.fold_in(self.key, step)
        outs = []
        for u, rows in enumerate(sb.parts):  # no update on padding alone
            part = {k: v[rows] for k, v in batch.items()}
            self.state, m = self.rl_step(self.state, part, jax.random.fold_in(key, u), entropy_coef, self.ref_params)
            outs.append(m)
        metrics = reduce_step_metrics(outs)  # exact over updates: sums / counts, maxima, totals
        metrics["advantage_abs_mean"] = float(np.abs(sb.advantages).mean()) if sb.advantages.size else 0.0
        metrics["filtered_overlong"] = float((~sb.keep_rows).sum())
        return metrics

    def run(self) -> dict[str, Any]:
        """The loop; returns the summary (also written to out_dir/summary.json)."""
        cfg = self.cfg
        if self.out is None or self.ckpt is None:
            raise ValueError("RLTrainer.run needs a run directory (out): build it with RLTrainer.from_config")
        writer = MetricsWriter(self.out / "tb", purge_step=self.start + 1 if self.start else None)
        bar = ProgressBar(cfg.steps, keys=("reward", "pass_rate", "entropy", "step_time"), desc="rl",
                          enabled=is_primary(), line_every=cfg.log_every)
        t_run = time.perf_counter()
        try:
            with EnvWorkerPool(num_workers=cfg.env_workers, env_modules=cfg.tasks.env_modules) as pool:
                def step(s: int) -> None:
                    self.last_scalars = self.one_step(pool, s, writer, bar)

                run_steps(self.start, cfg.steps, step, self.save, save_every=cfg.save_every,
                          latest_saved=self.ckpt.latest_step, flush=writer.flush)
                self.ckpt.wait_until_finished()
        finally:
            bar.close()
            writer.close()
            self.ckpt.close()
        summary = {"stage": "rl", "steps": cfg.steps, "resumed_from": self.start,
                   "seconds": time.perf_counter() - t_run, "bad_steps": self.guard.total,
                   **{k: v for k, v in self.last_scalars.items() if k.startswith(("rollout/", "update/"))}}
        if is_primary():
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def one_step(self, pool: EnvWorkerPool, step: int, writer: MetricsWriter, bar: ProgressBar) -> dict[str, float]:
        """Collect, update, log one step; returns its scalars."""
        cfg = self.cfg
        t0 = time.perf_counter()
        mix_weights = self.mix.weights(step) if self.mix is not None else None
        if mix_weights is not None:
            self.iterator.set_weights(mix_weights)
        kept, rewards, every, counters = self.collect(pool, step)
        t1 = time.perf_counter()
        scalars = {f"rollout/{k}": v for k, v in rollout_metrics(every).items()}
        scalars.update(per_env_metrics(every))
        scalars.update(rubric_metrics(every))
        if mix_weights is not None:
            total = sum(mix_weights)
            scalars.update({f"mix/weight/{k}": w / total for k, w in zip(self.mix.names, mix_weights)})
            self.mix.observe({k: scalars[f"env/{k}/pass_rate"] for k in self.mix.names
                              if f"env/{k}/pass_rate" in scalars})
        scalars.update({f"rollout/{k}": v for k, v in counters.items()})
        batch_entropy = scalars.get("rollout/sampling_entropy", 0.0)
        if cfg.adaptive_entropy:
            ec = cfg.entropy_control
            coef = float(entropy_bonus_coef(self.alpha, batch_entropy < ec.target))
            self.alpha = float(update_entropy_coef(self.alpha, batch_entropy, ec.target, ec.delta, ec.alpha_min,
                                                   ec.alpha_max)[0])
        else:
            coef = cfg.entropy_coef
        if kept:
            upd = self.update(kept, rewards, step, coef)
            scalars.update({f"update/{k}": v for k, v in upd.items()})
        t2 = time.perf_counter()
        scalars["update/entropy_coef"] = coef
        scalars["update/skipped_no_signal"] = float(not kept)
        skipped = scalars.get("update/skipped", 0.0) > 0
        scalars["update/bad_steps_total"] = float(self.guard.total + skipped)
        gen = scalars.get("rollout/generated_tokens", 0.0)
        scalars["perf/rollout_tokens_per_s"] = gen / max(t1 - t0, 1e-9)
        scalars["perf/update_tokens_per_s"] = scalars.get("update/tokens", 0.0) / max(t2 - t1, 1e-9)
        scalars["time/rollout_s"], scalars["time/update_s"] = t1 - t0, t2 - t1
        scalars["time/env_wait_s"] = counters["env_wait_s"]
        scalars["time/step_s"] = time.perf_counter() - t0
        if self.curriculum.enabled:
            scalars["rollout/curriculum_level"] = float(self.curriculum.level)
            if self.curriculum.observe(scalars.get("rollout/pass_rate", 0.0)):
                self.iterator = self.tasks_at_level(self.curriculum.level)  # the next level's tasks, from the start of its stream
        scalars = {k: v for k, v in scalars.items() if np.isfinite(v)}  # e.g. no correct trajectory: no mean
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            writer.write_scalars(step + 1, scalars)
        bar.update(step + 1, {"reward": scalars.get("rollout/reward_mean", 0.0),
                              "pass_rate": scalars.get("rollout/pass_rate", 0.0),
                              "entropy": scalars.get("update/entropy", batch_entropy),
                              "step_time": scalars["time/step_s"]})
        if kept:
            self.guard.observe(skipped, step + 1)  # after logging: the stopping step's metrics are kept
        return scalars


def run_rl(cfg: RLConfig, resume: bool = False) -> dict[str, Any]:
    """Build the trainer and run it (resume: from the newest complete checkpoint in out_dir)."""
    return RLTrainer.from_config(cfg, resume).run()
