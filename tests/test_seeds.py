"""Random streams by purpose: deterministic, distinct across purposes and indices, no arithmetic collisions."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from vagent_jax.seeds import Purpose, purpose_key, purpose_rng, purpose_seed


def test_purpose_seed_is_deterministic_uint32_and_distinct():
    a = purpose_seed(3, Purpose.ROLLOUT, 5)
    assert a == purpose_seed(3, Purpose.ROLLOUT, 5) and 0 <= a < 2**32
    seeds = {purpose_seed(s, p, i) for s in range(3) for p in Purpose for i in range(20)}
    assert len(seeds) == 3 * len(Purpose) * 20


def test_no_collision_where_seed_arithmetic_collided():
    # the old rollout seed seed * 1_000_003 + step gave (seed 0, step 1_000_003) and (seed 1, step 0) one stream;
    # the old demo eval seed seed + 7 gave run seed 0's eval the stream of run seed 7's training.
    assert 0 * 1_000_003 + 1_000_003 == 1 * 1_000_003 + 0
    assert purpose_seed(0, Purpose.ROLLOUT, 1_000_003) != purpose_seed(1, Purpose.ROLLOUT, 0)
    assert purpose_seed(0, Purpose.HELD_OUT_EVAL) != purpose_seed(7, Purpose.ROLLOUT, 0)


def test_purpose_key_folds_the_purpose_into_the_root_key():
    k = purpose_key(4, Purpose.UPDATE)
    want = jax.random.fold_in(jax.random.key(4), int(Purpose.UPDATE))
    np.testing.assert_array_equal(jax.random.key_data(k), jax.random.key_data(want))
    other = purpose_key(4, Purpose.PARAMS)
    assert not np.array_equal(jax.random.key_data(k), jax.random.key_data(other))


def test_purpose_rng_streams_differ_by_index():
    a = purpose_rng(1, Purpose.SFT_ORDER, 0).permutation(50)
    assert np.array_equal(a, purpose_rng(1, Purpose.SFT_ORDER, 0).permutation(50))
    assert not np.array_equal(a, purpose_rng(1, Purpose.SFT_ORDER, 1).permutation(50))


def test_negative_seed_or_index_is_refused():
    with pytest.raises(ValueError, match="must be >= 0"):
        purpose_seed(-1, Purpose.ROLLOUT)
    with pytest.raises(ValueError, match="must be >= 0"):
        purpose_seed(0, Purpose.ROLLOUT, -2)
