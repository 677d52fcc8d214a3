"""First-fit packing: layout by hand, errors, and per-example losses equal to the unpacked examples."""
import jax
import numpy as np
import pytest

from vagent_jax.models.config import ModelConfig
from vagent_jax.testing import random_params
from vagent_jax.train.packing import first_fit, pack_examples
from vagent_jax.train.token_stats import sequence_token_stats


def test_first_fit_by_hand():
    # seq_len 10: [6] -> row0 (4 left); 5 -> row1 (5 left); 4 -> row0 (0 left); 3 -> row1 (2 left); 2 -> row1
    assert first_fit([6, 5, 4, 3, 2, 7], 10) == [[0, 2], [1, 3, 4], [5]]


def test_pack_layout_and_remainder():
    exs = [([1, 2, 3], [0, 1, 1]), ([4, 5], [1, 1]), ([6, 7, 8, 9], [0, 0, 1, 1])]
    batches = pack_examples(exs, seq_len=5, batch=2, pad_id=0)
    # first fit: [0] len3 -> row0; [1] len2 -> row0 (full); [2] len4 -> row1; one batch of 2 rows
    assert len(batches) == 1
    b = batches[0]
    np.testing.assert_array_equal(b["tokens"], [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]])
    np.testing.assert_array_equal(b["segment_ids"], [[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(b["positions"], [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]])
    np.testing.assert_array_equal(b["loss_mask"], [[0, 1, 1, 1, 1], [0, 0, 1, 1, 0]])
    three = pack_examples(exs, seq_len=4, batch=2)  # rows: [0], [1]... -> 3 rows: 2 batches, last padded
    assert len(three) == 2 and three[1]["segment_ids"][1].sum() == 0
    assert len(pack_examples(exs, seq_len=4, batch=2, drop_remainder=True)) == 1


def test_pack_errors_name_the_example():
    with pytest.raises(ValueError, match="example 1 has 6 tokens"):
        pack_examples([([1], [1]), ([1] * 6, [1] * 6)], seq_len=5, batch=1)
    cut = pack_examples([([1] * 6, [1] * 6)], seq_len=5, batch=1, truncate=True)
    assert cut[0]["segment_ids"].sum() == 5
    with pytest.raises(ValueError, match="example 0"):
        pack_examples([([1, 2], [1])], seq_len=5, batch=1)
    with pytest.raises(ValueError, match="example 0 is empty"):
        pack_examples([([], [])], seq_len=5, batch=1)


def test_packed_losses_equal_unpacked():
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64)
    params = random_params(cfg, 1, std=0.1)
    rng = np.random.default_rng(0)
    seq_len = 16
    lengths = [7, 5, 9, 4, 6, 3]
    exs = [(rng.integers(1, 64, n), (rng.random(n) < 0.7).astype(np.float32)) for n in lengths]
    packed = pack_examples(exs, seq_len=seq_len, batch=4)
    assert len(packed) == 1  # 34 tokens fit into 4 rows of 16
    stats = jax.jit(lambda p, t, pos, s: sequence_token_stats(p, t, pos, s, cfg=cfg, seq_chunk=8))

    def per_example_loss(batch):
        lp, _, valid = stats(params, batch["tokens"], batch["positions"], batch["segment_ids"])
        w = np.asarray(valid) * batch["loss_mask"]
        out = {}
        for r in range(batch["tokens"].shape[0]):
            for s in set(batch["segment_ids"][r]) - {0}:
                sel = batch["segment_ids"][r] == s
                out[(r, s)] = float(-(np.asarray(lp)[r] * w[r] * sel).sum())
        return out

    packed_losses = sorted(per_example_loss(packed[0]).values())
    # unpacked: one example per row, padded (segment 0) to the same length
    tokens = np.zeros((len(exs), seq_len), np.int32)
    seg = np.zeros_like(tokens)
    mask = np.zeros((len(exs), seq_len), np.float32)
    for i, (ids, m) in enumerate(exs):
        tokens[i, :len(ids)], seg[i, :len(ids)], mask[i, :len(ids)] = ids, 1, m
    pos = np.tile(np.arange(seq_len, dtype=np.int32), (len(exs), 1))
    single = per_example_loss({"tokens": tokens, "positions": pos, "segment_ids": seg, "loss_mask": mask})
    np.testing.assert_allclose(packed_losses, sorted(single.values()), rtol=1e-5, atol=1e-5)
    assert len(packed_losses) == len(exs) and max(packed_losses) > 0
