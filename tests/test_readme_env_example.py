"""The README's Environment example, run as written: a new environment is one small file."""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

from vagent_jax.envs import EnvWorkerPool, Message, get_env

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text[text.index("## Environments, mixtures and rubrics"):]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_readme_example_is_a_working_environment(tmp_path: Path) -> None:
    code = _example()
    assert len(code.strip().splitlines()) <= 30
    (tmp_path / "readme_env_example.py").write_text(code)
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("readme_env_example")
        env = get_env("reverse_word")
        tasks = env.generate_tasks(4, seed=0, difficulty=2)
        assert tasks == env.generate_tasks(4, seed=0, difficulty=2) and len(tasks[0]["word"]) == 10
        demo = env.demonstration(tasks[0])
        assert env.step(tasks[0], demo).reward.correct
        wrong = env.initial_messages(tasks[0]) + [Message("assistant", f"<answer>{tasks[0]['word']}</answer>")]
        assert not env.step(tasks[0], wrong).reward.correct
        with EnvWorkerPool(1, env_modules=["readme_env_example"]) as pool:  # and in the worker processes
            pool.submit(0, "reverse_word", {}, tasks[1], [m.to_dict() for m in env.demonstration(tasks[1])])
            got = []
            while not got:
                got = pool.poll(timeout=60)
        assert got[0][1].reward.correct and got[0][1].reward.details["expected"] == tasks[1]["word"][::-1]
    finally:
        sys.path.remove(str(tmp_path))
