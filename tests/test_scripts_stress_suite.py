"""scripts/stress_suite.sh: runs pytest N times under CPU burners and lists each run's passes and failures,
and the tests that failed in any run; its burners die with it."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CASES = '''
import logging
import pathlib

def test_always_passes():
    assert True

def test_fails_on_the_first_run_only(tmp_path_factory):
    mark = pathlib.Path(__file__).with_name("ran_once")
    first = not mark.exists()
    mark.write_text("x")
    logging.getLogger("case").error("a captured log line, not a test id")
    assert not first
'''


def _burners() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "while True: pass" in line and "ps -eo" not in line]


def test_stress_suite_lists_passes_failures_and_flaky_tests(tmp_path: Path) -> None:
    cases = tmp_path / "test_cases.py"
    cases.write_text(_CASES)
    before = _burners()
    r = subprocess.run(["bash", str(ROOT / "scripts" / "stress_suite.sh"), "-n", "2", "-b", "1", "--json", "--",
                        str(cases)], capture_output=True, text=True, timeout=300,
                       cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert r.returncode == 1, r.stdout + r.stderr  # run 1 failed
    report = json.loads(r.stdout.strip().splitlines()[-1])
    report = json.loads(json.dumps(report).replace(os.path.relpath(cases, ROOT), "CASES"))  # pytest's node ids
    ok, flaky = "CASES::test_always_passes", "CASES::test_fails_on_the_first_run_only"
    assert report["runs"] == [{"passed": [ok], "failed": [flaky]}, {"passed": [ok, flaky], "failed": []}]
    assert report["flaky"] == [flaky]
    assert "== run 1: exit 1, 1 passed, 1 failed" in r.stdout and "1 CPU burners" in r.stdout
    assert _burners() == before, "a burner outlived the script"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ran_once", "test_cases.py"]  # its work dir is gone


def test_stress_suite_keeps_each_runs_log_in_the_named_dir(tmp_path: Path) -> None:
    cases = tmp_path / "test_cases.py"
    cases.write_text(_CASES)
    logs = tmp_path / "logs"
    r = subprocess.run(["bash", str(ROOT / "scripts" / "stress_suite.sh"), "-n", "2", "-b", "1", "-o", str(logs),
                        "--", str(cases)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed" in (logs / "run1.log").read_text() and "2 passed" in (logs / "run2.log").read_text()
    assert (logs / "run1.failed").read_text().strip().endswith("test_fails_on_the_first_run_only")
