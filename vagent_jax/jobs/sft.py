"""`vagent sft CONFIG`: supervised fine-tuning on demonstration trajectories, resumable exactly.

Demonstrations are an environment's own solutions of its training tasks (`demos: env`) or chat records
from a JSONL file (`demos: jsonl`, each line {"messages": [{"role", "content"}, ...]}; `vagent distill`
writes such a file from verifier-passing rollouts). The loss is on assistant tokens only (mask from the
chat template). Examples are packed once; step s reads batch perm_e[s mod n] with perm_e a seeded
permutation per epoch e, so the data order is a pure function of (seed, step) and a resumed run is
bitwise the uninterrupted one.

Multi-host (train/multihost.py): every process packs the same batches (deterministic) and feeds only
its own devices' rows of each global batch; process 0 builds the tasks and trains the tokenizer first
(the others then read them), and alone writes metrics and run files; all processes save checkpoints.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import jax
import numpy as np

from vagent_jax.aot_inputs import abstract_params
from vagent_jax.chat_template import render_chat
from vagent_jax.config import require
from vagent_jax.data.jsonl_tasks import read_jsonl_tasks
from vagent_jax.data.heldout import task_key
from vagent_jax.data.task_source import TaskConfig, make_env, train_tasks
from vagent_jax.eval.pass_rate import policy_pass_rate
from vagent_jax.jobs.loop import BadStepGuard, check_writable, run_steps
from vagent_jax.models.config import ModelConfig
from vagent_jax.seeds import Purpose, purpose_key, purpose_rng, purpose_seed
from vagent_jax.sharding import MeshConfig, check_params_sharded
from vagent_jax.tokenizer import Tokenizer, check_vocab_fits, load_tokenizer
from vagent_jax.tokenizer_train import train_sentencepiece
from vagent_jax.train.checkpoint import Checkpointer, CheckpointOptions, abstract_of
from vagent_jax.train.metrics_writer import MetricsWriter, ProgressBar
from vagent_jax.train.multihost import check_same_config, is_primary, primary_first
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.packing import pack_examples
from vagent_jax.train.policy_dir import CHECKPOINT_DIR, Policy, load_policy, write_policy_meta
from vagent_jax.train.run_common import run_mesh
from vagent_jax.train.sft_step import make_sft_step
from vagent_jax.train.sft_validation import SFTValidationConfig, check_validation_setup, should_stop
from vagent_jax.train.train_state import create_train_state, train_state_from_params


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """The run's tokenizer: an existing file/dir (`path`), or SentencePiece trained on the demo text.

    With init_from the tokenizer comes from that directory; template null means ChatML for a new
    tokenizer and the checkpoint's own (tokenizer_config.json's when ChatML or Llama 3) with init_from."""

    path: str | None = None
    vocab_size: int = 512
    template: Literal["chatml", "llama3"] | None = None


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """A `vagent sft` recipe (configs/sft_*.yaml)."""

    out_dir: str = "runs/sft"
    seed: int = 0
    tasks: TaskConfig = TaskConfig()
    demos: Literal["env", "jsonl"] = "env"
    demos_path: str | None = None
    # demos "env": this fraction of the tasks (seeded choice) is demonstrated by answering at once without
    # tools (Environment.direct_demonstration), the rest by the env's tool-using solution
    direct_demo_fraction: float = 0.0
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig(vocab_size=512, d_model=128, n_layers=3, n_heads=4, n_kv_heads=2,
                                     head_dim=32, d_ff=384, max_seq_len=512)
    # a vagent run directory (its newest checkpoint's params) or a Hugging Face model directory (config.json,
    # safetensors, tokenizer) starts this run; `model:` keys then only set dtype/remat or must agree with it
    init_from: str | None = None
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 256
    micro_batches: int = 1
    optimizer: OptimizerConfig = OptimizerConfig(lr=2e-3, warmup_steps=20, total_steps=300, weight_decay=0.01)
    mesh: MeshConfig = MeshConfig()
    num_devices: int = 0  # 0 = all
    checkpoint: CheckpointOptions = CheckpointOptions(keep_last=2)
    save_every: int = 100
    log_every: int = 10
    max_bad_steps: int = 5
    # every > 0: pass@1 on held-out training tasks every N steps, stop when it stops improving (steps = cap)
    validation: SFTValidationConfig = SFTValidationConfig()

    def validate(self) -> None:
        """Cross-field checks naming the key."""
        for key in ("steps", "batch_size", "seq_len", "micro_batches", "save_every", "log_every", "max_bad_steps"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(self.batch_size % self.micro_batches == 0, "micro_batches",
                f"{self.micro_batches} does not divide batch_size {self.batch_size}")
        require(self.demos != "jsonl" or bool(self.demos_path), "demos_path", "demos 'jsonl' needs a JSONL file")
        require(0.0 <= self.direct_demo_fraction < 1.0, "direct_demo_fraction",
                f"must be in [0, 1), got {self.direct_demo_fraction}")
        require(self.demos == "env" or self.direct_demo_fraction == 0.0, "direct_demo_fraction",
                "applies to demos 'env' only")
        require(not (self.init_from and self.tokenizer.path), "tokenizer.path",
                "init_from brings its own tokenizer; remove tokenizer.path")
        require(not self.validation.every or self.demos == "env", "validation.every",
                "validation holds tasks out of env demonstrations; with demos 'jsonl' set validation.every=0")
        require(not self.validation.every or self.tasks.source != "generated"
                or self.validation.tasks < self.tasks.num_tasks, "validation.tasks",
                f"{self.validation.tasks} leaves no demonstration of tasks.num_tasks={self.tasks.num_tasks}")
        if self.init_from:  # the model comes from the checkpoint: checked against it in run_sft
            return
        require(bool(self.tokenizer.path) or self.model.vocab_size >= self.tokenizer.vocab_size, "model.vocab_size",
                f"{self.model.vocab_size} is smaller than tokenizer.vocab_size {self.tokenizer.vocab_size}")
        require(self.seq_len <= self.model.max_seq_len, "seq_len",
                f"{self.seq_len} exceeds model.max_seq_len {self.model.max_seq_len}")


def demo_conversations(cfg: SFTConfig) -> list[list[dict[str, str]]]:
    """The demonstration chats: env solutions of the training tasks, or the JSONL file's `messages`.

    With validation on, no demonstration has a validation task's prompt (a generator with few distinct
    questions repeats them, and a repeated one would be recalled, not solved)."""
    if cfg.demos == "env":
        env = make_env(cfg.tasks)
        source = train_tasks(cfg.tasks)
        direct = purpose_rng(cfg.seed, Purpose.DIRECT_DEMOS).random(len(source)) < cfg.direct_demo_fraction
        n_demo = len(source) - (cfg.validation.tasks if cfg.validation.every else 0)  # the rest: validation_tasks
        held = {task_key(env, t) for t in validation_tasks(cfg)}
        return [[m.to_dict() for m in (env.direct_demonstration if direct[i] else env.demonstration)(source[i])]
                for i in range(n_demo) if task_key(env, source[i]) not in held]
    records = read_jsonl_tasks(cfg.demos_path, required_keys=("messages",))  # type: ignore[arg-type]
    out = []
    for i, rec in enumerate(records):
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in msgs):
            raise ValueError(f"{cfg.demos_path} record {i + 1}: 'messages' must be a list of {{role, content}} dicts")
        out.append(msgs)
    return out


def validation_tasks(cfg: SFTConfig) -> list[dict]:
    """The last validation.tasks training tasks, which demo_conversations leaves out (empty when off)."""
    if not cfg.validation.every:
        return []
    source = train_tasks(cfg.tasks)
    return [source[i] for i in range(len(source) - cfg.validation.tasks, len(source))]


def run_tokenizer(cfg: SFTConfig, out: Path, chats: list[list[dict[str, str]]]) -> Tokenizer:
    """The configured tokenizer, the one already trained in out/tokenizer (resume), or a new SentencePiece."""
    if cfg.tokenizer.path:
        return load_tokenizer(cfg.tokenizer.path)
    if (out / "tokenizer" / "tokenizer.model").is_file():
        return load_tokenizer(out / "tokenizer")
    texts = [m["content"] for chat in chats for m in chat]
    return train_sentencepiece(texts, out / "tokenizer", vocab_size=cfg.tokenizer.vocab_size)


def sft_batches(chats: list[list[dict[str, str]]], tok: Tokenizer, template: str, seq_len: int,
                batch_size: int) -> tuple[list[dict[str, np.ndarray]], int]:
    """Render every chat (loss on assistant tokens) and pack into [batch_size, seq_len] batches.

    Returns the batches and how many chats were longer than seq_len (cut; a warning is printed)."""
    examples = []
    for chat in chats:
        ids, mask = render_chat(chat, tok, template, add_generation_prompt=False)
        examples.append((np.asarray(ids, np.int32), np.asarray(mask, np.float32)))
    cut = sum(ids.size > seq_len for ids, _ in examples)
    if cut:
        longest = max(ids.size for ids, _ in examples)
        print(f"vagent sft: warning: {cut} of {len(examples)} demonstrations are longer than seq_len={seq_len} "
              f"(longest {longest} tokens) and are cut; raise seq_len to train on their ends")
    return pack_examples(examples, seq_len, batch_size, pad_id=tok.pad_id or 0, truncate=True), cut


def batch_for_step(step: int, num_batches: int, seed: int) -> int:
    """Index of the batch that step `step` trains on: a fresh seeded permutation every epoch."""
    epoch, pos = divmod(step, num_batches)
    return int(purpose_rng(seed, Purpose.SFT_ORDER, epoch).permutation(num_batches)[pos])


def _starting_policy(cfg: SFTConfig, out: Path, chats: Any, mesh: Any) -> tuple[Any, Any, str, Any, Path]:
    """(init policy or None, model config, template, tokenizer, tokenizer path): from `init_from` (an HF or
    run directory) when set, else the configured model and a tokenizer trained or loaded for this run."""
    if not cfg.init_from:
        tok = primary_first(lambda: run_tokenizer(cfg, out, chats), "vagent-sft-tokenizer")
        tok_path = Path(cfg.tokenizer.path) if cfg.tokenizer.path else out / "tokenizer"
        return None, cfg.model, cfg.tokenizer.template or "chatml", tok, tok_path
    init = load_policy(cfg.init_from, mesh, expect_model=cfg.model, model_default=SFTConfig().model,
                       template=cfg.tokenizer.template)
    require(cfg.seq_len <= init.model.max_seq_len, "seq_len",
            f"{cfg.seq_len} exceeds max_seq_len {init.model.max_seq_len} of the policy in {cfg.init_from}")
    return init, init.model, init.template, init.tokenizer, init.tokenizer_path


def validation_pass_rate(params: Any, step: int, policy_like: Any, tasks: Sequence[dict], env: str, cfg: SFTValidationConfig,
                         seed: int, env_modules: Sequence[str] = (), env_kwargs: dict | None = None) -> float:
    """pass@1 (one sample per task) of `params` on the validation tasks through the real engine and env."""
    policy = dataclasses.replace(policy_like, params=params, step=step)
    metrics, _ = policy_pass_rate(policy, tasks, env, cfg.engine, seed=seed, env_workers=cfg.env_workers,
                                  env_modules=env_modules, env_kwargs=env_kwargs)
    return float(metrics["pass_rate"])


def _validator(cfg: SFTConfig, out: Path, model_cfg: ModelConfig, template: str, tok: Tokenizer,
               tok_path: Path) -> Callable[[Any, int], float] | None:
    """params, step -> validation pass@1 (None when validation is off); checked before any training."""
    if not cfg.validation.every:
        return None
    check_validation_setup(cfg.validation, cfg.demos, len(train_tasks(cfg.tasks)), model_cfg.vocab_size,
                           model_cfg.max_seq_len)
    tasks = validation_tasks(cfg)
    like = Policy(model_cfg, tok, template, None, 0, out, tok_path)
    seed = purpose_seed(cfg.seed, Purpose.SFT_VALIDATION)
    return lambda params, step: validation_pass_rate(params, step, like, tasks, cfg.tasks.env_name, cfg.validation,
                                                     seed=seed, env_modules=cfg.tasks.env_modules,
                                                     env_kwargs=cfg.tasks.env_kwargs)


class _SFTSteps:
    """One SFT run between steps: the train state, the last step's metrics, the validation curve and the
    NaN guard, with the step and the save that `run_steps` calls."""

    def __init__(self, cfg: SFTConfig, state: Any, step_fn: Callable, batches: list,
                 validate: Callable[[Any, int], float] | None, ckpt: Checkpointer, writer: MetricsWriter,
                 bar: ProgressBar, guard: BadStepGuard, curve: list[tuple[int, float]]) -> None:
        self.cfg, self.state, self.step_fn, self.batches, self.validate = cfg, state, step_fn, batches, validate
        self.ckpt, self.writer, self.bar, self.guard, self.curve = ckpt, writer, bar, guard, curve
        self.metrics: dict[str, Any] = {}

    def step(self, step: int) -> None:
        """Train on step's batch and log."""
        cfg, ts = self.cfg, time.perf_counter()
        self.state, m = self.step_fn(self.state, self.batches[batch_for_step(step, len(self.batches), cfg.seed)])
        done = step + 1
        m = self.metrics = jax.device_get(m)
        if done % cfg.log_every == 0 or done == cfg.steps:
            scalars = {f"sft/{k}": float(v) for k, v in m.items()}
            scalars["sft/step_time"] = time.perf_counter() - ts
            scalars["sft/bad_steps_total"] = self.guard.total + int(m["skipped"] > 0)
            self.writer.write_scalars(done, scalars)
            self.bar.update(done, {"loss": scalars["sft/loss"], "entropy": scalars.get("sft/entropy", 0.0),
                                   "step_time": scalars["sft/step_time"]})
        self.guard.observe(bool(m["skipped"] > 0), done)

    def check_stop(self, done: int) -> bool:
        """Validate when due (after step `done`); True when the validation rule says stop."""
        if self.validate is None or done % self.cfg.validation.every:
            return False
        self.curve.append((done, self.validate(self.state.params, done)))
        self.writer.write_scalars(done, {"sft/val_pass_rate": self.curve[-1][1]})
        return should_stop(self.curve, self.cfg.validation)

    def save(self, step: int, force: bool = True) -> None:
        """Checkpoint `step` with the guard's streak and the validation curve (keep-best by an SFT metric)."""
        metrics, best = None, self.cfg.checkpoint.best_metric
        if best is not None:
            name = best.removeprefix("sft/")
            if name not in self.metrics:
                raise ValueError(f"checkpoint.best_metric: '{best}' is not an SFT metric "
                                 f"(one of {sorted(self.metrics)})")
            metrics = {best: float(self.metrics[name])}
        self.ckpt.save(step, self.state, metrics=metrics, force=force,
                       extra={"stage": "sft", "bad_streak": self.guard.streak,
                              "val_curve": [list(p) for p in self.curve]})


def run_sft(cfg: SFTConfig, resume: bool = False) -> dict[str, Any]:
    """Train; with resume=True continue from the newest complete checkpoint in out_dir. Returns the summary.

    With validation.every > 0 the run may stop before `steps` (sft_validation.py); the summary says where."""
    check_same_config(cfg, "sft config")
    out = check_writable(cfg.out_dir, "sft")
    chats = primary_first(lambda: demo_conversations(cfg), "vagent-sft-demos")
    mesh = run_mesh(cfg.mesh, cfg.num_devices)
    init, model_cfg, template, tok, tok_path = _starting_policy(cfg, out, chats, mesh)
    check_vocab_fits(tok, model_cfg.vocab_size, "model.vocab_size")
    check_params_sharded(abstract_params(model_cfg, mesh), mesh, cfg.mesh.max_replicated_fraction)
    validate = _validator(cfg, out, model_cfg, template, tok, tok_path)
    batches, cut = sft_batches(chats, tok, template, cfg.seq_len, cfg.batch_size)
    if is_primary():
        write_policy_meta(out, model_cfg, cfg.optimizer, template, tok_path)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))

    if init is not None:
        state = train_state_from_params(init.params, model_cfg, cfg.optimizer, mesh)
    else:
        state = create_train_state(model_cfg, cfg.optimizer, mesh, purpose_key(cfg.seed, Purpose.PARAMS))
    ckpt = Checkpointer(out / CHECKPOINT_DIR, cfg.checkpoint)
    start, streak, curve = 0, 0, []
    restored = ckpt.restore_latest(abstract_of(state)) if resume else None
    if restored is not None:
        state, start, streak = restored.state, restored.step, int(restored.extra.get("bad_streak", 0))
        curve = [(int(a), float(b)) for a, b in restored.extra.get("val_curve", [])]
    writer = MetricsWriter(out / "tb", purge_step=start + 1 if start else None)
    bar = ProgressBar(cfg.steps, keys=("loss", "entropy", "step_time"), desc="sft", enabled=is_primary(),
                      line_every=cfg.log_every)
    step_fn = make_sft_step(model_cfg, cfg.optimizer, mesh, cfg.micro_batches)
    run = _SFTSteps(cfg, state, step_fn, batches, validate, ckpt, writer, bar,
                    BadStepGuard(cfg.max_bad_steps, streak), curve)
    t0 = time.perf_counter()
    try:
        interrupted = not curve or curve[-1][0] != start  # a resumed run stopped inside that step's validation
        if validate is not None and start and start % cfg.validation.every == 0 and interrupted:
            curve.append((start, validate(run.state.params, start)))
        done = run_steps(start, cfg.steps, run.step, run.save, save_every=cfg.save_every,
                         latest_saved=ckpt.latest_step, check_stop=run.check_stop, flush=writer.flush,
                         stopped=bool(curve) and should_stop(curve, cfg.validation))
        ckpt.wait_until_finished()
    finally:
        bar.close()
        writer.close()
        ckpt.close()
    summary = {"stage": "sft", "steps": done, "max_steps": cfg.steps, "stopped_early": done < cfg.steps,
               "validation_curve": curve, "resumed_from": start, "examples": len(chats),
               "batches": len(batches), "truncated_examples": cut, "seconds": time.perf_counter() - t0,
               "final_loss": float(run.metrics["loss"]) if done > start else None, "bad_steps": run.guard.total}
    if is_primary():
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
