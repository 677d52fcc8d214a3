"""A worker's start-up (imports of the verifier and the env modules) is not charged to a request's
deadline: with an env module that takes 3 s to import and a 1 s request budget, the first requests of a
fresh "spawn" pool come back correct (before the fix every one timed out and the timeout replaced the
worker, whose next request timed out again). A worker that never starts costs its head request only."""
from __future__ import annotations

import pathlib
import sys

import pytest

from vagent_jax.envs.worker_pool import EnvWorkerPool

sys.path.insert(0, str(pathlib.Path(__file__).parent))  # spawned workers inherit sys.path


def _drain(pool: EnvWorkerPool, n: int, timeout_s: float = 120.0) -> dict:
    got: dict = {}
    for _ in range(int(timeout_s / 0.5)):
        got.update(pool.poll(timeout=0.5))
        if len(got) == n:
            return got
    raise AssertionError(f"{len(got)} of {n} results within {timeout_s} s: {got}")


def _msgs(answer: str) -> list[dict]:
    return [{"role": "user", "content": "Say a"}, {"role": "assistant", "content": f"<answer>{answer}</answer>"}]


def test_start_up_is_not_charged_to_the_first_requests() -> None:
    with EnvWorkerPool(num_workers=2, env_modules=["slow_import_env"], start_method="spawn",
                       deadline_margin_s=0.5) as pool:
        for i in range(6):
            pool.submit(i, "slow_import_echo", {}, {"target": "a"}, _msgs("a" if i % 2 == 0 else "b"))
        got = _drain(pool, 6)
        assert {i: (s.error, s.reward.correct) for i, s in got.items()} == {
            i: (None, i % 2 == 0) for i in range(6)}, got
        assert pool.metrics().get("workers_started") == 2 and "workers_replaced" not in pool.metrics()


def test_a_worker_that_does_not_start_costs_its_head_request() -> None:
    with EnvWorkerPool(num_workers=1, env_modules=["slow_import_env"], start_method="spawn",
                       start_timeout_s=0.5) as pool:
        pool.submit("r", "slow_import_echo", {}, {"target": "a"}, _msgs("a"))
        got = _drain(pool, 1)
        assert got["r"].error == "worker_died" and "did not start" in got["r"].reward.details.get("detail", "")


def test_start_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="start_timeout_s"):
        EnvWorkerPool(num_workers=1, start_timeout_s=0)
