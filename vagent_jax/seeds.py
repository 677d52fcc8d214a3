"""Every random stream of a run, derived from its one `seed` by purpose.

A run has one root seed. Each consumer of randomness (parameter init, SFT data order, rollout sampling,
the update's key, evaluation sampling, ...) draws from its own stream: `purpose_key(seed, Purpose.X)` for
JAX keys (fold_in of the root key), `purpose_seed(seed, Purpose.X, i, ...)` for the integer seeds the
decode engine, environments and numpy take (a SeedSequence hash of (seed, purpose, indices)). Streams of
different purposes or indices never coincide the way `seed * 1_000_003 + step` and `seed + 7` can, and
adding a purpose never shifts another's numbers.
"""
from __future__ import annotations

import enum

import jax
import numpy as np


@enum.unique
class Purpose(enum.IntEnum):
    """The random streams of a run (values are part of the derivation: never renumber)."""

    PARAMS = 1  # initial weights of a from-scratch model
    SFT_ORDER = 2  # per-epoch permutation of SFT batches
    DIRECT_DEMOS = 3  # which demonstrations answer without a tool call
    SFT_VALIDATION = 4  # sampling of SFT's held-out validation
    ROLLOUT = 5  # the decode engine's seed of each RL step
    UPDATE = 6  # the RL update's key (the random token selections of Clip-Cov / KL-Cov)
    HELD_OUT_EVAL = 7  # the demo's held-out pass@1 before and after RL
    EVAL_SAMPLING = 8  # `vagent eval` samples
    EVAL_LIVE = 9  # `vagent eval` extra live samples beside DeepConf warm-up
    EVAL_BOOTSTRAP = 10  # `vagent eval` confidence intervals
    EVAL_VOTES = 11  # `vagent eval` tie-breaks among votes
    GENSELECT = 12  # each call of the GenSelect judge
    HELD_OUT_TASKS = 13  # generation of the held-out task set (disjoint from training's)
    DISTILL = 14  # sampling of distillation candidates


def purpose_key(seed: int, purpose: Purpose) -> jax.Array:
    """The JAX key of `purpose` under root `seed`; fold in a step or index for a per-step key."""
    return jax.random.fold_in(jax.random.key(seed), int(purpose))


def purpose_seed(seed: int, purpose: Purpose, *index: int) -> int:
    """A uint32 seed for (root seed, purpose, index...): for the engine, environments and numpy Generators."""
    if any(int(i) < 0 for i in (seed, *index)):
        raise ValueError(f"purpose_seed: seed and indices must be >= 0, got seed={seed}, index={index}")
    return int(np.random.SeedSequence([int(seed), int(purpose), *map(int, index)]).generate_state(1)[0])


def purpose_rng(seed: int, purpose: Purpose, *index: int) -> np.random.Generator:
    """A numpy Generator for (root seed, purpose, index...)."""
    return np.random.default_rng(purpose_seed(seed, purpose, *index))
