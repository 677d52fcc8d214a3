"""Read a sandboxed program's output back within a byte budget, keeping its head and its tail.

The end of an output is where the traceback or the final answer is, so a long output keeps its first and
its last bytes with a marker of how many bytes were cut between them, and the whole text (marker
included) fits in the budget handed to the model.
"""
from __future__ import annotations

import os
from typing import BinaryIO

MARKER = "\n[... {cut} bytes cut ...]\n"
_MARKER_RESERVE = len(MARKER.format(cut=2**63))  # the longest marker; reserved so the total fits
HEAD_FRACTION = 0.4  # the tail (traceback, last prints) gets the larger share


def _split(size: int, budget: int) -> tuple[int, int]:
    """(head bytes, tail bytes) kept of an output of `size` bytes that is over `budget`."""
    keep = max(0, budget - _MARKER_RESERVE)
    head_n = int(keep * HEAD_FRACTION)
    return head_n, keep - head_n


def _join(head: bytes, tail: bytes, cut: int) -> str:
    # "ignore" drops a character split by the cut instead of adding replacement bytes past the budget
    return head.decode("utf-8", errors="ignore") + MARKER.format(cut=cut) + tail.decode("utf-8", errors="ignore")


def head_and_tail(data: bytes, budget: int) -> tuple[str, int]:
    """`data` as text within `budget` bytes: all of it, or head + cut marker + tail; returns (text, bytes cut)."""
    if budget < 1:
        raise ValueError(f"output budget must be >= 1 byte, got {budget}")
    if len(data) <= budget:
        return data.decode("utf-8", errors="replace"), 0
    head_n, tail_n = _split(len(data), budget)
    cut = len(data) - head_n - tail_n
    return _join(data[:head_n], data[len(data) - tail_n:] if tail_n else b"", cut), cut


def read_head_and_tail(f: BinaryIO, budget: int) -> tuple[str, int]:
    """head_and_tail of an output file, reading only the kept bytes (the file may be large)."""
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    if size <= budget:
        return head_and_tail(f.read(), budget)
    head_n, tail_n = _split(size, budget)
    head = f.read(head_n)
    f.seek(size - tail_n)
    tail = f.read(tail_n)
    cut = size - len(head) - len(tail)
    return _join(head, tail, cut), cut


def share_budget(out_size: int, err_size: int, budget: int) -> tuple[int, int]:
    """Split one byte budget between stdout and stderr: each keeps all it has when both fit, else the
    larger one gets what the smaller leaves (and no more than half goes to a stream that is not short)."""
    if out_size + err_size <= budget:
        return max(out_size, 1), max(err_size, 1)
    half = budget // 2
    if err_size <= half:
        return budget - err_size, max(err_size, 1)
    if out_size <= half:
        return max(out_size, 1), budget - out_size
    return budget - half, half
