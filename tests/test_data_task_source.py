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


# ---- tasks.env_args: the environment's constructor arguments from a run recipe -------------------------------
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from vagent_jax.config import ConfigError, load_config  # noqa: E402


@register_env("args_probe")
class ArgsProbeEnv(Environment):
    """Records its constructor argument in every task it generates."""

    name = "args_probe"

    def __init__(self, max_turns=None, tag: str = "default"):
        self.tag = tag
        super().__init__(max_turns)

    def prompt(self, task):
        return str(task["x"])

    def verify(self, task, answer):
        return answer == task["tag"], {}

    def generate_tasks(self, n, seed, difficulty=1):
        return [{"x": i, "tag": self.tag} for i in range(n)]


def test_env_args_build_the_env_and_its_tasks(tmp_path):
    cfg = load_config(TaskConfig, None, ["env=args_probe", "env_args={tag: custom}", "num_tasks=3", "eval_tasks=2",
                                         f"data_dir={tmp_path}"])
    assert task_source.make_env(cfg).tag == "custom"
    assert [t["tag"] for t in task_source.eval_tasks(cfg)] == ["custom", "custom"]
    src = train_tasks(cfg)
    assert {src[i]["tag"] for i in range(len(src))} == {"custom"}
    plain = load_config(TaskConfig, None, ["env=args_probe", "num_tasks=3", f"data_dir={tmp_path}"])
    assert task_source.make_env(plain).tag == "default"


@pytest.mark.parametrize("override, key", [("env_args={colour: red}", "env_args"),
                                           ("env_args=[1, 2]", "env_args")])
def test_bad_env_args_are_named(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(TaskConfig, None, ["env=args_probe", override])
    assert f"'{key}'" in str(e.value)


_REFUSAL = r'''
from vagent_jax.config import ConfigError, load_config
from vagent_jax.jobs.rl import RLConfig
try:
    load_config(RLConfig, None, ["init_from=/nonexistent", "tasks.env=python"])
except ConfigError as e:
    print("REFUSED", e)
cfg = load_config(RLConfig, None, ["init_from=/nonexistent", "tasks.env=python", "tasks.env_args={allow_unisolated: true}"])
print("ALLOWED", cfg.tasks.env_args)
'''


def test_a_recipe_sets_allow_unisolated_where_no_isolation_can_be_had():
    """In a user namespace allowed no nested ones, a run recipe with the python env stops naming the full
    key tasks.env_args.allow_unisolated; with that key set true it loads."""
    if subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True).returncode != 0:
        pytest.skip("this kernel forbids user namespaces already")
    shell = f"echo 0 > /proc/sys/user/max_user_namespaces && exec {sys.executable} -c \"$0\""
    r = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", shell, _REFUSAL], capture_output=True,
                       text=True, timeout=180, cwd=Path(__file__).resolve().parents[1])
    assert "REFUSED config key 'tasks.env_args.allow_unisolated'" in r.stdout, r.stdout + r.stderr
    assert "ALLOWED {'allow_unisolated': True}" in r.stdout, r.stdout + r.stderr
