#!/usr/bin/env bash
# The whole GPU story in one short run: run this first whenever a GPU is at hand, and commit
# what it writes.
#
#   benchmarks/gpu_check.sh            on one H100/H200: at most ~8 minutes
#   benchmarks/gpu_check.sh --dry-run  every step at tiny sizes on the CPU (CI; under a minute)
#
# Writes gpu-check.log and gpu-*.json (8 files at most: what a device run can bring back) into
# $OUT when it is set, else into benchmarks/results (a temporary folder for --dry-run):
#   gpu-summary.json        each step's exit status, time and limit; the CUDA tests' counts
#   gpu-precision.json      TF32 against float32: fits under the user's "high"/"medium" setting
#                           equal fits at "highest"; the E-step GEMM's error and speed with TF32
#   gpu-bench-gmm.json      torchem bench, diag and full GMM 1M x 64, K=64, cuda and cpu
#   gpu-bench-kmeans.json   KMeans 10M x 128, K=1024
#   gpu-bench-bernoulli.json  BernoulliMixture 1M x 784, K=10
#   gpu-sklearn-array-api.json  scikit-learn's array-API GaussianMixture on CUDA tensors
#                           (recorded as skipped where this scikit-learn has none)
#   gpu-memory.json         bench_memory: 100M x 64 diag K=64 on the device; a host array
#                           streamed through pinned buffers
# The project runs from this tree (PYTHONPATH) with the machine's python3 ($PYTHON to change
# it); nothing is installed. Every step has its own time limit, and all of them together a
# budget ($GPU_CHECK_BUDGET_S, default 465 s), so one slow step cannot eat the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    "") ;;
    *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export MPLBACKEND=Agg
if [ -n "${OUT:-}" ]; then
    DEST=$OUT
elif [ $DRY = 1 ]; then
    DEST=$(mktemp -d)
else
    DEST=$ROOT/benchmarks/results
fi
mkdir -p "$DEST"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LOG=$DEST/gpu-check.log
: >"$LOG"
if [ $DRY = 1 ]; then
    # (every step's process pays torch's import, 4-8 s on a slow 2-core VM: room for all of them)
    BUDGET=${GPU_CHECK_BUDGET_S:-120}
else
    BUDGET=${GPU_CHECK_BUDGET_S:-465}
fi
START=$SECONDS

log() { echo "$*" | tee -a "$LOG"; }

# step NAME LIMIT_S COMMAND...: run COMMAND with LIMIT_S seconds at most (less when the budget
# is nearly spent; skipped with under 10 s left), output into the log, status into steps.tsv.
step() {
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 10 ]; then
        log "=== $name: skipped, ${left}s of the budget left"
        printf '%s\tskipped\t0\t%s\n' "$name" "$limit" >>"$WORK/steps.tsv"
        return
    fi
    log "=== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    log "=== $name: exit $rc after $((SECONDS - t0))s$([ $rc = 124 ] && echo ' (time limit)')"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$WORK/steps.tsv"
}

log "gpu_check.sh $([ $DRY = 1 ] && echo --dry-run) in $ROOT, $(date -u +%FT%TZ), budget ${BUDGET}s"
git -C "$ROOT" log -1 --format='commit %H %s' >>"$LOG" 2>&1 || true
command -v nvidia-smi >/dev/null && nvidia-smi >>"$LOG" 2>&1
"$PY" -c "
import sys, importlib.metadata as md, torch, torchem
print('python', sys.version.split()[0], *(f'{p} {md.version(p)}' for p in ('torch', 'numpy', 'scikit-learn', 'scipy')),
      'torchem', torchem.__file__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')
" 2>&1 | tee -a "$LOG"

if [ $DRY = 1 ]; then
    DEVICES=cpu
    TESTS=(tests/test_cuda.py tests/test_streaming.py tests/test_bench.py)  # the files with CUDA tests: collection is slow
    GMM=(--n 3000 --d 8 --k 4); KM=(--n 5000 --d 8 --k 8); BER=(--n 2000 --d 32 --k 4)
    ITERS=(--iters 2 --repeat 1 --quick --min-seconds 0)
    PREC=(--device cpu --n 2000 --d 8 --k 4)
    MEM_DEVICE=(--device cpu --source memory --n 20000 --d 8 --k 4 --max-iter 2)
    MEM_HOST=(--device cpu --source memmap --n 20000 --d 8 --k 4 --max-iter 2)
else
    DEVICES=cuda,cpu
    TESTS=(tests)
    GMM=(--n 1000000 --d 64 --k 64); KM=(--n 10000000 --d 128 --k 1024); BER=(--n 1000000 --d 784 --k 10)
    ITERS=(--iters 5 --repeat 2)
    PREC=(--device cuda --n 1000000 --d 64 --k 64)
    MEM_DEVICE=(--device cuda --source device --n 100000000 --d 64 --k 64 --max-iter 3)
    # 40M x 64 float32 (10 GB) in host RAM, with all but 16 GiB of the device held: streamed
    MEM_HOST=(--device cuda --source host --n 40000000 --d 64 --k 64 --max-iter 2 --leave-free-gib 16)
fi
BENCH=("$PY" -m torchem bench --devices "$DEVICES" --no-reference --no-progress "${ITERS[@]}")

step tests 90 "$PY" -m pytest -m cuda "${TESTS[@]}" -q -p no:cacheprovider -rfEs --junitxml="$WORK/junit.xml"
step precision 30 "$PY" benchmarks/bench_precision.py "${PREC[@]}" --json "$DEST/gpu-precision.json"
step bench-gmm 100 "${BENCH[@]}" --models gmm-diag,gmm-full "${GMM[@]}" --json "$DEST/gpu-bench-gmm.json"
step bench-bernoulli 50 "${BENCH[@]}" --models bernoulli "${BER[@]}" --json "$DEST/gpu-bench-bernoulli.json"
step sklearn-array-api 50 env SCIPY_ARRAY_API=1 "$PY" -m torchem bench --devices "$DEVICES" --references sklearn-array-api \
    --no-progress "${ITERS[@]}" --models gmm-diag,gmm-full "${GMM[@]}" --json "$DEST/gpu-sklearn-array-api.json"
step memory-device 45 "$PY" benchmarks/bench_memory.py "${MEM_DEVICE[@]}" --json "$WORK/memory-device.json"
step memory-host 50 "$PY" benchmarks/bench_memory.py "${MEM_HOST[@]}" --json "$WORK/memory-host.json"
step bench-kmeans 110 "${BENCH[@]}" --models kmeans "${KM[@]}" --json "$DEST/gpu-bench-kmeans.json"

# The summary: each step's status, the CUDA tests' counts, the two memory cases in one file.
"$PY" - "$WORK" "$DEST" "$DRY" "$((SECONDS - START))" <<'EOF' 2>&1 | tee -a "$LOG"
import json, os, sys, xml.etree.ElementTree as ET

work, dest, dry, seconds = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
steps = []
with open(os.path.join(work, "steps.tsv")) as fh:
    for line in fh:
        name, rc, took, limit = line.rstrip("\n").split("\t")
        steps.append({"step": name, "exit": None if rc == "skipped" else int(rc), "skipped": rc == "skipped",
                      "timed_out": rc in ("124", "137"), "seconds": int(took), "limit_s": int(limit)})
tests = None
junit = os.path.join(work, "junit.xml")
if os.path.exists(junit):
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    tests["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
                       if c.find("failure") is not None or c.find("error") is not None]
memory = {}
for case in ("device", "host"):
    path = os.path.join(work, f"memory-{case}.json")
    if os.path.exists(path):
        with open(path) as fh:
            memory[case] = json.load(fh)
if memory:
    with open(os.path.join(dest, "gpu-memory.json"), "w") as fh:
        json.dump(memory, fh, indent=2)
ok = all(s["exit"] == 0 for s in steps)
with open(os.path.join(dest, "gpu-summary.json"), "w") as fh:
    json.dump({"dry_run": dry, "seconds": seconds, "ok": ok, "steps": steps, "cuda_tests": tests}, fh, indent=2)
for s in steps:
    status = "skipped" if s["skipped"] else ("time limit" if s["timed_out"] else f"exit {s['exit']}")
    print(f"{s['step']:18s} {status:11s} {s['seconds']:4d}s of {s['limit_s']}s")
if tests:
    print(f"cuda tests: {tests['tests']} run, {tests['failures'] + tests['errors']} failed, {tests['skipped']} skipped")
print(f"total {seconds}s; results in {dest}")
sys.exit(0 if ok else 1)
EOF
