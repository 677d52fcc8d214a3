"""Pieces shared by the SFT and RL update steps: micro-batch split, gradient accumulation of
(sum, denominator) losses with lax.scan, the NaN/inf-guarded optimizer update, and host-side batch checks.

Accumulation adds loss sums, denominators, gradients of the loss SUM and metric (sum, count) pairs over
micro-batches and divides once, so the result does not depend on how the batch is cut.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vagent_jax.sharding import batch_sharding
from vagent_jax.train.optimizer import applied_updates
from vagent_jax.train.train_state import TrainState

Pairs = dict[str, tuple[jax.Array, jax.Array]]


def split_micro_batches(batch: Mapping[str, jax.Array], micro_batches: int, mesh: Mesh) -> dict[str, jax.Array]:
    """[B, ...] -> [M, B/M, ...]; micro-batch i holds rows i, i+M, i+2M, ... so each micro-batch stays
    spread over the batch-sharded devices (row order does not matter to a summed loss)."""

    def split(x: jax.Array) -> jax.Array:
        b = x.shape[0] // micro_batches
        y = x.reshape(b, micro_batches, *x.shape[1:]).swapaxes(0, 1)
        spec = batch_sharding(mesh, x.ndim).spec
        return jax.lax.with_sharding_constraint(y, NamedSharding(mesh, PartitionSpec(None, *spec)))

    return {k: split(v) for k, v in batch.items()}


def merge_micro_batches(x: jax.Array) -> jax.Array:
    """Inverse of split_micro_batches for one array: [M, b, ...] -> [B, ...] in the original row order."""
    return x.swapaxes(0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])


class Accumulated(NamedTuple):
    """Sums over micro-batches: loss_sum, denominator, grads (of loss_sum, fp32), metric pairs, metric
    maxima, and the per-micro-batch outputs stacked on a leading [M] axis."""

    loss_sum: jax.Array
    denominator: jax.Array
    grads: Any
    pairs: Pairs
    maxima: dict[str, jax.Array]
    outputs: Any


# loss_fn(params, micro_batch, index) -> (loss_sum, (denominator, pairs, maxima, outputs))
LossFn = Callable[[Any, dict[str, jax.Array], jax.Array], tuple[jax.Array, tuple[jax.Array, Pairs, dict, Any]]]


def accumulate_gradients(loss_fn: LossFn, params: Any, micro: dict[str, jax.Array],
                         grad_shardings: Any) -> Accumulated:
    """Run loss_fn and its gradient on every micro-batch (lax.scan) and add the results.

    Gradients are taken of each micro-batch's loss SUM; the caller divides by the total denominator.
    grad_shardings (the param shardings) pins the fp32 gradient accumulator to the parameter layout.
    """
    n = jax.tree.leaves(micro)[0].shape[0]
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    first = jax.tree.map(lambda x: x[0], micro)
    out_shape = jax.eval_shape(loss_fn, params, first, jnp.int32(0))
    _, (denom_s, pairs_s, maxima_s, _) = out_shape

    def zeros(s: Any) -> jax.Array:
        return jnp.zeros(s.shape, s.dtype)

    def pin(g: Any) -> Any:
        return jax.tree.map(lambda x, s: jax.lax.with_sharding_constraint(x.astype(jnp.float32), s),
                            g, grad_shardings)

    init = (jnp.zeros((), jnp.float32), zeros(denom_s).astype(jnp.float32),
            pin(jax.tree.map(jnp.zeros_like, params)),
            jax.tree.map(lambda s: zeros(s).astype(jnp.float32), pairs_s),
            jax.tree.map(lambda s: jnp.full(s.shape, -jnp.inf, jnp.float32), maxima_s))

    def body(carry, xs):
        loss_acc, den_acc, g_acc, p_acc, m_acc = carry
        mb, i = xs
        (loss_sum, (den, pairs, maxima, outs)), g = grad_fn(params, mb, i)
        g_acc = pin(jax.tree.map(lambda a, b: a + b.astype(jnp.float32), g_acc, g))
        p_acc = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), p_acc, pairs)
        m_acc = jax.tree.map(lambda a, b: jnp.maximum(a, b.astype(jnp.float32)), m_acc, maxima)
        return (loss_acc + loss_sum.astype(jnp.float32), den_acc + den.astype(jnp.float32), g_acc, p_acc,
                m_acc), outs

    (loss_sum, den, grads, pairs, maxima), outs = jax.lax.scan(body, init, (micro, jnp.arange(n)))
    return Accumulated(loss_sum, den, grads, pairs, maxima, outs)


def divide(total: jax.Array, count: jax.Array) -> jax.Array:
    """total / count, 0 where count is exactly 0 (an empty batch gives 0, not NaN); a NaN count or total
    stays NaN so the non-finite guard sees it."""
    empty = count == 0
    return jnp.where(empty, 0.0, total / jnp.where(empty, 1.0, count))


def guarded_update(state: TrainState, grads: Any, loss: jax.Array,
                   tx: optax.GradientTransformation,
                   lr_fn: optax.Schedule) -> tuple[TrainState, dict[str, jax.Array]]:
    """Apply one optimizer update unless loss or gradients are non-finite; then params and optimizer
    state stay as they were. step always advances. Metrics: grad_norm (before clipping), lr (of this
    update, by the applied-update count), skipped (1.0 when the update was dropped)."""
    grad_norm = optax.global_norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    lr = lr_fn(applied_updates(state.opt_state))
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    new_state = TrainState(params=keep(new_params, state.params), opt_state=keep(new_opt, state.opt_state),
                           step=state.step + 1)
    metrics = {"grad_norm": grad_norm, "skipped": 1.0 - ok.astype(jnp.float32), "lr": lr}
    return new_state, metrics


def check_batch(batch: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...],
                per_row: tuple[str, ...], micro_batches: int, mesh: Mesh, what: str) -> None:
    """Host-side checks before a step: keys known and present, [B, T] / [B] shapes consistent, B
    divisible by micro_batches and each micro-batch by the devices the batch axis is sharded over."""
    missing = [k for k in required if k not in batch]
    unknown = [k for k in batch if k not in required + optional]
    if missing or unknown:
        raise ValueError(f"{what} batch: missing keys {missing}, unknown keys {unknown} "
                         f"(expected {list(required)}, optional {list(optional)})")
    shape = tuple(np.shape(batch["tokens"]))
    if len(shape) != 2:
        raise ValueError(f"{what} batch['tokens'] must be [B, T], got shape {shape}")
    for k, v in batch.items():
        want = shape[:1] if k in per_row else shape
        if tuple(np.shape(v)) != want:
            raise ValueError(f"{what} batch['{k}'] must have shape {want}, got {tuple(np.shape(v))}")
    if micro_batches < 1 or shape[0] % micro_batches:
        raise ValueError(f"{what} batch size {shape[0]} is not divisible by micro_batches={micro_batches}")
    shards = int(np.prod([mesh.shape[a] for a in ("data", "fsdp")]))
    if (shape[0] // micro_batches) % shards:
        raise ValueError(f"{what} micro-batch size {shape[0] // micro_batches} (batch {shape[0]} / "
                         f"micro_batches {micro_batches}) is not divisible by the {shards} data x fsdp devices")
