"""Smoke test of the main job at CI size: every stage runs (tokenizer, SFT, held-out eval, DAPO, eval,
report), the checkpoints restore, the event files hold the entropy, confidence and reward tags, and an
interrupted demo resumes without redoing finished work."""
from __future__ import annotations

import json

import jax

from vagent_jax.jobs import demo
from vagent_jax.cli import main
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train.metrics_writer import read_scalars
from vagent_jax.train.policy_dir import load_policy


def test_demo_quick_runs_every_stage(tmp_path, capfd):
    out = tmp_path / "demo"
    data = f"tasks.data_dir={tmp_path / 'data'}"
    assert main(["demo", "--quick", f"out_dir={out}", data]) == 0
    summary = json.loads((out / "summary.json").read_text())
    printed, errors = capfd.readouterr()
    # piped (not a TTY): the stages and a progress line per sft.log_every / rl.log_every steps, no TFDS noise
    assert "vagent demo: 1/4 SFT" in printed and "vagent demo: 4/4" in printed
    assert "sft step 5/30: loss=" in errors and "rl step 2/2: reward=" in errors  # the bar's stream: stderr
    assert "building task set calculator-" in printed and "nothing is downloaded" in printed
    assert "Downloading" not in printed + errors and "absl" not in errors
    assert summary["eval_tasks"] == 16 and summary["sft_steps"] == 30 and summary["rl_steps"] == 2
    # SFT validated its held-out slice every 15 steps through the real engine and environment
    assert [s for s, _ in summary["sft_validation_curve"]] == [15, 30] and not summary["sft_stopped_early"]
    assert all(0.0 <= r <= 1.0 for _, r in summary["sft_validation_curve"])
    for stage in ("sft", "rl"):
        lo, hi = summary[f"{stage}_pass_rate_95ci"]
        assert 0.0 <= lo <= summary[f"{stage}_pass_rate"] <= hi <= 1.0
    assert (out / "sft" / "tokenizer" / "tokenizer.model").is_file()
    assert (out / "report.md").is_file() and (out / "report.png").stat().st_size > 0
    assert "What each stage contributed" in (out / "report.md").read_text()
    sft_tags, rl_tags = read_scalars(out / "sft" / "tb"), read_scalars(out / "rl" / "tb")
    assert "sft/loss" in sft_tags and "sft/entropy" in sft_tags
    for tag in ("rollout/sampling_entropy", "rollout/confidence", "rollout/reward_mean", "rollout/pass_rate"):
        assert tag in rl_tags, tag
    # report.png's reward and length curves read tags this run logs (a renamed tag would leave a "no data"
    # panel); the quick run's groups carry no signal, so the update/* entropy tags are checked on a run with
    # updates in test_jobs_rl.py
    panels = demo.report_panels(summary["sft_eval"], summary["rl_eval"], summary["eval_tasks"])
    assert [p.tag for p in panels[:3]] == ["rollout/reward_mean", "update/entropy", "rollout/response_length_mean"]
    assert panels[0].tag in rl_tags and panels[2].tag in rl_tags
    assert panels[3].values["SFT + DAPO"] == (summary["rl_pass_rate"], *summary["rl_pass_rate_95ci"])
    assert panels[3].values["SFT"] == (summary["sft_pass_rate"], *summary["sft_pass_rate_95ci"])
    losses = [v for _, v in sft_tags["sft/loss"]]
    assert losses[-1] < losses[0]  # SFT moved the policy
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    assert load_policy(out / "sft", mesh).step == 30 and load_policy(out / "rl", mesh).step == 2
    # resuming a finished demo redoes nothing: same evaluations, same checkpoints
    before = (out / "eval_rl.json").read_text()
    assert main(["demo", "--quick", "--resume", f"out_dir={out}", data]) == 0
    assert (out / "eval_rl.json").read_text() == before


def test_demo_unwritable_output_dir_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    try:
        main(["demo", "--quick", f"out_dir={blocker}/sub"])
    except SystemExit as e:
        assert "is not writable" in str(e) and str(blocker) in str(e)
    else:
        raise AssertionError("expected SystemExit")
