"""Source files are never git-ignored: a pattern such as `data/` once hid new modules of vagent_jax/data/,
so they were never committed and a fresh clone could not import them."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("vagent_jax", "vagent_jax/data", "vagent_jax/engine", "vagent_jax/train", "envs", "kernels",
               "scripts", "tests", "configs", "docs")


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize("folder", SOURCE_DIRS)
def test_a_new_file_in_a_source_folder_is_not_ignored(folder):
    probe = f"{folder}/new_module_probe.py"
    proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", probe], cwd=ROOT)
    assert proc.returncode == 1, f"{probe} would be git-ignored (.gitignore hides new source files there)"
