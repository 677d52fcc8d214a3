"""Generated task sets: built once into TFDS and reused, but never reused after the generator changed."""
from __future__ import annotations

from vagent_jax.data import task_source
from vagent_jax.data.task_source import TaskConfig, train_tasks
from vagent_jax.envs.base import Environment
from vagent_jax.envs.registry import register_env

OFFSET = {"value": 0}


@register_env("changing_generator")
class ChangingGeneratorEnv(Environment):
    """Tasks whose numbers depend on OFFSET: a stand-in for a generator edited between two runs."""

    name = "changing_generator"

    def prompt(self, task):
        return str(task["x"])

    def verify(self, task, answer):
        return answer == str(task["x"]), {}

    def generate_tasks(self, n, seed, difficulty=1):
        return [{"x": seed * 1000 + i + OFFSET["value"]} for i in range(n)]


def _xs(cfg):
    src = train_tasks(cfg)
    return sorted(src[i]["x"] for i in range(len(src)))


def test_changed_generator_builds_a_new_dataset(tmp_path):
    cfg = TaskConfig(env="changing_generator", num_tasks=6, eval_tasks=0, data_dir=str(tmp_path))
    first = _xs(cfg)
    assert first == list(range(6))
    task_source._generated.cache_clear()
    assert _xs(cfg) == first  # same generator: the build is reused
    OFFSET["value"] = 100
    task_source._generated.cache_clear()
    assert _xs(cfg) == list(range(100, 106))
    assert len(list(tmp_path.glob("generated_tasks/changing-generator-d1-s0-n6-*"))) == 2
