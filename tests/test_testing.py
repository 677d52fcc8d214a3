"""vagent_jax/testing.py: random params have init_params' tree, shapes and dtypes, the asked spread, exact
unit norms unless asked otherwise, and depend on the seed only; the tiny config takes overrides."""
import jax
import numpy as np
import pytest

from vagent_jax.models.transformer import init_params
from vagent_jax.testing import TINY_MODEL, random_params, tiny_model_config

CFG = tiny_model_config(n_layers=2, d_ff=128, qk_norm=True, init_std=0.05)


def _spec(tree):
    return jax.tree.map(lambda a: (a.shape, a.dtype), tree)


def test_random_params_have_init_params_tree_and_spread():
    params = random_params(CFG)
    assert _spec(params) == _spec(jax.eval_shape(lambda: init_params(CFG, jax.random.key(0))))
    assert float(params["final_norm"].min()) == float(params["layers"]["q_norm"].max()) == 1.0
    assert 0.045 < float(np.std(params["layers"]["w_up"])) < 0.055  # cfg.init_std by default
    assert 0.27 < float(np.std(random_params(CFG, std=0.3)["embed"])) < 0.33


def test_norm_noise_and_seeds():
    noisy = random_params(CFG, norm_std=0.1)["layers"]["attn_norm"]
    assert 0.07 < float(np.std(noisy)) < 0.13 and abs(float(np.mean(noisy)) - 1.0) < 0.05
    a, b, c = random_params(CFG, 3), random_params(CFG, 3), random_params(CFG, 4)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert not np.array_equal(a["embed"], c["embed"])


def test_tiny_model_config_overrides():
    cfg = tiny_model_config(max_seq_len=256)
    assert cfg.max_seq_len == 256 and cfg.d_model == TINY_MODEL["d_model"]
    with pytest.raises(TypeError):
        tiny_model_config(not_a_field=1)


def test_tiny_env_demonstrations_pass_and_hints_show_the_target():
    from vagent_jax.envs.registry import get_env

    env = get_env("coin_test")
    tasks = env.generate_tasks(300, seed=0)
    assert tasks == env.generate_tasks(300, seed=0) and tasks != env.generate_tasks(300, seed=1)
    for t in tasks:
        answer = env.demonstration(t)[-1].content.removeprefix("<answer>").removesuffix("</answer>")
        assert env.verify(t, answer)[0] and not env.verify(t, "b" if t["target"] == "a" else "a")[0]
        assert t["hint"] in (t["target"], "?")
    shown = np.mean([t["hint"] != "?" for t in tasks])
    assert 0.55 < shown < 0.78  # 2/3 by construction; 300 draws: +-4 standard deviations


def test_importing_the_fixtures_leaves_jax_unimported():
    """Env workers import this module for the tiny env (tasks.env_modules=[vagent_jax.testing]): it must stay
    light, with jax imported only inside the functions that need it."""
    import subprocess
    import sys

    code = "import sys, vagent_jax.testing; print(sorted(m for m in ('jax', 'flax', 'optax') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
