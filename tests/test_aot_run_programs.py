"""`vagent compile` lowers the programs a run executes: a short RL loop on 4 fake CPU devices (fsdp 2 x
tensor 2) records the programs it ran (the engine's prefill / decode buckets and the update, by name and
shape), and jobs/compile.py rl_lowerings on the same mesh holds every one of them, with the input and output
shardings of the arrays the run passed."""
from __future__ import annotations

import sys
from pathlib import Path

import jax
import pytest

from vagent_jax.config import load_config
from vagent_jax.engine import reachable_programs
from vagent_jax.jobs.compile import rl_lowerings
from vagent_jax.jobs.rl import RLConfig, RLTrainer
from vagent_jax.jobs.sft import SFTConfig, run_sft

TESTS = Path(__file__).resolve().parent
TASKS = ["tasks.env=coin_test", "tasks.env_modules=[vagent_jax.testing]", "tasks.num_tasks=32"]


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step SFT policy with 2 KV heads (so tensor = 2 splits them); its rewards do not matter here."""
    sys.path.insert(0, str(TESTS))
    out = tmp_path_factory.mktemp("aot_run_policy")
    run_sft(load_config(SFTConfig, None, TASKS + [
        f"out_dir={out}", f"tasks.data_dir={out / 'data'}", "steps=2", "batch_size=4", "seq_len=64",
        "tokenizer.vocab_size=300", "model.vocab_size=320", "model.d_model=32", "model.n_layers=1",
        "model.n_heads=2", "model.n_kv_heads=2", "model.head_dim=16", "model.d_ff=64", "model.max_seq_len=64",
        "num_devices=1"]))
    return out


def _same(shardings, arrays) -> bool:
    leaves = jax.tree.leaves(arrays)
    return len(jax.tree.leaves(shardings)) == len(leaves) and all(
        s.is_equivalent_to(x.sharding, x.ndim) for s, x in zip(jax.tree.leaves(shardings), leaves))


def test_compile_lowers_every_program_the_run_executed(policy: Path, tmp_path: Path) -> None:
    cfg = load_config(RLConfig, None, TASKS + [
        f"init_from={policy}", f"out_dir={tmp_path / 'rl'}", f"tasks.data_dir={policy / 'data'}", "steps=1",
        "prompts_per_step=4", "group_size=2", "dynamic_sampling=false", "engine.batch_slots=8",
        "engine.max_len=64", "engine.max_new_tokens=8", "engine.chunk_steps=8", "engine.min_prefill_bucket=32",
        "engine.min_prefill_rows=8", "engine.min_kv_bucket=32", "env_workers=1", "num_devices=4",
        "mesh.fsdp=2", "mesh.tensor=2", "save_every=100"])
    trainer = RLTrainer.from_config(cfg, resume=False)
    ran: set[tuple] = set()
    step = trainer.rl_step

    def recording_step(state, batch, *args):  # noqa: ANN001, ANN202
        ran.add(("rl_step", *batch["tokens"].shape))
        return step(state, batch, *args)

    trainer.rl_step = recording_step
    trainer.run()
    engine = trainer.engine
    ran |= engine.programs_used
    assert {k[0] for k in ran} == {"rl_step", "prefill", "decode"}
    lowerings = rl_lowerings(cfg, trainer.model, trainer.mesh)
    assert ran <= set(lowerings), ran - set(lowerings)
    assert set(lowerings) - {("rl_step", 8, 64)} == reachable_programs(cfg.engine)
    # the shardings compile lowers with are those of the arrays the run passed (params, slot state)
    decode = next(k for k in sorted(ran) if k[0] == "decode")
    compiled = lowerings[decode].lower().compile()
    (params_in, state_in, *_), _ = compiled.input_shardings
    assert _same(params_in, trainer.state.params) and _same(state_in, engine.state)
    assert _same(compiled.output_shardings, engine.state)
    assert engine.state.cache["k"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None, None)
