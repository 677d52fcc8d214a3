"""Test set-up: 8 fake CPU devices (set before jax is imported) and tiny shared fixtures."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TESTS = Path(__file__).resolve().parent
COIN = ["tasks.env=coin_test", "tasks.env_modules=[vagent_jax.testing]"]  # vagent_jax/testing.py's tiny env


@pytest.fixture(scope="module")
def coin_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SFT policy on the coin fixture env (4 steps): the start of RL resume and kill tests."""
    from vagent_jax.config import load_config
    from vagent_jax.jobs.sft import SFTConfig, run_sft

    sys.path.insert(0, str(TESTS))
    out = tmp_path_factory.mktemp("coin_sft")
    cfg = load_config(SFTConfig, None, COIN + [
        f"out_dir={out}", f"tasks.data_dir={out / 'data'}", "tasks.num_tasks=32", "steps=4", "batch_size=8",
        "seq_len=96", "tokenizer.vocab_size=300", "model.vocab_size=320", "model.d_model=32", "model.n_layers=1",
        "model.n_heads=2", "model.n_kv_heads=1", "model.head_dim=16", "model.d_ff=64", "model.max_seq_len=128",
        "optimizer.total_steps=4", "optimizer.warmup_steps=0", "num_devices=1", "save_every=4"])
    run_sft(cfg)
    return out
