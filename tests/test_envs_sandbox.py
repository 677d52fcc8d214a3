"""The Python sandbox: limits, output, clean-up, backends, refusal without isolation, unprivileged use.

Hostile programs against the kernel backends are in tests/test_envs_sandbox_hostile.py.
"""
import concurrent.futures
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from sandbox_fixtures import BACKENDS, processes_with
from vagent_jax.config import ConfigError
from vagent_jax.envs import sandbox, sandbox_unisolated
from vagent_jax.envs.python_env import PythonEnv
from vagent_jax.envs.sandbox import SandboxLimits, SandboxUnavailable, describe, run_python
from vagent_jax.envs.sandbox_output import MARKER, head_and_tail, share_budget

LIMITS = dict(cpu_s=1, wall_s=2.0, memory_bytes=256 * 2**20, max_output_bytes=2048)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- output: head and tail within the budget ---------------------------------------------------------
def test_long_output_keeps_head_and_tail_with_a_cut_marker():
    data = b"HEAD" + b"x" * 10_000 + b"Traceback: the end"
    text, cut = head_and_tail(data, 1000)
    assert text.startswith("HEAD") and text.endswith("Traceback: the end")
    assert len(text.encode()) <= 1000 and MARKER.format(cut=cut) in text
    assert cut == len(data) - (len(text.encode()) - len(MARKER.format(cut=cut).encode()))
    assert head_and_tail(b"short", 1000) == ("short", 0)


def test_one_budget_is_shared_by_stdout_and_stderr():
    assert share_budget(100, 50, 1000) == (100, 50)
    assert share_budget(10_000, 300, 1000) == (700, 300)  # a short traceback keeps all of it
    assert share_budget(10_000, 10_000, 1000) == (500, 500)
    assert sum(share_budget(5000, 7000, 999)) <= 999


# ---- every kernel backend ------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_normal_code_runs_and_errors_are_reported(backend):
    r = run_python("import fractions\nprint(fractions.Fraction(2, 4))", SandboxLimits(backend=backend, **LIMITS))
    assert r.exit_code == 0 and r.stdout.strip() == "1/2" and "stdout:\n1/2" in describe(r)
    r = run_python("1/0", SandboxLimits(backend=backend, **LIMITS))
    assert r.exit_code == 1 and "ZeroDivisionError" in r.stderr and "[exit code 1]" in describe(r)


@pytest.mark.parametrize("backend", BACKENDS)
def test_time_limits_stop_loops_and_sleeps(backend):
    limits = SandboxLimits(backend=backend, **LIMITS)
    t0 = time.monotonic()
    r = run_python("while True:\n    pass", limits)
    assert r.exit_code is None and (r.signal is not None or r.timed_out)
    r = run_python("import time\ntime.sleep(30)", limits)
    assert r.timed_out and "wall-clock timeout" in describe(r)
    assert time.monotonic() - t0 < 2 * (limits.wall_s + sandbox._KILL_GRACE_S)  # generous: a loaded machine


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_output_ends_with_its_traceback(backend):
    code = "print('first line')\nfor i in range(20000):\n    print(i)\nraise ValueError('the real error')"
    r = run_python(code, SandboxLimits(backend=backend, **LIMITS))
    assert r.truncated and r.stdout.startswith("first line") and r.stdout.rstrip().endswith("19999")
    assert "ValueError: the real error" in r.stderr and "bytes cut" in r.stdout
    assert len((r.stdout + r.stderr).encode()) <= LIMITS["max_output_bytes"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_environment_is_clean_and_uid_unprivileged(backend, monkeypatch):
    monkeypatch.setenv("VAGENT_TEST_SECRET", "hunter2-secret")
    r = run_python("import os\nprint(sorted(os.environ), os.getuid(), os.getpid())",
                   SandboxLimits(backend=backend, **LIMITS))
    assert "hunter2" not in r.stdout and "['HOME', 'LANG', 'PATH', 'TMPDIR']" in r.stdout
    uid, pid = map(int, r.stdout.split()[-2:])
    assert uid == (sandbox.SANDBOX_UID if os.geteuid() == 0 else os.geteuid()) and pid == 2  # own pid namespace


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_work_dir_or_process_is_left_on_the_host(backend):
    token = uuid.uuid4().hex
    before = set(os.listdir(tempfile.gettempdir()))
    code = (f"import os, sys\nopen('data', 'w').write('x')\nif os.fork() == 0:\n    os.setsid()\n"
            f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', '{token}'])\n"
            "import time\ntime.sleep(30)")
    r = run_python(code, SandboxLimits(backend=backend, **LIMITS))
    assert r.timed_out
    assert processes_with(token) == []
    assert not [p for p in set(os.listdir(tempfile.gettempdir())) - before if "sbx" in p]


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_sandboxes_do_not_touch_each_other(backend):
    """A fork bomb and a sleeper next to normal runs: every run gets its own result, with one uid."""
    limits = SandboxLimits(backend=backend, **LIMITS)
    bomb = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)"
    count = "len([p for p in os.listdir('/proc') if p.isdigit()])"
    jobs = [bomb, "import time\ntime.sleep(30)"] + [f"import os\nprint({i} * 7, {count})" for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as ex:
        results = list(ex.map(lambda c: run_python(c, limits), jobs))
    assert results[1].timed_out
    for i, r in enumerate(results[2:]):
        value, procs = r.stdout.split()
        assert r.exit_code == 0 and int(value) == i * 7 and int(procs) <= 2, describe(r)


# ---- the unisolated fallback -------------------------------------------------------------------------
UNISOLATED = SandboxLimits(backend="unisolated", **LIMITS)


@pytest.mark.parametrize("target", ["/tmp/vagent_sandbox_escape.txt", "{cwd}/vagent_sandbox_escape.txt"])
def test_unisolated_audit_hook_refuses_writes_outside(target):
    path = target.format(cwd=os.getcwd())
    code = (f"open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())\n"
            f"try:\n    open({path!r}, 'w').write('x')\nexcept OSError as e:\n    print('refused', type(e).__name__)\n")
    r = run_python(code, UNISOLATED)
    assert "ok" in r.stdout and "refused PermissionError" in r.stdout and not os.path.exists(path)


def test_unisolated_audit_hook_refuses_programs_and_ctypes():
    r = run_python("import subprocess\nsubprocess.run(['id'])", UNISOLATED)
    assert "subprocess.Popen is not allowed" in r.stderr
    assert "not allowed" in run_python("import ctypes", UNISOLATED).stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the unisolated uid drop applies when running as root")
def test_unisolated_runs_as_a_private_uid_and_removes_its_work_dir():
    r = run_python("import os\nprint(os.getuid(), os.getcwd())", UNISOLATED)
    uid, cwd = r.stdout.split()
    assert sandbox_unisolated.UID_BASE <= int(uid) < sandbox_unisolated.UID_BASE + sandbox_unisolated.UID_COUNT
    assert not os.path.exists(cwd)


def test_sweep_removes_only_dead_owners_work_dirs():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tempfile.mkdtemp(prefix=f"{sandbox_unisolated.WORKDIR_PREFIX}{dead.pid}_")
    live = tempfile.mkdtemp(prefix=f"{sandbox_unisolated.WORKDIR_PREFIX}{os.getpid()}_")
    try:
        sandbox.sweep_stale()
        assert not os.path.exists(stale) and os.path.exists(live)
    finally:
        os.rmdir(live)


# ---- refusal without isolation ----------------------------------------------------------------------
def test_python_env_refuses_without_isolation_naming_the_key(monkeypatch, caplog):
    monkeypatch.setattr(sandbox, "probe", lambda backend, python: "user namespaces are disabled")
    with pytest.raises(ConfigError, match="allow_unisolated") as e:
        PythonEnv()
    assert "user namespaces are disabled" in str(e.value)
    with pytest.raises(SandboxUnavailable):
        run_python("print(1)", SandboxLimits(**LIMITS))
    with caplog.at_level(logging.WARNING):
        env = PythonEnv(allow_unisolated=True)
    assert env.sandbox_backend == "unisolated" and "WITHOUT kernel isolation" in caplog.text
    with pytest.raises(ConfigError, match="allow_unisolated"):
        PythonEnv(allow_unisolated="yes")


def test_refusal_where_the_kernel_forbids_user_namespaces():
    """In a user namespace whose limit of nested user namespaces is 0, no backend works: PythonEnv refuses."""
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this kernel forbids user namespaces already: {probe.stderr.decode().strip()}")
    script = ("from vagent_jax.envs.python_env import PythonEnv\nfrom vagent_jax.config import ConfigError\n"
              "try:\n    PythonEnv()\nexcept ConfigError as e:\n    print('REFUSED', e)\n")
    shell = f"echo 0 > /proc/sys/user/max_user_namespaces && exec {sys.executable} -c \"$0\""
    r = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c", shell, script], capture_output=True,
                       text=True, timeout=120, cwd=REPO)
    assert "REFUSED config key 'allow_unisolated'" in r.stdout, r.stdout + r.stderr


# ---- an unprivileged user ---------------------------------------------------------------------------
_AS_USER = r'''
import sys, types
for name, path in (("vagent_jax", []), ("vagent_jax.envs", [sys.argv[1] + "/envs"])):
    mod = types.ModuleType(name)
    mod.__path__ = path
    sys.modules[name] = mod
from vagent_jax.envs.sandbox import SandboxLimits, run_python, probe, sandbox_python
import os
for backend in ("bwrap", "namespaces"):
    why = probe(backend, sandbox_python())
    if why is not None:
        print(backend, "UNAVAILABLE", why)
        continue
    code = ("import os, socket\nprint('uid', os.getuid())\ntry:\n    open(%r).read()\nexcept OSError as e:\n"
            "    print('read', e.errno)\ntry:\n    socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
            "except OSError as e:\n    print('net', e.errno)\n" % sys.argv[2])
    r = run_python(code, SandboxLimits(backend=backend, wall_s=20, cpu_s=5))
    print(backend, os.getuid(), r.stdout.replace("\n", " "), r.stderr[-300:])
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="not root: the whole suite already runs as an unprivileged user")
def test_sandbox_works_for_an_unprivileged_user(tmp_path):
    """As uid 65534 (no capabilities, no sudo), with the system Python: both kernel backends isolate."""
    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    os.chmod(tmp_path, 0o755)
    os.chmod(secret, 0o644)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "/usr/bin/python3", "-I",
                        "-c", _AS_USER, REPO, str(secret)], capture_output=True, text=True, timeout=120, cwd="/")
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert set(lines) == {"bwrap", "namespaces"}, r.stdout + r.stderr
    for backend, line in lines.items():
        if "UNAVAILABLE" in line and backend == "bwrap" and sandbox.bwrap_path() is None:
            continue
        # ENOENT for the host file; ENETUNREACH (loopback down) or ECONNREFUSED (bwrap's own loopback)
        assert line.startswith(tuple(f"{backend} 65534 uid 65534 read 2 net {e}" for e in (101, 111))), line


def test_kernel_backends_work_wherever_the_kernel_allows_user_namespaces():
    """The backend tests skip where a backend's probe fails; a probe must not fail for a bug of ours."""
    kernel = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True)
    if kernel.returncode != 0:
        pytest.skip(f"this kernel forbids user namespaces: {kernel.stderr.decode().strip()}")
    python = sandbox.sandbox_python()
    assert sandbox.probe("namespaces", python) is None
    if sandbox.bwrap_path() is not None:
        assert sandbox.probe("bwrap", python) is None
