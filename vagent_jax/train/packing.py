"""First-fit packing of variable-length SFT examples into fixed [batch, seq_len] rows.

Each example keeps its own segment id (1, 2, ... within a row; 0 = padding) and positions that restart
at 0, so attention (models/transformer.attention_mask) never crosses examples and RoPE sees the same
positions as unpacked: a packed row's per-example losses equal the examples' own losses.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Example = tuple[Sequence[int], Sequence[float]]


def _check(examples: Sequence[Example], seq_len: int, batch: int, truncate: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    if seq_len < 1 or batch < 1:
        raise ValueError(f"seq_len and batch must be >= 1, got seq_len={seq_len}, batch={batch}")
    out = []
    for i, (ids, mask) in enumerate(examples):
        ids, mask = np.asarray(ids, np.int32), np.asarray(mask, np.float32)
        if ids.ndim != 1 or ids.shape != mask.shape:
            raise ValueError(f"example {i}: ids {ids.shape} and loss_mask {mask.shape} must be equal 1-D shapes")
        if ids.size == 0:
            raise ValueError(f"example {i} is empty")
        if ids.size > seq_len:
            if not truncate:
                raise ValueError(f"example {i} has {ids.size} tokens > seq_len={seq_len} (pass truncate=True "
                                 "to cut it)")
            ids, mask = ids[:seq_len], mask[:seq_len]
        out.append((ids, mask))
    return out


def first_fit(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
    """Rows of example indices: each example goes into the first row with room, else a new row."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i, n in enumerate(lengths):
        for r, room in enumerate(free):
            if n <= room:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(seq_len - n)
    return rows


def pack_examples(examples: Sequence[Example], seq_len: int, batch: int, *, pad_id: int = 0,
                  truncate: bool = False, drop_remainder: bool = False) -> list[dict[str, np.ndarray]]:
    """Pack (ids, loss_mask) examples first-fit into batches of {tokens, positions, segment_ids,
    loss_mask}, each [batch, seq_len] (int32; loss_mask float32). The last batch is filled with empty
    rows (segment 0, loss 0) unless drop_remainder. An example longer than seq_len is an error naming
    it, or is cut to seq_len with truncate=True.
    """
    exs = _check(examples, seq_len, batch, truncate)
    rows = first_fit([ids.size for ids, _ in exs], seq_len)
    n_batches = len(rows) // batch if drop_remainder else -(-len(rows) // batch)
    out = []
    for b in range(n_batches):
        tokens = np.full((batch, seq_len), pad_id, np.int32)
        positions = np.zeros((batch, seq_len), np.int32)
        segments = np.zeros((batch, seq_len), np.int32)
        loss_mask = np.zeros((batch, seq_len), np.float32)
        for r, row in enumerate(rows[b * batch:(b + 1) * batch]):
            start = 0
            for seg, i in enumerate(row, start=1):
                ids, mask = exs[i]
                end = start + ids.size
                tokens[r, start:end] = ids
                positions[r, start:end] = np.arange(ids.size)
                segments[r, start:end] = seg
                loss_mask[r, start:end] = mask
                start = end
        out.append({"tokens": tokens, "positions": positions, "segment_ids": segments, "loss_mask": loss_mask})
    return out
