"""Multi-host `vagent sft` / `vagent rl`: 2 processes x 2 CPU devices (jax.distributed on loopback, gloo
collectives) match one process with 4 devices step for step; hosts launched with different configs stop
before compiling; the distributed settings come from flags or the environment.

SFT from scratch (3 steps) runs in the default suite. The full chain is marked slow: a tiny policy is
SFT'd in this process (so RL groups carry reward signal), then the same 3 SFT steps and 2 DAPO steps run
as a 2-process job and as a single 4-device process (both with tasks.shards=2). Losses, rollout rewards
and final params must agree to float32 reduction-order noise.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from vagent_jax.config import ConfigError, load_config
from vagent_jax.data.task_source import ShardedTaskIterator, TaskConfig
from vagent_jax.jobs.sft import SFTConfig, run_sft
from vagent_jax.sharding import MeshConfig, make_mesh
from vagent_jax.train.metrics_writer import JSONL_NAME
from vagent_jax.train.multihost import (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID, config_hash,
                                        disagreeing, distributed_config)
from vagent_jax.train.policy_dir import load_policy

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TASKS = ["tasks.env=coin_test", "tasks.env_modules=[vagent_jax.testing]", "tasks.num_tasks=64"]
MODEL = ["tokenizer.vocab_size=300", "model.vocab_size=320", "model.d_model=32", "model.n_layers=1",
         "model.n_heads=2", "model.n_kv_heads=1", "model.head_dim=16", "model.d_ff=64", "model.max_seq_len=128"]
SFT_STEPS = ["steps=3", "batch_size=8", "seq_len=96", "log_every=1", "save_every=100", "optimizer.lr=0.003",
             "optimizer.total_steps=3", "optimizer.warmup_steps=0"]
RL_STEPS = ["steps=2", "prompts_per_step=4", "group_size=4", "tasks.shards=2", "engine.batch_slots=16",
            "engine.max_len=96", "engine.max_new_tokens=12", "engine.chunk_steps=8", "engine.min_prefill_bucket=64",
            "env_workers=1",
            "optimizer.lr=0.001", "max_rounds=2", "save_every=100"]
TIMEOUT = 300
# float32: all-reduce order differs between gloo and in-process collectives. Params get a looser atol:
# Adam's g / (sqrt(v) + eps) magnifies that noise where a gradient is ~0, and one step moves a weight by
# up to lr = 3e-3, so 1e-4 is ~3% of a single step's largest move.
RTOL, ATOL, PARAM_ATOL = 1e-4, 1e-5, 1e-4
# An element whose gradient is pure rounding noise takes Adam's full step (~lr) with a sign set by the
# summation order, so there two runs may differ by up to 2 lr per step; at most this fraction may do so.
NOISY_FRACTION = 1e-3


def _assert_params_close(a: np.ndarray, b: np.ndarray, lr: float, steps: int) -> None:
    """Params equal to PARAM_ATOL except a few elements (<= NOISY_FRACTION) within 2 lr steps (see above)."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    loose = diff > PARAM_ATOL + RTOL * np.abs(b)
    assert loose.mean() <= NOISY_FRACTION, f"{loose.sum()} of {loose.size} params differ by more than {PARAM_ATOL}"
    assert diff.max() <= 2 * lr * steps + PARAM_ATOL, f"max param difference {diff.max():.3g} > 2 lr steps"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAGENT_")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def _cli(command: str, overrides: list[str], dist: list[str] = ()) -> list[str]:
    """`vagent COMMAND CONFIG [flags] k=v ...`; CONFIG is an empty YAML (the recipe's defaults)."""
    config = Path(os.environ.get("PYTEST_TMP_EMPTY_YAML", ""))
    return [sys.executable, "-m", "vagent_jax.cli", command, str(config), *dist, *overrides]


@pytest.fixture(autouse=True, scope="module")
def _empty_yaml(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN202
    path = tmp_path_factory.mktemp("mh_cfg") / "empty.yaml"
    path.write_text("{}\n")
    os.environ["PYTEST_TMP_EMPTY_YAML"] = str(path)
    yield
    os.environ.pop("PYTEST_TMP_EMPTY_YAML", None)


def _run_job(command: str, overrides: list[str], processes: int) -> list[subprocess.CompletedProcess]:
    """One job: `processes` processes x (4 / processes) CPU devices; returns each process's result."""
    if processes == 1:
        return [subprocess.run(_cli(command, overrides), env=_env(4), cwd=ROOT, capture_output=True, text=True,
                               timeout=TIMEOUT)]
    port = _free_port()
    procs = [subprocess.Popen(_cli(command, overrides, [f"--coordinator=127.0.0.1:{port}",
                                                        f"--num-processes={processes}", f"--process-id={i}"]),
                              env=_env(4 // processes), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for i in range(processes)]
    return wait_all(procs, TIMEOUT)


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[subprocess.CompletedProcess]:
    """Wait for every process (text pipes); on a timeout kill them all and re-raise."""
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def _check(results: list[subprocess.CompletedProcess]) -> None:
    for i, r in enumerate(results):
        assert r.returncode == 0, f"process {i} failed ({r.returncode}):\n{r.stderr[-4000:]}"


def _scalars(run_dir: Path) -> dict[int, dict[str, float]]:
    lines = (run_dir / "tb" / JSONL_NAME).read_text().splitlines()
    return {json.loads(ln)["step"]: json.loads(ln)["scalars"] for ln in lines if ln}


def _params(run_dir: Path) -> list[np.ndarray]:
    mesh = make_mesh(MeshConfig(), devices=jax.devices()[:1])
    return [np.asarray(x) for x in jax.tree.leaves(load_policy(run_dir, mesh).params)]


@pytest.fixture(scope="module")
def base_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy SFT'd on the coin env (copies visible hints, guesses on '?'): RL groups carry signal."""
    sys.path.insert(0, str(TESTS))
    out = tmp_path_factory.mktemp("mh_base")
    cfg = load_config(SFTConfig, None, TASKS + MODEL + [
        f"out_dir={out}", f"tasks.data_dir={out / 'data'}", "steps=60", "batch_size=8", "seq_len=96",
        "optimizer.lr=0.01", "optimizer.total_steps=60", "optimizer.warmup_steps=5", "num_devices=1"])
    run_sft(cfg)
    return out


def _pieces(model_file: Path) -> list[str]:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def _assert_sft_match(multi: Path, single: Path) -> None:
    m, s = _scalars(multi), _scalars(single)
    assert sorted(m) == sorted(s) == [1, 2, 3]
    for step in (1, 2, 3):
        for tag in ("sft/loss", "sft/grad_norm", "sft/tokens"):
            np.testing.assert_allclose(m[step][tag], s[step][tag], rtol=RTOL, atol=ATOL, err_msg=f"{tag} {step}")
    for a, b in zip(_params(multi), _params(single)):
        _assert_params_close(a, b, lr=0.003, steps=3)


def _assert_one_writer(run: Path) -> None:
    """Metrics written once (one TensorBoard event file, by process 0); checkpoints and summary present."""
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1, sorted((run / "tb").iterdir())
    assert (run / "summary.json").is_file() and (run / "checkpoints").is_dir()


def test_sft_from_scratch_two_processes_match_one_process(tmp_path: Path) -> None:
    """Process 0 builds the tasks and trains the tokenizer, process 1 reads them; 3 steps, same numbers."""
    runs = {}
    for name, processes in (("multi", 2), ("single", 1)):
        runs[name] = tmp_path / name
        _check(_run_job("sft", TASKS + MODEL + SFT_STEPS + [f"tasks.data_dir={tmp_path / 'data'}",
                                                            f"out_dir={runs[name]}"], processes))
    pieces = [_pieces(runs[name] / "tokenizer" / "tokenizer.model") for name in ("multi", "single")]
    assert pieces[0] == pieces[1] and len(pieces[0]) == 300  # (the files differ only in their own path)
    _assert_sft_match(runs["multi"], runs["single"])
    _assert_one_writer(runs["multi"])


@pytest.mark.slow  # ~2.5 min on a loaded 2-core machine: six CLI processes, each compiling engine programs
def test_sft_then_dapo_two_processes_match_one_process(base_policy: Path, tmp_path: Path) -> None:
    data = f"tasks.data_dir={base_policy / 'data'}"
    runs = {}
    for name, processes in (("multi", 2), ("single", 1)):
        sft, rl = tmp_path / f"{name}_sft", tmp_path / f"{name}_rl"
        _check(_run_job("sft", TASKS + SFT_STEPS + [data, f"init_from={base_policy}", f"out_dir={sft}"], processes))
        _check(_run_job("rl", TASKS + RL_STEPS + [data, f"init_from={sft}", f"out_dir={rl}"], processes))
        runs[name] = (sft, rl)
    (m_sft, m_rl), (s_sft, s_rl) = runs["multi"], runs["single"]
    _assert_sft_match(m_sft, s_sft)

    m, s = _scalars(m_rl), _scalars(s_rl)
    assert sorted(m) == sorted(s) == [1, 2]
    assert max(s[k]["rollout/groups_kept"] for k in s) > 0, "no group carried signal: the update was not tested"
    for step in (1, 2):  # same prompts, same sampled tokens, same rewards: dynamic sampling agrees exactly
        for tag in ("rollout/reward_mean", "rollout/groups_kept", "rollout/groups_dropped",
                    "rollout/generated_tokens"):
            assert m[step].get(tag) == s[step].get(tag), (step, tag, m[step].get(tag), s[step].get(tag))
        for tag in ("update/loss", "update/grad_norm", "update/entropy"):
            if tag in s[step]:
                np.testing.assert_allclose(m[step][tag], s[step][tag], rtol=RTOL, atol=ATOL, err_msg=tag)
    for a, b in zip(_params(m_rl), _params(s_rl)):  # the SFT differences carry over; RL adds 2 steps at 1e-3
        _assert_params_close(a, b, lr=0.003, steps=5)
    _assert_one_writer(m_sft)
    _assert_one_writer(m_rl)


def test_hosts_with_different_configs_stop_before_compiling(tmp_path: Path) -> None:
    out = f"out_dir={tmp_path / 'run'}"
    port = _free_port()
    procs = [subprocess.Popen(_cli("sft", [out, f"steps={3 + i}"], [f"--coordinator=127.0.0.1:{port}",
                                                                    "--num-processes=2", f"--process-id={i}"]),
                              env=_env(1), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2, err[-2000:]
        assert "processes [1] run a different config than process 0" in err, err[-2000:]
    assert not (tmp_path / "run").exists()  # stopped before the output dir, the data or any model program


def test_distributed_settings_from_flags_or_environment() -> None:
    env = {ENV_COORDINATOR: "10.0.0.2:8476", ENV_NUM_PROCESSES: "4", ENV_PROCESS_ID: "3"}
    cfg = distributed_config(environ=env)
    assert (cfg.coordinator, cfg.num_processes, cfg.process_id, cfg.explicit) == ("10.0.0.2:8476", 4, 3, True)
    assert distributed_config(process_id=1, environ=env).process_id == 1  # a flag wins over the environment
    assert not distributed_config(environ={}).explicit
    with pytest.raises(ConfigError, match="missing \\['process_id'\\]"):
        distributed_config("h:1", 2, environ={})
    with pytest.raises(ConfigError, match="process_id"):
        distributed_config("h:1", 2, 2, environ={})
    with pytest.raises(ConfigError, match="coordinator"):
        distributed_config("nohostport", 2, 0, environ={})


def test_config_hash_names_disagreeing_processes() -> None:
    a = load_config(SFTConfig, None, ["steps=3"])
    assert config_hash(a) == config_hash(load_config(SFTConfig, None, ["steps=3"]))
    assert config_hash(a) != config_hash(load_config(SFTConfig, None, ["steps=4"]))
    assert disagreeing(["x", "y", "x"]) == {"x": [0, 2], "y": [1]}


def test_sharded_tasks_concatenate_to_the_single_process_list(tmp_path: Path) -> None:
    sys.path.insert(0, str(TESTS))
    cfg = load_config(TaskConfig, None, ["env=coin_test", "env_modules=[vagent_jax.testing]", "num_tasks=12",
                                        "shards=4", f"data_dir={tmp_path}"])
    one = ShardedTaskIterator(cfg, 0, 1)
    parts = [ShardedTaskIterator(cfg, p, 2) for p in range(2)]
    assert parts[1].first_index(8) == 4 and parts[1].local_count(8) == 4
    for _ in range(3):  # past the end of an epoch of a 3-task shard
        assert one.take(8) == parts[0].take(8) + parts[1].take(8)
    states = parts[0].get_state() + parts[1].get_state()
    resumed = ShardedTaskIterator(cfg, 1, 2)
    resumed.set_state(states)
    assert resumed.take(8) == parts[1].take(8)
    with pytest.raises(ConfigError, match="prompts_per_step"):
        one.take(6)
    with pytest.raises(ConfigError, match="tasks.shards"):
        ShardedTaskIterator(cfg, 0, 3)
