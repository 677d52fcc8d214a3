"""The env worker pool: results come back, and every kind of fault costs only its own request."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from vagent_jax.envs.base import Environment, Message
from vagent_jax.envs.registry import register_env
from vagent_jax.envs.tools import Tool
from vagent_jax.envs.worker_pool import EnvWorkerPool

# Deadline margin: a request's deadline counts from when it reaches a worker, so a freshly replaced worker's
# start-up (it imports this module, pytest included) is inside it; generous for a machine loaded by other jobs.
MARGIN = 5.0
TOOL_TIMEOUT = 1.0
# Generous deadline (seconds) for waits in these tests; an idle machine needs a few seconds at most.
WAIT_S = 60.0


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def _boom() -> str:
    raise RuntimeError("tool bug")


def _hang_ignoring_alarm() -> str:
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # defeats the in-worker alarm: only the deadline helps
    time.sleep(60)
    return "never"


def _mark(path: str) -> str:
    with open(path, "w") as f:
        f.write("done")
    return "marked"


def _segfault() -> str:
    os.kill(os.getpid(), signal.SIGSEGV)
    return "never"


@register_env("pool_test")
class PoolTestEnv(Environment):
    """Answers "<answer>ok</answer>" correctly; tools that misbehave in every way the pool must survive."""

    name = "pool_test"
    max_turns = 3
    verify_timeout_s = 0.5

    def make_tools(self):
        none = {"properties": {}}
        return [
            Tool("sleep", "", {"properties": {"seconds": {"type": "number"}}}, TOOL_TIMEOUT, _sleep),
            Tool("boom", "", none, TOOL_TIMEOUT, _boom),
            Tool("hang", "", none, TOOL_TIMEOUT, _hang_ignoring_alarm),
            Tool("segv", "", none, TOOL_TIMEOUT, _segfault),
            Tool("mark", "", {"properties": {"path": {"type": "string"}}}, TOOL_TIMEOUT, _mark),
        ]

    def prompt(self, task):
        return "say ok"

    def verify(self, task, answer):
        return answer == "ok", {}


def _msgs(turn):
    return [Message("user", "say ok"), Message("assistant", turn)]


def _call(name, **args):
    import json

    return _msgs(f"<tool_call>{json.dumps({'name': name, 'arguments': args})}</tool_call>")


def _drain(pool, n, timeout=WAIT_S):
    out, end = {}, time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        for rid, step in pool.poll(timeout=0.2):
            out[rid] = (step, time.monotonic())
    assert len(out) == n, f"only {sorted(out)} of {n} came back"
    return out


@pytest.fixture(scope="module")
def pool():
    with EnvWorkerPool(2, env_modules=[__name__], deadline_margin_s=MARGIN) as p:
        yield p


def test_results_and_builtin_envs(pool):
    pool.submit("a", "pool_test", {}, {}, _msgs("<answer>ok</answer>"))
    pool.submit("b", "pool_test", {}, {}, _msgs("<answer>no</answer>"))
    pool.submit("c", "arithmetic", {}, {"expression": "2*3", "answer": "6"}, _msgs("<answer>6</answer>"))
    pool.submit("d", "pool_test", {}, {}, _call("sleep", seconds=0.01))
    got = _drain(pool, 4)
    assert got["a"][0].reward.correct and not got["b"][0].reward.correct and got["c"][0].reward.reward == 1.0
    assert got["d"][0].observation.content.count("slept") == 1 and not got["d"][0].done
    assert pool.in_flight() == 0


def test_bad_submissions_fail_fast(pool):
    with pytest.raises(KeyError, match="nope"):
        pool.submit("x", "nope", {}, {}, _msgs("hi"))
    with pytest.raises(ValueError, match="JSON"):
        pool.submit("x", "pool_test", {}, {"bad": object()}, _msgs("hi"))
    pool.submit("dup", "pool_test", {}, {}, _call("sleep", seconds=0.2))
    with pytest.raises(ValueError, match="already in flight"):
        pool.submit("dup", "pool_test", {}, {}, _msgs("hi"))
    _drain(pool, 1)


def test_faults_cost_only_their_own_request(pool):
    before = pool.metrics()
    t0 = time.monotonic()
    faults = {"boom": "tool_error", "hang": "timeout", "segv": "worker_died"}
    for name in faults:
        pool.submit(name, "pool_test", {}, {}, _call(name))
    pool.submit("soft_hang", "pool_test", {}, {}, _call("sleep", seconds=30))  # stopped by the in-worker alarm
    for i in range(4):
        pool.submit(f"ok{i}", "pool_test", {}, {}, _msgs("<answer>ok</answer>"))
    got = _drain(pool, 8)
    for name, tag in faults.items():
        step = got[name][0]
        assert step.done and step.reward.reward == 0.0 and step.error == tag, (name, step)
    assert got["soft_hang"][0].error == "timeout"
    for i in range(4):
        assert got[f"ok{i}"][0].reward.correct
    # nothing waited longer than its deadline (tool timeout + verify timeout + margin), plus queueing
    budget = TOOL_TIMEOUT + PoolTestEnv.verify_timeout_s + MARGIN
    assert got["hang"][1] - t0 < 2 * budget + 1.0
    m = pool.metrics()
    assert m["errors/tool_error"] - before.get("errors/tool_error", 0) == 1
    assert m["errors/timeout"] - before.get("errors/timeout", 0) == 2
    assert m["errors/worker_died"] - before.get("errors/worker_died", 0) == 1
    assert m["workers_replaced"] - before.get("workers_replaced", 0) == 2  # segfault + hard hang


def test_killed_worker_is_replaced(pool):
    pool.submit("victim", "pool_test", {}, {}, _call("sleep", seconds=0.8))
    pool.submit("bystander", "pool_test", {}, {}, _call("sleep", seconds=0.3))
    time.sleep(0.2)
    pids = pool.worker_pids()
    os.kill(pids[0], signal.SIGKILL)
    got = _drain(pool, 2)
    errors = sorted(s.error or "ok" for s, _ in got.values())
    assert errors == ["ok", "worker_died"]
    assert pool.worker_pids()[0] != pids[0]
    pool.submit("after", "pool_test", {}, {}, _msgs("<answer>ok</answer>"))
    assert _drain(pool, 1)["after"][0].reward.correct


def test_queued_requests_run_while_the_parent_is_busy(tmp_path):
    """A worker serves its queue without the parent: while the parent never polls, every queued request
    runs (each leaves a marker file), and then all of them come back."""
    with EnvWorkerPool(1, env_modules=[__name__], pipeline_depth=4) as p:
        p.poll(timeout=0.0)
        marks = [tmp_path / f"mark{i}" for i in range(4)]
        for i, m in enumerate(marks):
            p.submit(i, "pool_test", {}, {}, _call("mark", path=str(m)))
        end = time.monotonic() + WAIT_S  # the parent is "decoding": no poll() until the work is done
        while not all(m.exists() for m in marks) and time.monotonic() < end:
            time.sleep(0.02)
        assert all(m.exists() for m in marks), "the worker did not serve its queue without the parent"
        got = _drain(p, 4)
        assert all(step.observation.content.count("marked") == 1 for step, _ in got.values())


def test_killed_pipelined_worker_costs_only_its_running_request():
    with EnvWorkerPool(1, env_modules=[__name__], deadline_margin_s=MARGIN, pipeline_depth=4) as p:
        p.submit("victim", "pool_test", {}, {}, _call("sleep", seconds=0.8))
        for i in range(3):
            p.submit(f"queued{i}", "pool_test", {}, {}, _msgs("<answer>ok</answer>"))
        time.sleep(0.3)
        os.kill(p.worker_pids()[0], signal.SIGKILL)
        got = _drain(p, 4)
        assert got["victim"][0].error == "worker_died"
        assert all(got[f"queued{i}"][0].reward.correct for i in range(3))
        assert p.metrics()["workers_replaced"] == 1


def test_sandboxed_python_through_pool(pool):
    pool.submit("py", "python", {"wall_s": 1.0, "cpu_s": 1}, {"family": "divisors", "params": {"n": 12}, "answer": "6"},
                _call("python", code="import time\nprint(6)\ntime.sleep(30)"))
    step = _drain(pool, 1)["py"][0]
    assert not step.done and "6" in step.observation.content and "wall-clock timeout" in step.observation.content


def test_rejects_fork_start_method():
    with pytest.raises(ValueError, match="never 'fork'"):
        EnvWorkerPool(1, start_method="fork")


def _proc_table() -> dict[int, tuple[int, int, bytes]]:
    """pid -> (parent pid, start time, command line) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        out[int(name)] = (int(fields[1]), int(fields[19]), cmd)
    return out


def _sandbox_processes(roots) -> set[tuple[int, int]]:
    """(pid, start time) of the sandbox processes below the processes `roots` (their bootstrap runs main.py)."""
    table, found, frontier = _proc_table(), set(), set(roots)
    while frontier:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier}
        found |= children
        frontier = children
    return {(pid, table[pid][1]) for pid in found if b"main.py" in table[pid][2]}


def _wait_for(predicate, what, deadline_s=60.0):
    """Poll `predicate` until true; the deadline is generous because the machine may be loaded."""
    end = time.monotonic() + deadline_s
    while not (value := predicate()):
        assert time.monotonic() < end, f"{what} within {deadline_s} s"
        time.sleep(0.05)
    return value


_NEIGHBOUR = """
import sys
from vagent_jax.envs.worker_pool import EnvWorkerPool
task = {"family": "divisors", "params": {"n": 12}, "answer": "6"}
msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": sys.argv[1]}]
with EnvWorkerPool(1) as pool:
    pool.submit("n", "python", {"wall_s": 60.0, "cpu_s": 5}, task, msgs)
    got = []
    while not got:
        got = pool.poll(timeout=1.0)
    print(got[0][1].observation.content if got[0][1].observation else got[0][1].error)
"""


def test_sandbox_of_a_killed_worker_is_reaped_next_to_another_pool(tmp_path):
    """Killing this pool's workers ends their sandboxes and nothing of a second pool's, even one whose
    $TMPDIR differs (before, pools found sandboxes by a machine-wide uid range, and a pool whose lock
    directory differed swept the other's live sandbox as an orphan). Generous deadlines: under load."""
    with EnvWorkerPool(2, env_modules=[__name__], deadline_margin_s=60.0) as pool:
        _killed_worker_next_to_another_pool(pool, tmp_path)


def _killed_worker_next_to_another_pool(pool, tmp_path):
    call = _call("python", code="import time\ntime.sleep(6)\nprint('neighbour ok')")[1].content
    (tmp_path / "tmp").mkdir()
    neighbour = subprocess.Popen([sys.executable, "-c", _NEIGHBOUR, call], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=dict(os.environ, TMPDIR=str(tmp_path / "tmp")))
    before = set(os.listdir(tempfile.gettempdir()))
    try:
        _wait_for(lambda: _sandbox_processes([neighbour.pid]), "the second pool's sandbox started")
        pool.submit("orphan", "python", {"wall_s": 60.0}, {"family": "divisors", "params": {"n": 12}, "answer": "6"},
                    _call("python", code="import time\ntime.sleep(60)"))
        ours = _wait_for(lambda: _sandbox_processes(pool.worker_pids()), "this pool's sandbox started")
        for pid in pool.worker_pids():
            os.kill(pid, signal.SIGKILL)
        assert _drain(pool, 1, timeout=60.0)["orphan"][0].error == "worker_died"
        table = _wait_for(lambda: (t := _proc_table()) and not {(p, t[p][1]) for p in t} & ours and t,
                          "the killed worker's sandbox gone", deadline_s=30.0)
        assert not {(p, table[p][1]) for p in table} & ours
        assert not [d for d in set(os.listdir(tempfile.gettempdir())) - before if d.startswith("vagent_sbx")]
        # the other worker died while idle: the next requests must not be lost to it
        pool.submit("next1", "pool_test", {}, {}, _msgs("<answer>ok</answer>"))
        pool.submit("next2", "pool_test", {}, {}, _msgs("<answer>ok</answer>"))
        assert all(s.reward.correct for s, _ in _drain(pool, 2, timeout=60.0).values())
        out, err = neighbour.communicate(timeout=120)
        assert "neighbour ok" in out, out + err
    finally:
        neighbour.kill()
        neighbour.wait()
