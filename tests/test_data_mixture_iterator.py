"""RL prompts from a mixture: counts follow the weights, tasks carry their member, state resumes exactly."""
from __future__ import annotations

from collections import Counter

from vagent_jax.config import load_config
from vagent_jax.data.mixture_iterator import MixtureTaskIterator
from vagent_jax.data.task_source import TaskConfig

MIX = "mix=[{env: calculator, name: calc}, {env: countdown, name: cd, weight: 3}]"


def _cfg(tmp_path) -> TaskConfig:
    return load_config(TaskConfig, None, [MIX, "num_tasks=40", f"data_dir={tmp_path}"])


def test_counts_follow_weights_and_tasks_are_tagged(tmp_path):
    it = MixtureTaskIterator(_cfg(tmp_path))
    got = it.take(8)
    assert Counter(t["mix_env"] for t in got) == {"calc": 2, "cd": 6}
    assert all(("expression" in t) == (t["mix_env"] == "calc") for t in got)
    it.set_weights([1.0, 0.0])
    assert Counter(t["mix_env"] for t in it.take(8)) == {"calc": 8}


def test_state_round_trip_resumes_the_same_tasks(tmp_path):
    a = MixtureTaskIterator(_cfg(tmp_path))
    a.take(8)
    state = a.get_state()
    want = a.take(8)
    b = MixtureTaskIterator(_cfg(tmp_path))
    b.set_state(state)
    assert b.take(8) == want


def test_two_processes_draw_the_single_process_list(tmp_path):
    cfg = load_config(TaskConfig, None, [MIX, "num_tasks=40", f"data_dir={tmp_path}", "shards=2"])
    one = MixtureTaskIterator(cfg, 1, 0, 1).take(8)
    parts = [MixtureTaskIterator(cfg, 1, p, 2) for p in range(2)]
    # every process draws its share of every member: the union is the single-process step's prompts
    assert sorted(map(str, one)) == sorted(str(t) for p in parts for t in p.take(8))
    assert parts[1].first_index(8) == 4 and parts[0].local_count(8) == 4
