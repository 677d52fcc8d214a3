"""Advantage estimators vs numpy loops written from docs/algorithms.md."""
import jax
import numpy as np
import pytest

from vagent_jax.config import ConfigError
from vagent_jax.rl.advantages import ADVANTAGES, compute_advantages, lead_difficulty_weight

EPS = 1e-6


def _groups(seed, n_groups=5, g=4):
    rng = np.random.default_rng(seed)
    rewards = rng.choice([0.0, 1.0], size=(n_groups, g))
    rewards[0] = 1.0  # an all-correct group
    rewards[1, :2] = rng.normal(size=2)  # non-binary rewards too
    lengths = rng.integers(1, 50, size=(n_groups, g)).astype(np.float64)
    return rewards, lengths


def np_advantages(name, rewards_2d, lengths_2d, correct_2d):
    out = []
    for r, length, c in zip(rewards_2d, lengths_2d, correct_2d):
        mean, std = r.mean(), r.std(ddof=1)  # GRPO's sample std, as verl and TRL
        if name in ("grpo", "dapo"):
            a = (r - mean) / (std + EPS)
        elif name == "drgrpo":
            a = r - mean
        elif name == "opo":
            b = 0.0 if len(r) == 1 else (length * r).sum() / length.sum()
            a = r - b
        elif name == "grpo_lead":
            a = (r - mean) / (std + EPS)
            p = c.mean()
            w = lambda q: 0.4 + (1.5 - 0.4) / (1 + np.exp(10 * (q - 0.75)))
            a = np.where(a > 0, a * w(p), a * w(1 - p))
        out.append(a)
    return np.concatenate(out)


def test_registry_is_the_list_of_names():
    assert ADVANTAGES.names() == ("dapo", "drgrpo", "grpo", "grpo_lead", "opo")
    with pytest.raises(ConfigError, match="'advantage'.*'ppo'.*known: dapo"):
        compute_advantages("ppo", np.zeros((2, 2)))


@pytest.mark.parametrize("name", ["grpo", "dapo", "drgrpo", "opo", "grpo_lead"])
def test_estimator_matches_numpy(name):
    rewards, lengths = _groups(0)
    correct = rewards > 0.5
    got = compute_advantages(name, rewards, lengths=lengths.reshape(-1), correct=correct.reshape(-1))
    want = np_advantages(name, rewards, lengths, correct)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_grpo_std_is_the_sample_std_of_torch_like_verl():
    """verl's GRPO outcome advantage: (r - mean) / (torch.std(r) + eps), torch.std unbiased (ddof=1);
    a group of one gets mean 0 and std 1."""
    torch = pytest.importorskip("torch")
    r = np.array([[1.0, 0.0, 0.0, 1.0, 1.0], [0.3, -1.2, 2.0, 0.5, 0.0]], np.float32)
    t = torch.tensor(r)
    want = ((t - t.mean(1, keepdim=True)) / (t.std(1, keepdim=True) + EPS)).numpy()
    got = compute_advantages("grpo", r)
    np.testing.assert_allclose(np.asarray(got), want.reshape(-1), rtol=1e-5, atol=1e-6)
    single = compute_advantages("grpo", np.array([0.7, 0.2, 0.4], np.float32), group_ids=np.array([0, 1, 1]))
    np.testing.assert_allclose(np.asarray(single)[0], 0.7 / (1 + EPS), rtol=1e-6)


@pytest.mark.parametrize("name", ["grpo", "opo", "grpo_lead"])
def test_flat_with_group_ids_matches_grouped(name):
    rewards, lengths = _groups(1)
    n, g = rewards.shape
    perm = np.random.default_rng(2).permutation(n * g)
    ids = np.repeat(np.arange(n), g)
    flat = compute_advantages(name, rewards.reshape(-1)[perm], group_ids=ids[perm], lengths=lengths.reshape(-1)[perm])
    grouped = compute_advantages(name, rewards, lengths=lengths.reshape(-1))
    np.testing.assert_allclose(np.asarray(flat), np.asarray(grouped)[perm], rtol=1e-5, atol=1e-6)


def test_opo_group_of_one_has_zero_baseline_and_ragged_groups():
    rewards = np.array([0.5, 1.0, 0.0, 2.0, -1.0])
    ids = np.array([0, 1, 1, 3, 1])  # group 3 has one member, group 1 three
    lengths = np.array([7.0, 2.0, 6.0, 4.0, 1.0])
    got = np.asarray(compute_advantages("opo", rewards, group_ids=ids, lengths=lengths))
    b1 = (2 * 1.0 + 6 * 0.0 + 1 * -1.0) / 9
    np.testing.assert_allclose(got, [0.5, 1.0 - b1, -b1, 2.0, -1.0 - b1], rtol=1e-6)


def test_grpo_lead_weight_values_and_default_correctness():
    # w(0.75) = A + (B - A)/2 = 0.95; w(0) ~ B; w(1) ~ A.
    np.testing.assert_allclose(np.asarray(lead_difficulty_weight(np.array([0.75, 0.0, 1.0]))),
                               [0.95, 0.4 + 1.1 / (1 + np.exp(-7.5)), 0.4 + 1.1 / (1 + np.exp(2.5))], rtol=1e-6)
    rewards = np.array([[1.0, -1.0, -1.0, -1.0]])  # default correct = reward > 0 -> p = 0.25
    got = np.asarray(compute_advantages("grpo_lead", rewards))
    np.testing.assert_allclose(got, np_advantages("grpo_lead", rewards, np.ones((1, 4)), rewards > 0), rtol=1e-5)


def test_bad_inputs_name_the_tensor():
    with pytest.raises(ValueError, match="lengths"):
        compute_advantages("opo", np.zeros((2, 3)))
    with pytest.raises(ValueError, match="group_ids"):
        compute_advantages("grpo", np.zeros(6))
    with pytest.raises(ValueError, match="lengths must have 6"):
        compute_advantages("opo", np.zeros((2, 3)), lengths=np.ones(5))


def test_jit_with_static_name():
    rewards, lengths = _groups(3)
    fn = jax.jit(compute_advantages, static_argnames="name")
    got = fn("drgrpo", rewards, lengths=lengths.reshape(-1))
    np.testing.assert_allclose(np.asarray(got), np_advantages("drgrpo", rewards, lengths, rewards > 0), atol=1e-6)
