"""The built-in end-to-end job: tasks -> tokenizer -> policy -> SFT -> multi-turn rollouts with tools -> metrics.

Nothing is downloaded: the calculator environment generates its tasks and demonstration trajectories, a
SentencePiece tokenizer is trained on their text, a small policy is initialised from scratch and trained
with the jitted SFT step on packed demonstrations (loss on assistant tokens only), then the decode engine
rolls the policy out against the environment workers on held-out tasks and the verified pass rate,
entropy and confidence go to TensorBoard, a JSONL mirror and a markdown + PNG report.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vagent_jax.chat_template import render_chat, stop_token_ids
from vagent_jax.config import require
from vagent_jax.envs import EnvWorkerPool, get_env
from vagent_jax.eval.estimators import wilson_interval
from vagent_jax.kernels.sampling import SamplingConfig
from vagent_jax.models.config import ModelConfig
from vagent_jax.rollout import RolloutRunner
from vagent_jax.sampling.engine import DecodeEngine, EngineConfig
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.tokenizer_train import train_sentencepiece
from vagent_jax.train.checkpoint import Checkpointer, CheckpointOptions
from vagent_jax.train.metrics_writer import MetricsWriter, ProgressBar, read_jsonl_scalars
from vagent_jax.train.optimizer import OptimizerConfig
from vagent_jax.train.packing import pack_examples
from vagent_jax.train.report import write_report
from vagent_jax.train.sft_step import make_sft_step
from vagent_jax.train.train_state import create_train_state


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The demo recipe (configs/demo.yaml); `quick` shrinks every stage for CI."""

    out_dir: str = "runs/demo"
    env: str = "calculator"
    seed: int = 0
    train_tasks: int = 2000
    eval_tasks: int = 128
    vocab_size: int = 512
    model: ModelConfig = ModelConfig(vocab_size=512, d_model=128, n_layers=3, n_heads=4, n_kv_heads=2,
                                     head_dim=32, d_ff=384, max_seq_len=512)
    sft_steps: int = 300
    batch_size: int = 16
    seq_len: int = 256
    optimizer: OptimizerConfig = OptimizerConfig(lr=2e-3, warmup_steps=20, total_steps=300, weight_decay=0.01)
    engine: EngineConfig = EngineConfig(batch_slots=64, max_len=320, max_new_tokens=96, chunk_steps=16,
                                        sampling=SamplingConfig(temperature=1.0))
    env_workers: int = 2
    log_every: int = 10

    def validate(self) -> None:
        """Cross-field checks naming the key."""
        require(self.train_tasks > 0, "train_tasks", "must be positive")
        require(self.eval_tasks > 0, "eval_tasks", "must be positive")
        require(self.model.vocab_size >= self.vocab_size, "model.vocab_size",
                f"{self.model.vocab_size} is smaller than the tokenizer's vocab_size {self.vocab_size}")
        require(self.engine.max_len <= self.model.max_seq_len, "engine.max_len",
                f"{self.engine.max_len} exceeds model.max_seq_len {self.model.max_seq_len}")


QUICK_OVERRIDES = ["train_tasks=300", "eval_tasks=16", "sft_steps=30", "optimizer.total_steps=30",
                   "optimizer.warmup_steps=5", "engine.batch_slots=16", "log_every=5",
                   "model.n_layers=2", "model.d_model=64", "model.d_ff=128", "model.head_dim=16"]


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise SystemExit(f"vagent demo: output directory '{out}' is not writable ({e.strerror})") from None


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage; returns the summary written to summary.json."""
    out = Path(cfg.out_dir)
    _check_writable(out)
    t_start = time.perf_counter()
    env = get_env(cfg.env)
    train = env.generate_tasks(cfg.train_tasks, seed=cfg.seed)
    held_out = env.generate_tasks(cfg.eval_tasks, seed=cfg.seed + 10_000)
    demos = [[m.to_dict() for m in env.demonstration(t)] for t in train]

    texts = [m["content"] for d in demos for m in d]
    tok = train_sentencepiece(texts, out / "tokenizer", vocab_size=cfg.vocab_size)
    template = "chatml"
    examples = []
    for d in demos:
        ids, mask = render_chat(d, tok, template, add_generation_prompt=False)
        examples.append((np.asarray(ids, np.int32), np.asarray(mask, np.float32)))
    batches = pack_examples(examples, cfg.seq_len, cfg.batch_size, pad_id=tok.pad_id or 0, truncate=True)

    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    state = create_train_state(cfg.model, cfg.optimizer, mesh, jax.random.key(cfg.seed))
    sft_step = make_sft_step(cfg.model, cfg.optimizer, mesh)
    writer = MetricsWriter(out / "tb")
    bar = ProgressBar(cfg.sft_steps, keys=("loss", "entropy", "step_time"), desc="sft")
    ckpt = Checkpointer(out / "checkpoints", CheckpointOptions(keep_last=2))
    t_sft = time.perf_counter()
    for step in range(cfg.sft_steps):
        t0 = time.perf_counter()
        state, m = sft_step(state, batches[step % len(batches)])
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.sft_steps:
            scalars = {f"sft/{k}": float(v) for k, v in jax.device_get(m).items()}
            scalars["sft/step_time"] = time.perf_counter() - t0
            writer.write_scalars(step + 1, scalars)
            bar.update(step + 1, {"loss": scalars["sft/loss"], "entropy": scalars.get("sft/entropy", 0.0),
                                  "step_time": scalars["sft/step_time"]})
    bar.close()
    sft_time = time.perf_counter() - t_sft
    ckpt.save(cfg.sft_steps, state, jax.random.key(cfg.seed), extra={"stage": "sft"}, force=True)
    ckpt.wait_until_finished()

    engine = DecodeEngine(state.params, cfg.model, cfg.engine, stop_token_ids(template, tok), seed=cfg.seed)
    with EnvWorkerPool(num_workers=cfg.env_workers) as pool:
        runner = RolloutRunner(engine, tok, template, pool, cfg.env)
        t_roll = time.perf_counter()
        results = runner.run(held_out, samples_per_task=1)
        roll_time = time.perf_counter() - t_roll
    correct = sum(r.reward.correct for r in results)
    lo, hi = wilson_interval(correct, len(results))
    gen = np.concatenate([r.trajectory.gen_mask for r in results])
    ent = np.concatenate([r.trajectory.entropy[r.trajectory.gen_mask] for r in results])
    conf = np.concatenate([r.trajectory.confidence[r.trajectory.gen_mask] for r in results])
    scalars = {
        "eval/pass_rate": correct / len(results), "eval/reward_mean": float(np.mean([r.reward.reward for r in results])),
        "eval/sampling_entropy": float(ent.mean()), "eval/confidence": float(conf.mean()),
        "eval/response_length": float(np.mean([r.trajectory.num_generated for r in results])),
        "eval/tool_calls": float(np.mean([r.tool_calls for r in results])),
        "eval/turns": float(np.mean([r.turns for r in results])),
        "eval/truncation_rate": float(np.mean([r.truncated for r in results])),
        "eval/rollout_tokens_per_s": float(gen.sum() / roll_time),
    }
    writer.write_scalars(cfg.sft_steps, scalars)
    writer.close()
    summary = {"pass_rate": scalars["eval/pass_rate"], "pass_rate_95ci": [lo, hi], "eval_tasks": len(results),
               "sft_steps": cfg.sft_steps, "sft_seconds": sft_time, "rollout_seconds": roll_time,
               "compiled_decode_programs": engine.compiled_programs, "total_seconds": time.perf_counter() - t_start,
               **{k.split("/")[1]: v for k, v in scalars.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    example = next((r for r in results if r.reward.correct), results[0])
    convo = "\n".join(f"- **{m.role}**: `{m.content[:200]}`" for m in example.messages)
    write_report(out, read_jsonl_scalars(out / "tb"), sections={
        "Summary": "\n".join(f"- {k}: {v}" for k, v in summary.items()),
        "Example trajectory": convo})
    return summary
