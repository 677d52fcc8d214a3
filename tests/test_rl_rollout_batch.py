"""The RL step's update input from kept rollouts (`build_step_batch`): group advantages per group,
overlong filtering on the loss rows, the fixed-shape padded arrays, and the mini-batch slices."""
from __future__ import annotations

import numpy as np
import pytest

from eval_fixture import scripted_result
from vagent_jax.envs import get_env
from vagent_jax.rl.rollout_batch import build_step_batch

TASK = get_env("calculator").generate_tasks(1, 0, 1)[0]
SEQ = 16


def results(spec: list[tuple[bool, int, bool]]) -> list:
    """Rollout results from (correct, generated tokens, truncated)."""
    return [scripted_result(TASK, "x", c, [1.0] * n, sample_index=i, truncated=t) for i, (c, n, t) in enumerate(spec)]


def build(rs: list, rewards: list[float], **kw):  # noqa: ANN003, ANN201
    args = dict(advantage="drgrpo", group_size=2, l_max=8, overlong_filter=False, rows=8, seq_len=SEQ, pad_id=0,
                updates=1)
    return build_step_batch(rs, np.asarray(rewards, np.float32), **{**args, **kw})


def test_advantages_are_per_group_and_padding_rows_stay_empty() -> None:
    rs = results([(True, 3, False), (False, 4, False), (True, 2, False), (False, 5, False)])
    sb = build(rs, [1.0, 0.0, 3.0, 1.0])
    np.testing.assert_allclose(sb.advantages, [0.5, -0.5, 1.0, -1.0])  # Dr. GRPO: r - group mean
    a = sb.arrays
    assert a["tokens"].shape == (8, SEQ) and a["advantages"].shape == (8,)
    np.testing.assert_allclose(a["advantages"], [0.5, -0.5, 1.0, -1.0, 0, 0, 0, 0])
    # the loss sees generated tokens only: 3 of row 0's 5 tokens (2 prompt tokens first), none of padding
    assert a["loss_mask"][0].tolist() == [0, 0, 1, 1, 1] + [0] * (SEQ - 5)
    assert a["loss_mask"][4:].sum() == 0 and a["tokens"][4:].sum() == 0
    assert sb.keep_rows.all() and sb.parts == [slice(0, 8)]


def test_overlong_filter_zeroes_the_loss_of_truncated_and_too_long_rows() -> None:
    rs = results([(True, 3, True), (False, 9, False), (True, 3, False), (False, 3, False)])
    kept = build(rs, [1.0, 0.0, 1.0, 0.0], overlong_filter=True)
    assert kept.keep_rows.tolist() == [False, False, True, True]  # cut by the budget, or longer than L_max 8
    assert kept.arrays["loss_mask"][:2].sum() == 0 and kept.arrays["loss_mask"][2:4].sum() == 6
    unfiltered = build(rs, [1.0, 0.0, 1.0, 0.0])
    assert unfiltered.keep_rows.all() and unfiltered.arrays["loss_mask"][:2].sum() == 12


def test_mini_batches_of_padding_alone_are_dropped() -> None:
    rs = results([(True, 3, False), (False, 3, False)])
    assert build(rs, [1.0, 0.0], updates=4).parts == [slice(0, 2)]
    assert build(rs * 3, [1.0, 0.0] * 3, updates=4).parts == [slice(0, 2), slice(2, 4), slice(4, 6)]


def test_rewards_must_match_the_rollouts() -> None:
    with pytest.raises(ValueError, match="3 rollouts but 2 rewards"):
        build(results([(True, 3, False)] * 3), [1.0, 0.0])
