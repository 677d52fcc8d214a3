"""Smoke test of the main job at CI size: every stage runs, the checkpoint restores, the event files hold
the entropy, confidence and reward tags."""
from __future__ import annotations

import json

import jax

from vagent_jax.cli import main
from vagent_jax.train.checkpoint import Checkpointer, abstract_of
from vagent_jax.train.metrics_writer import read_scalars


def test_demo_quick_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", f"out_dir={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_tasks"] == 16 and summary["sft_steps"] == 30
    assert 0.0 <= summary["pass_rate"] <= 1.0
    assert summary["compiled_decode_programs"] <= 8
    assert (out / "tokenizer" / "tokenizer.model").is_file()
    assert (out / "report.md").is_file() and (out / "report.png").stat().st_size > 0
    tags = read_scalars(out / "tb")
    for tag in ("sft/loss", "sft/entropy", "eval/sampling_entropy", "eval/confidence", "eval/reward_mean",
                "eval/pass_rate"):
        assert tag in tags, tag
    losses = [v for _, v in tags["sft/loss"]]
    assert losses[-1] < losses[0]  # SFT moved the policy
    ckpt = Checkpointer(out / "checkpoints")
    assert ckpt.latest_step() == 30
    restored = ckpt.restore(30, abstract_of(_state_like(ckpt, out)))
    assert restored.step == 30


def _state_like(ckpt, out):
    """Rebuild the abstract train state of the quick demo to restore into."""
    from vagent_jax.config import load_config
    from vagent_jax.demo import QUICK_OVERRIDES, DemoConfig
    from vagent_jax.sharding import MeshConfig, make_mesh
    from vagent_jax.train.train_state import create_train_state

    cfg = load_config(DemoConfig, None, QUICK_OVERRIDES + [f"out_dir={out}"])
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    return create_train_state(cfg.model, cfg.optimizer, mesh, jax.random.key(1))


def test_demo_unwritable_output_dir_is_named(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    try:
        main(["demo", "--quick", f"out_dir={blocker}/sub"])
    except SystemExit as e:
        assert "is not writable" in str(e) and str(blocker) in str(e)
    else:
        raise AssertionError("expected SystemExit")
