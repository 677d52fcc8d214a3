"""The Python sandbox contains hostile code: loops, fork bombs, huge allocations and output, env leaks, writes."""
import os
import time

import pytest

from vagent_jax.envs import sandbox
from vagent_jax.envs.sandbox import SandboxLimits, describe, run_python

LIMITS = SandboxLimits(cpu_s=1, wall_s=1.5, memory_bytes=256 * 2**20, max_output_bytes=2048)
# Upper bound on a contained run beyond its wall limit: interpreter start and clean-up on a machine loaded by
# other jobs. Generous, yet far below what the hostile programs below would take uncontained (30 s, forever).
SLACK_S = 8.0


def _leftovers():
    """Live (non-zombie) processes under any sandbox uid."""
    uids = {uid for uid, _ in sandbox._uids_in_range()}
    return [pid for uid in uids for pid, zombie in sandbox._uid_processes(uid) if not zombie]


def test_normal_code_runs_and_errors_are_reported():
    r = run_python("import fractions\nprint(fractions.Fraction(2, 4))", LIMITS)
    assert r.exit_code == 0 and r.stdout.strip() == "1/2" and "stdout:\n1/2" in describe(r)
    r = run_python("1/0", LIMITS)
    assert r.exit_code == 1 and "ZeroDivisionError" in r.stderr and "[exit code 1]" in describe(r)


def test_infinite_loop_is_stopped_by_cpu_limit():
    t0 = time.monotonic()
    r = run_python("while True:\n    pass", LIMITS)
    assert time.monotonic() - t0 < LIMITS.wall_s + SLACK_S
    assert r.exit_code is None and (r.signal is not None or r.timed_out)


def test_sleep_is_stopped_by_wall_clock():
    t0 = time.monotonic()
    r = run_python("import time\ntime.sleep(30)", LIMITS)
    assert r.timed_out and time.monotonic() - t0 < LIMITS.wall_s + SLACK_S
    assert "wall-clock timeout" in describe(r)


def test_fork_bomb_is_contained_and_cleaned_up():
    code = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)"
    t0 = time.monotonic()
    r = run_python(code, LIMITS)
    assert time.monotonic() - t0 < LIMITS.wall_s + SLACK_S
    assert r.exit_code is None
    assert _leftovers() == []


def test_escaped_background_process_is_killed():
    # a child that leaves the process group must still die with the run
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')"
    r = run_python(code, LIMITS)
    assert "parent done" in r.stdout
    assert _leftovers() == []


def test_huge_allocation_fails_inside_the_sandbox():
    r = run_python("x = bytearray(10 * 1024**3)\nprint('allocated')", LIMITS)
    assert "allocated" not in r.stdout and "MemoryError" in r.stderr


def test_gigabytes_of_output_are_truncated():
    t0 = time.monotonic()
    r = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", LIMITS)
    assert r.truncated and len(r.stdout) == LIMITS.max_output_bytes
    assert time.monotonic() - t0 < LIMITS.wall_s + SLACK_S


def test_parent_environment_does_not_leak(monkeypatch):
    monkeypatch.setenv("VAGENT_TEST_SECRET", "hunter2-secret")
    code = ("import os\nprint(sorted(os.environ))\n"
            "for p in os.listdir('/proc'):\n"
            "    try:\n        print(open(f'/proc/{p}/environ', 'rb').read())\n"
            "    except Exception:\n        pass\n"
            "try:\n    print(open(f'/proc/{os.getppid()}/environ', 'rb').read())\nexcept Exception as e:\n"
            "    print('denied', type(e).__name__)")
    r = run_python(code, LIMITS)
    assert r.exit_code == 0, r.stderr
    assert "hunter2-secret" not in r.stdout + r.stderr and "VAGENT_TEST_SECRET" not in r.stdout
    assert "['HOME', 'LANG', 'PATH', 'TMPDIR']" in r.stdout


@pytest.mark.parametrize("target", ["/tmp/vagent_sandbox_escape.txt", "{cwd}/vagent_sandbox_escape.txt"])
def test_writes_outside_the_workdir_are_refused(target):
    path = target.format(cwd=os.getcwd())
    code = (f"import os\nopen('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())\n"
            f"try:\n    open({path!r}, 'w').write('x')\nexcept OSError as e:\n    print('refused', type(e).__name__)\n"
            f"try:\n    os.symlink('/etc', 'link')\n    open('link/escape', 'w')\nexcept OSError as e:\n"
            f"    print('refused link', type(e).__name__)")
    r = run_python(code, LIMITS)
    assert "ok" in r.stdout and "refused PermissionError" in r.stdout and "refused link" in r.stdout
    assert not os.path.exists(path)


def test_running_programs_and_ctypes_are_refused():
    r = run_python("import subprocess\nsubprocess.run(['id'])", LIMITS)
    assert "PermissionError" in r.stderr and "subprocess.Popen is not allowed" in r.stderr
    r = run_python("import ctypes", LIMITS)
    assert "ctypes" in r.stderr and "not allowed" in r.stderr
    r = run_python("import os\nos.system('id')", LIMITS)
    assert "os.system is not allowed" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="uid drop applies when running as root")
def test_runs_as_unprivileged_uid_and_workdir_is_removed():
    r = run_python("import os\nprint(os.getuid(), os.getcwd())", LIMITS)
    uid, cwd = r.stdout.split()
    assert sandbox.UID_BASE <= int(uid) < sandbox.UID_BASE + sandbox.UID_COUNT
    assert not os.path.exists(cwd)
