"""`vagent rl` with a SIGKILL armed inside one phase of one step, for the exact-resume tests.

    python tests/rl_kill_driver.py PHASE STEP DELAY_S -- <vagent rl arguments>

PHASE is rollout (the step's first decode-engine call), update (the jitted RL update) or save (the
checkpoint save after the step; orbax writes it asynchronously); STEP is the 0-based loop step; when that
phase starts, a timer SIGKILLs this process DELAY_S seconds later, wherever it then is (inside the phase,
or just after it: the armed call waits for the kill, so it always lands in STEP). PHASE none runs the plain
command. Before the kill it prints `KILL <phase> <step>` to
stderr, so the test can tell a kill from a crash.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from vagent_jax import cli
from vagent_jax.engine import DecodeEngine
from vagent_jax.jobs import rl as rl_run
from vagent_jax.train.checkpoint import Checkpointer

_current = {"step": -1}


def _arm(phase: str, delay_s: float) -> None:
    def kill() -> None:
        print(f"KILL {phase} {_current['step']}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Timer(delay_s, kill).start()


def _wait_for_kill(delay_s: float) -> None:
    """Hold the armed call until the kill lands, so a phase that ends before the delay (an idle machine)
    is killed just after it, never in a later step."""
    time.sleep(delay_s + 60)
    raise SystemExit("rl_kill_driver: the armed SIGKILL did not fire")


def _armed_call(should_arm, phase: str, delay_s: float, call):  # noqa: ANN001, ANN202
    """call(), with the kill armed before it and awaited after it when should_arm() says so."""
    armed_now = should_arm()
    if armed_now:
        _arm(phase, delay_s)
    out = call()
    if armed_now:
        _wait_for_kill(delay_s)
    return out


def _install(phase: str, step: int, delay_s: float) -> None:
    """Wrap the function that starts `phase` so that its first call during `step` arms the kill."""
    armed = {"done": False}

    def should_arm() -> bool:
        if armed["done"] or _current["step"] != step:
            return False
        armed["done"] = True
        return True

    real_one_step = rl_run.RLTrainer.one_step

    def one_step(self, pool, s, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        _current["step"] = s
        return real_one_step(self, pool, s, *args, **kwargs)

    rl_run.RLTrainer.one_step = one_step
    if phase == "rollout":
        real = DecodeEngine.step

        def engine_step(self):  # noqa: ANN001, ANN202
            return _armed_call(should_arm, phase, delay_s, lambda: real(self))

        DecodeEngine.step = engine_step
    elif phase == "update":
        real_make = rl_run.make_rl_step

        def make_rl_step(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            rl_step = real_make(*args, **kwargs)

            def wrapped(*a, **k):  # noqa: ANN002, ANN003, ANN202
                return _armed_call(should_arm, phase, delay_s, lambda: rl_step(*a, **k))

            return wrapped

        rl_run.make_rl_step = make_rl_step
    elif phase == "save":
        real_save = Checkpointer.save

        def save(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            return _armed_call(should_arm, phase, delay_s, lambda: real_save(self, *args, **kwargs))

        Checkpointer.save = save
    elif phase != "none":
        raise SystemExit(f"rl_kill_driver: unknown phase {phase!r} (rollout, update, save or none)")


def main(argv: list[str]) -> int:
    sep = argv.index("--")
    phase, step, delay_s = argv[0], int(argv[1]), float(argv[2])
    _install(phase, step, delay_s)
    return cli.main(["rl", *argv[sep + 1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
