"""The jitted, sharded SFT update: next-token cross-entropy on the assistant's tokens.

loss = -sum_{b,t} w[b,t] log pi(tokens[b,t] | tokens[b,<t]) / sum_{b,t} w[b,t], where w = loss_mask of
the TARGET token (1 on the assistant's tokens from the chat template; float weights are allowed) and
only where a prediction exists inside the token's own packed segment. Micro-batches add (sum, count)
and gradients of the sum, then divide once; a non-finite loss or gradient skips the update.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vagent_jax.models.config import ModelConfig
from vagent_jax.sharding import batch_sharding
from vagent_jax.train.grad_accum import (accumulate_gradients, check_batch, divide, guarded_update,
                                         split_micro_batches)
from vagent_jax.train.multihost import to_global
from vagent_jax.train.optimizer import OptimizerConfig, lr_schedule, make_optimizer
from vagent_jax.train.token_stats import sequence_token_stats, unroll_layers_for
from vagent_jax.train.train_state import TrainState, state_shardings

SFT_BATCH_KEYS = ("tokens", "positions", "segment_ids", "loss_mask")



@dataclasses.dataclass(frozen=True)
class SFTStep:
    """The jitted SFT update (make_sft_step): `step(state, batch)` checks the batch and runs `jitted` on it;
    `lower(state, batch)` (arrays or ShapeDtypeStructs) lowers it for ahead-of-time compilation."""

    jitted: Any  # jax.jit(step) with the mesh's in/out shardings, the state donated
    mesh: Mesh
    micro_batches: int
    batch_shardings: dict[str, NamedSharding]

    def __call__(self, state: TrainState, batch: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]:
        check_batch(batch, SFT_BATCH_KEYS, (), (), self.micro_batches, self.mesh, "SFT")
        return self.jitted(state, to_global(batch, self.batch_shardings))

    def lower(self, state: Any, batch: dict[str, Any]) -> Any:
        """The step lowered for these (abstract or concrete) inputs."""
        check_batch(batch, SFT_BATCH_KEYS, (), (), self.micro_batches, self.mesh, "SFT")
        return self.jitted.lower(state, dict(batch))


def sft_loss(params: Any, batch: dict[str, jax.Array], *, cfg: ModelConfig,
             seq_chunk: int = 256, unroll_layers: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(loss_sum, weight_sum, entropy_sum) of one [B, T] batch: loss_sum = -sum w * logp, weight_sum =
    sum w, entropy_sum = sum w * H (policy entropy at the predicted tokens, detached)."""
    logp, ent, valid = sequence_token_stats(params, batch["tokens"], batch["positions"], batch["segment_ids"],
                                            cfg=cfg, seq_chunk=seq_chunk, unroll_layers=unroll_layers)
    w = jnp.where(valid, batch["loss_mask"].astype(jnp.float32), 0.0)
    return -(w * logp).sum(), w.sum(), (w * jax.lax.stop_gradient(ent)).sum()


def sft_loss_and_grads(params: Any, batch: dict[str, jax.Array], *, cfg: ModelConfig, mesh: Mesh,
                       micro_batches: int, grad_shardings: Any,
                       seq_chunk: int = 256, unroll_layers: bool = False) -> tuple[jax.Array, Any, dict[str, jax.Array]]:
    """(loss, grads, {tokens, entropy}) of a [B, T] batch, accumulated over micro-batches: sums of
    -w*logp, of w and of the gradients of the sum are added, then divided once by sum w."""

    def micro_loss(p, mb, _):
        loss_sum, count, ent_sum = sft_loss(p, mb, cfg=cfg, seq_chunk=seq_chunk, unroll_layers=unroll_layers)
        return loss_sum, (count, {"entropy": (ent_sum, count)}, {}, None)

    micro = split_micro_batches(batch, micro_batches, mesh)
    acc = accumulate_gradients(micro_loss, params, micro, grad_shardings)
    loss = divide(acc.loss_sum, acc.denominator)
    grads = jax.tree.map(lambda g: divide(g, acc.denominator), acc.grads)
    return loss, grads, {"tokens": acc.denominator, "entropy": divide(*acc.pairs["entropy"])}


def make_sft_step(model_cfg: ModelConfig, optimizer: OptimizerConfig, mesh: Mesh, micro_batches: int = 1,
                  *, seq_chunk: int = 256, unroll_layers: bool | None = None) -> SFTStep:
    """A step (state, batch) -> (state, metrics), jitted once with the mesh's in/out shardings and the
    state donated. batch: tokens, positions, segment_ids (int32) and loss_mask (0/1 or float), all
    [B, T]; B must be divisible by micro_batches and B / micro_batches by the data x fsdp devices.
    Metrics (fp32 scalars): loss, tokens (summed loss weight), entropy, grad_norm, lr, skipped.
    Multi-host: the batch is the whole global batch as host arrays on every process (each fills only its
    own devices' rows) or global jax.Arrays. Remat follows model_cfg.remat; unroll_layers: None =
    `unroll_layers_for(mesh)` (unrolled on CPU). `.lower(state, batch)` (arrays or ShapeDtypeStructs) lowers
    it for ahead-of-time compilation, e.g. for a TPU topology.
    """
    if micro_batches < 1:
        raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
    tx = make_optimizer(optimizer)
    lr_fn = lr_schedule(optimizer)
    s_shard = state_shardings(model_cfg, mesh, optimizer)
    b_shard = {k: batch_sharding(mesh, 2) for k in SFT_BATCH_KEYS}
    replicated = NamedSharding(mesh, PartitionSpec())
    unroll = unroll_layers_for(mesh) if unroll_layers is None else unroll_layers

    def step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        loss, grads, stats = sft_loss_and_grads(state.params, batch, cfg=model_cfg, mesh=mesh,
                                                micro_batches=micro_batches, grad_shardings=s_shard.params,
                                                seq_chunk=seq_chunk, unroll_layers=unroll)
        new_state, upd = guarded_update(state, grads, loss, tx, lr_fn)
        return new_state, {"loss": loss, **stats, **upd}

    jitted = jax.jit(step, in_shardings=(s_shard, b_shard), out_shardings=(s_shard, replicated),
                     donate_argnums=0)
    return SFTStep(jitted, mesh, micro_batches, b_shard)
