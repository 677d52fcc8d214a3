"""Read safetensors files through a memory map, so a device reads only the slice it holds.

The safetensors format is an 8-byte little-endian header length, a JSON header mapping tensor names to
dtype, shape and byte offsets, then the raw data. Reading it through numpy.memmap handles bf16 (via
ml_dtypes) and lets slicing touch only the needed pages. Every structural fault raises
CheckpointError naming the file (and tensor).
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

DTYPES = {
    "F32": np.dtype(np.float32), "F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16),
    "F64": np.dtype(np.float64), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(bool),
}


class CheckpointError(ValueError):
    """A checkpoint file or tensor is missing, extra, mis-shaped or corrupt; the message names it."""


class SafetensorsFile:
    """Header-validated, memory-mapped view of one .safetensors file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                raw = f.read(8)
                if len(raw) < 8:
                    raise CheckpointError(f"{self.path}: corrupt safetensors file (shorter than 8 bytes)")
                (n,) = struct.unpack("<Q", raw)
                if n > size - 8 or n > 100 * 2**20:
                    raise CheckpointError(f"{self.path}: corrupt safetensors file (header length {n})")
                header = json.loads(f.read(n))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{self.path}: corrupt or unreadable safetensors file ({e})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: corrupt safetensors header")
        self.metadata = header.pop("__metadata__", {}) or {}
        self._data_start = 8 + n
        self.entries: dict[str, tuple[np.dtype, tuple[int, ...], int]] = {}
        data_len = size - self._data_start
        for name, e in header.items():
            try:
                dtype = DTYPES[e["dtype"]]
                shape = tuple(int(s) for s in e["shape"])
                start, end = (int(o) for o in e["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{self.path}: tensor '{name}': corrupt or unsupported header entry {e}") from None
            if end - start != math.prod(shape) * dtype.itemsize or end > data_len or start < 0:
                raise CheckpointError(
                    f"{self.path}: tensor '{name}': data offsets {start}..{end} do not match shape {shape} "
                    f"or exceed the file ({data_len} data bytes): file truncated or corrupt")
            self.entries[name] = (dtype, shape, start)
        self._mm: np.memmap | None = None

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of tensor `name`."""
        return self.entries[name][1]

    def array(self, name: str) -> np.ndarray:
        """A lazy (memory-mapped) array for `name`; slicing it reads only that slice."""
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        dtype, shape, start = self.entries[name]
        nbytes = math.prod(shape) * dtype.itemsize
        off = self._data_start + start
        return self._mm[off:off + nbytes].view(dtype).reshape(shape)
