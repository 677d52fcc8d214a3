"""Hugging Face checkpoints in and out: config.json + safetensors (one file or many with an index).

Loading validates every file header and every tensor name and shape before any array is built, so a bad
checkpoint stops with a message naming the file and tensor and nothing is half-loaded. Arrays are built
with `jax.make_array_from_callback`: each device reads only its own shard through the memory map.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vagent_jax.config import ConfigError
from vagent_jax.models.config import ModelConfig, from_hf_config, to_hf_config
from vagent_jax.models.safetensors_file import CheckpointError, SafetensorsFile
from vagent_jax.models.transformer import Params, dtype_of, param_logical_axes
from vagent_jax.sharding import logical_to_spec

# our layer leaf -> (HF name inside model.layers.{i}, layout kind)
_LAYER_MAP = {
    "attn_norm": ("input_layernorm.weight", "copy"),
    "mlp_norm": ("post_attention_layernorm.weight", "copy"),
    "wq": ("self_attn.q_proj.weight", "t_split_out"),
    "wk": ("self_attn.k_proj.weight", "t_split_out"),
    "wv": ("self_attn.v_proj.weight", "t_split_out"),
    "wo": ("self_attn.o_proj.weight", "t_split_in"),
    "bq": ("self_attn.q_proj.bias", "split"),
    "bk": ("self_attn.k_proj.bias", "split"),
    "bv": ("self_attn.v_proj.bias", "split"),
    "q_norm": ("self_attn.q_norm.weight", "copy"),
    "k_norm": ("self_attn.k_norm.weight", "copy"),
    "w_gate": ("mlp.gate_proj.weight", "t"),
    "w_up": ("mlp.up_proj.weight", "t"),
    "w_down": ("mlp.down_proj.weight", "t"),
}
_FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")  # weights are cast to param_dtype on load
_TOP_MAP = {"embed": ("model.embed_tokens.weight", "copy"), "final_norm": ("model.norm.weight", "copy"),
            "lm_head": ("lm_head.weight", "t")}


def _hf_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """HF tensor shape for one of our (per-layer) shapes."""
    if kind == "copy":
        return shape
    if kind == "t":
        return shape[::-1]
    if kind == "t_split_out":  # ours [D, H, hd] <- HF [H*hd, D]
        return (shape[1] * shape[2], shape[0])
    if kind == "t_split_in":  # ours [H, hd, D] <- HF [D, H*hd]
        return (shape[2], shape[0] * shape[1])
    return (shape[0] * shape[1],)  # split: ours [H, hd] <- HF [H*hd]


def _read(arr: np.ndarray, kind: str, idx: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Our-layout slice `idx` of a tensor of our `shape`, read from the HF-layout array `arr`."""
    idx = tuple(slice(*s.indices(n)) for s, n in zip(idx, shape))
    if kind == "copy":
        return np.asarray(arr[idx])
    if kind == "t":
        return np.asarray(arr[idx[1], idx[0]]).T
    hd = shape[-2] if kind == "t_split_in" else shape[-1]
    if kind == "t_split_out":
        d, h, k = idx
        rows = slice(h.start * hd, h.stop * hd)
        return np.asarray(arr[rows, d]).T.reshape(d.stop - d.start, h.stop - h.start, hd)[:, :, k]
    if kind == "t_split_in":
        h, k, d = idx
        cols = slice(h.start * hd, h.stop * hd)
        return np.asarray(arr[d, cols]).T.reshape(h.stop - h.start, hd, d.stop - d.start)[:, k, :]
    h, k = idx
    return np.asarray(arr[slice(h.start * hd, h.stop * hd)]).reshape(h.stop - h.start, hd)[:, k]


def _expected(cfg: ModelConfig, abstract: Params) -> dict[str, tuple[str, str, int | None, tuple[int, ...]]]:
    """HF tensor name -> (our leaf path, kind, layer index or None, our per-tensor shape)."""
    out = {}
    for key, (hf, kind) in _TOP_MAP.items():
        if key in abstract:
            out[hf] = (key, kind, None, tuple(abstract[key].shape))
    for key, leaf in abstract["layers"].items():
        hf, kind = _LAYER_MAP[key]
        for i in range(cfg.n_layers):
            out[f"model.layers.{i}.{hf}"] = (key, kind, i, tuple(leaf.shape[1:]))
    return out


def _open_files(ckpt: Path) -> dict[str, SafetensorsFile]:
    """Tensor name -> the file holding it, from index.json or the single model.safetensors."""
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        files: dict[str, SafetensorsFile] = {}
        out = {}
        for name, fname in weight_map.items():
            if fname not in files:
                if not (ckpt / fname).is_file():
                    raise CheckpointError(f"{index}: tensor '{name}' points to missing file '{ckpt / fname}'")
                files[fname] = SafetensorsFile(ckpt / fname)
            if name not in files[fname].entries:
                raise CheckpointError(f"{ckpt / fname}: tensor '{name}' listed in {index.name} is missing")
            out[name] = files[fname]
        for fname, f in files.items():
            for name in f.entries:
                if name not in weight_map:
                    raise CheckpointError(f"{f.path}: extra tensor '{name}' not listed in {index.name}")
        return out
    paths = sorted(ckpt.glob("*.safetensors"))
    if not paths:
        raise CheckpointError(f"{ckpt}: no *.safetensors file and no model.safetensors.index.json")
    out = {}
    for p in paths:
        f = SafetensorsFile(p)
        for name in f.entries:
            out[name] = f
    return out


def read_model_config(ckpt: str | Path, **overrides: Any) -> ModelConfig:
    """ModelConfig from `ckpt`/config.json (errors name the file and key)."""
    path = Path(ckpt) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: config.json not found")
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None
    return from_hf_config(hf, source=str(path), **overrides)


def load_hf_checkpoint(ckpt: str | Path, mesh: Mesh | None = None, cfg: ModelConfig | None = None,
                       **overrides: Any) -> tuple[ModelConfig, Params]:
    """Load config + weights into arrays sharded by the mesh rules (one device when mesh is None)."""
    ckpt = Path(ckpt)
    cfg = cfg or read_model_config(ckpt, **overrides)
    from vagent_jax.models.transformer import init_params
    abstract = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    expected = _expected(cfg, abstract)
    files = _open_files(ckpt)
    for name, f in files.items():
        if name not in expected and not (name == "lm_head.weight" and cfg.tie_embeddings):
            raise CheckpointError(f"{f.path}: unexpected tensor '{name}' for a {cfg.family} model with this config")
    for name, (_, kind, _, shape) in expected.items():
        if name not in files:
            where = ckpt / "model.safetensors.index.json" if len(set(files.values())) > 1 else ckpt
            raise CheckpointError(f"{where}: missing tensor '{name}'")
        got, want = files[name].shape(name), _hf_shape(kind, shape)
        if tuple(got) != want:
            raise CheckpointError(f"{files[name].path}: tensor '{name}' has shape {list(got)}, expected {list(want)}")
        dtype = files[name].entries[name][0]
        if dtype.name not in _FLOAT_DTYPES:
            raise CheckpointError(f"{files[name].path}: tensor '{name}' has dtype {dtype.name}, expected one of "
                                  f"{', '.join(_FLOAT_DTYPES)}")
    by_leaf: dict[tuple[str, int | None], str] = {(k, i): n for n, (k, _, i, _) in expected.items()}
    axes = param_logical_axes(cfg)
    pd = dtype_of(cfg.param_dtype)

    def build(path: tuple[str, ...], leaf: jax.ShapeDtypeStruct, names: tuple[str, ...]) -> jax.Array:
        key = path[-1]
        stacked = path[0] == "layers"
        kind = (_LAYER_MAP if stacked else _TOP_MAP)[key][1]
        shape = tuple(leaf.shape)
        if mesh is None:
            sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        else:
            sharding = NamedSharding(mesh, logical_to_spec(names, shape, mesh))

        def cb(idx: tuple[slice, ...]) -> np.ndarray:
            idx = tuple(idx) + (slice(None),) * (len(shape) - len(idx))
            if not stacked:
                name = by_leaf[(key, None)]
                return _read(files[name].array(name), kind, idx, shape).astype(pd)
            layers = range(*idx[0].indices(shape[0]))
            parts = [_read(files[n].array(n), kind, idx[1:], shape[1:])
                     for n in (by_leaf[(key, i)] for i in layers)]
            return np.stack(parts).astype(pd)

        return jax.make_array_from_callback(shape, sharding, cb)

    params = {}
    for k, v in abstract.items():
        if k == "layers":
            params[k] = {lk: build(("layers", lk), lv, axes["layers"][lk]) for lk, lv in v.items()}
        else:
            params[k] = build((k,), v, axes[k])
    return cfg, params


def _to_hf(kind: str, a: np.ndarray) -> np.ndarray:
    """HF layout of one of our (per-layer) arrays: the inverse of `_read`."""
    if kind == "copy":
        return a
    if kind == "t":
        return a.T
    if kind == "t_split_out":
        return a.reshape(a.shape[0], -1).T
    if kind == "t_split_in":
        return a.reshape(-1, a.shape[-1]).T
    return a.reshape(-1)


def _hf_order(params: Params, cfg: ModelConfig) -> list[tuple[str, int]]:
    """(HF name, element count) of every tensor, in the order hf_tensors yields them."""
    out = [(hf, int(np.prod(params[key].shape))) for key, (hf, _) in _TOP_MAP.items() if key in params]
    for key, leaf in params["layers"].items():
        out += [(f"model.layers.{i}.{_LAYER_MAP[key][0]}", int(np.prod(leaf.shape[1:]))) for i in range(cfg.n_layers)]
    return out


def hf_tensors(params: Params, cfg: ModelConfig, gather: Callable[[Any], np.ndarray] = np.asarray,
               dtype: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, host array) pairs from our params, one leaf gathered at a time (the inverse layout of
    loading), cast to `dtype` when given; host memory holds one stacked leaf, not the whole model."""
    cast = (lambda a: a) if dtype is None else (lambda a: a.astype(dtype_of(dtype)))
    for key, (hf, kind) in _TOP_MAP.items():
        if key in params:
            yield hf, np.ascontiguousarray(_to_hf(kind, cast(gather(params[key]))))
    for key, leaf in params["layers"].items():
        hf, kind = _LAYER_MAP[key]
        arr = cast(gather(leaf))
        for i in range(cfg.n_layers):
            yield f"model.layers.{i}.{hf}", np.ascontiguousarray(_to_hf(kind, arr[i]))


def _shard_plan(sizes: list[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
    """Tensor names per file, in order, each file at most max_shard_bytes unless one tensor is larger."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, nbytes in sizes:
        if size and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def save_hf_checkpoint(out_dir: str | Path, params: Params, cfg: ModelConfig, max_shard_bytes: int = 2 * 2**30,
                       extra_config: dict[str, Any] | None = None, dtype: str | None = None) -> Path:
    """Write config.json (to_hf_config plus `extra_config`, e.g. token ids) and safetensors shards
    (+ index.json when more than one) to `out_dir`, tensors in `dtype` (default cfg.param_dtype).

    Every process takes part in gathering each (sharded) leaf; process 0 writes each file as soon as its
    tensors are gathered, so a host holds one file's tensors and one stacked leaf at a time."""
    from jax.experimental import multihost_utils
    from safetensors.numpy import save_file

    out = Path(out_dir)
    dtype = dtype or cfg.param_dtype
    gather = (lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True))) \
        if jax.process_count() > 1 else (lambda a: np.asarray(jax.device_get(a)))
    itemsize = np.dtype(dtype_of(dtype)).itemsize
    sizes = [(name, n * itemsize) for name, n in _hf_order(params, cfg)]
    plan = _shard_plan(sizes, max_shard_bytes)
    names = ["model.safetensors"] if len(plan) == 1 else \
        [f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))]
    primary = jax.process_index() == 0
    if primary:
        out.mkdir(parents=True, exist_ok=True)
        config = {**to_hf_config(dataclasses.replace(cfg, param_dtype=dtype)), **(extra_config or {})}
        (out / "config.json").write_text(json.dumps(config, indent=2))
    tensors = hf_tensors(params, cfg, gather, dtype)
    for fname, shard_names in zip(names, plan):
        shard = dict(next(tensors) for _ in shard_names)
        if list(shard) != shard_names:  # the plan and the gather order come from the same tables
            raise RuntimeError(f"{fname}: tensor order {list(shard)[:3]}... differs from the plan {shard_names[:3]}...")
        if primary:
            save_file(shard, str(out / fname), metadata={"format": "pt"})
    if primary and len(plan) > 1:
        weight_map = {n: fname for fname, shard_names in zip(names, plan) for n in shard_names}
        (out / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": sum(n for _, n in sizes)}, "weight_map": weight_map}, indent=2))
    return out


__all__ = ["CheckpointError", "ConfigError", "load_hf_checkpoint", "save_hf_checkpoint", "read_model_config",
           "hf_tensors", "PartitionSpec"]
