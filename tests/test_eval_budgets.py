"""vagent_jax/eval/budgets.py: the shipped eval config fits a demo-shaped policy, and each budget that
cannot hold stops before any compile naming its key (prompt + reply, GenSelect frame, GenSelect candidates)."""
from __future__ import annotations

from pathlib import Path

import pytest

from vagent_jax.config import load_config
from vagent_jax.envs import get_env
from vagent_jax.eval.budgets import check_eval_budgets
from vagent_jax.jobs.eval import EvalConfig
from vagent_jax.testing import tiny_model_config, tiny_tokenizer
from vagent_jax.train.policy_dir import Policy

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "eval_calculator.yaml"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _policy(tokenizer, max_seq_len: int) -> Policy:
    """A policy without params: the budgets read only its tokenizer, template and context."""
    model = tiny_model_config(vocab_size=tokenizer.vocab_size, max_seq_len=max_seq_len)
    return Policy(model, tokenizer, "chatml", None, 0, Path("."), Path("."))


def _check(tokenizer, max_seq_len: int, overrides: list[str]) -> None:
    cfg = load_config(EvalConfig, CONFIG, ["num_tasks=8", *overrides])
    tasks = get_env("calculator").generate_tasks(cfg.num_tasks, 10_000, 1)
    check_eval_budgets(_policy(tokenizer, max_seq_len), get_env("calculator"), tasks, cfg.engine, cfg.genselect,
                       cfg.k)


def test_shipped_config_fits_the_demo_context(tokenizer) -> None:
    _check(tokenizer, 256, [])  # the demo policy: max_seq_len 256; the config: engine.max_len 192


def test_prompt_and_reply_must_fit_max_len(tokenizer) -> None:
    with pytest.raises(ValueError, match=r"engine\.max_len: task \d+'s prompt takes \d+ tokens.*max_new_tokens=150"):
        _check(tokenizer, 256, ["engine.max_new_tokens=150"])


def test_genselect_frame_that_cannot_fit_names_enabled(tokenizer) -> None:
    # the README bug: 4 (or 2) candidates in max_len 192 (or 256) only failed after minutes of sampling
    for max_len, candidates in ((192, 4), (256, 2)):
        with pytest.raises(ValueError, match=r"genselect\.enabled: .*engine\.max_len=" + str(max_len)):
            _check(tokenizer, 256, ["genselect.enabled=true", f"genselect.candidates={candidates}",
                                    f"engine.max_len={max_len}"])


def test_too_many_genselect_candidates_names_candidates(tokenizer) -> None:
    base = ["genselect.enabled=true", "engine.max_len=512", "k=16"]
    _check(tokenizer, 512, [*base, "genselect.candidates=4"])
    with pytest.raises(ValueError, match=r"genselect\.candidates: 16 candidates leave \d+ tokens each"):
        _check(tokenizer, 512, [*base, "genselect.candidates=16"])
    _check(tokenizer, 512, [*base, "genselect.candidates=16", "k=4", "deepconf.warmup=2"])  # min(candidates, k) shown
