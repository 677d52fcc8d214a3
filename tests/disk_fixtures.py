"""A small file system for full-disk tests: a tmpfs where mounting is permitted (root), and a filler."""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[bool]:
    """A tmpfs of `size` mounted at `path` (yields True), or a plain directory when mounting is not
    permitted (yields False: the caller injects the write error instead)."""
    path.mkdir(parents=True)
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                                    str(path)], capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path) -> Path:
    """Write zeros into `path`/filler until the file system is full; returns the filler file."""
    filler = path / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError as e:  # ENOSPC, also from open() itself when the file system is already full
        if e.errno != errno.ENOSPC:
            raise
    return filler
