#!/usr/bin/env bash
# Run pytest several times in a row while CPU burners keep every core busy, and list per run which tests
# passed and failed, then the tests that failed in any run (load-sensitive: flaky). Usage:
#
#   scripts/stress_suite.sh [-n RUNS] [-b BURNERS] [-o DIR] [-v] [--json] [-- PYTEST_ARGS...]
#
#   -n RUNS      pytest runs (default 3)
#   -v           list the passed tests of each run too (always: the failed ones)
#   -b BURNERS   busy-loop processes (default: one per core, `nproc`)
#   -o DIR       keep each run's pytest log in DIR/runN.log (default: a temp dir, removed at exit)
#   --json       also print one JSON object {"runs": [{"passed": [...], "failed": [...]}, ...], "flaky": [...]}
#   PYTEST_ARGS  what to run (default: the whole default suite); e.g. -- tests/test_envs_worker_pool.py
#
# Exit status: 0 when every run passed, 1 otherwise. The burners are this script's own children and die
# with it (trap on EXIT), whatever the runs do.
set -u
RUNS=3
BURNERS=$(nproc)
JSON=0
VERBOSE=0
KEEP=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n) RUNS="$2"; shift 2 ;;
    -b) BURNERS="$2"; shift 2 ;;
    --json) JSON=1; shift ;;
    -v) VERBOSE=1; shift ;;
    -o) KEEP="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "stress_suite.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && OUT="$(cd "$KEEP" && pwd)"; else OUT="$(mktemp -d "${TMPDIR:-/tmp}/stress_suite.XXXXXX")"; fi
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  if [ -z "$KEEP" ]; then rm -rf "$OUT"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for _ in $(seq "$BURNERS"); do
  "$PY" -c "while True: pass" &
  PIDS+=($!)
done
echo "stress_suite: $BURNERS CPU burners (pids ${PIDS[*]}), $RUNS runs of: pytest $*"

status=0
for run in $(seq "$RUNS"); do
  start=$(date +%s)
  (cd "$ROOT" && "$PY" -m pytest -q -rA -p no:cacheprovider "$@") > "$OUT/run$run.log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && status=1
  ids() { grep -E "^($1) [^ ]" "$OUT/run$run.log" | sed -E 's/^[A-Z]+ //; s/ - .*$//' | sort -u; }
  ids PASSED > "$OUT/run$run.passed"
  ids 'FAILED|ERROR' > "$OUT/run$run.failed"  # one space: not a captured log line ("ERROR    absl:...")
  echo "== run $run: exit $rc, $(wc -l < "$OUT/run$run.passed") passed, $(wc -l < "$OUT/run$run.failed") failed," \
       "$(( $(date +%s) - start )) s"
  [ "$VERBOSE" -eq 1 ] && sed 's/^/   passed /' "$OUT/run$run.passed"
  sed 's/^/   FAILED /' "$OUT/run$run.failed"
  tail -n 1 "$OUT/run$run.log" | sed 's/^/   /'
done

cat "$OUT"/run*.failed | sort -u > "$OUT/flaky"
echo "== failed in any run: $(wc -l < "$OUT/flaky")"
sed 's/^/   /' "$OUT/flaky"

if [ "$JSON" -eq 1 ]; then
  "$PY" - "$OUT" "$RUNS" <<'EOF'
import json, pathlib, sys
out, runs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
read = lambda p: [line for line in p.read_text().splitlines() if line]
print(json.dumps({"runs": [{"passed": read(out / f"run{i}.passed"), "failed": read(out / f"run{i}.failed")}
                           for i in range(1, runs + 1)], "flaky": read(out / "flaky")}))
EOF
fi
exit $status
