#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (run from the repository root, as root).
#
# Needs, under .gpu/ (add it to .git/info/exclude): whl/ (cp312 manylinux wheels, `pip download
# --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 ...`, of what
# the machine lacks: nbclient, nbformat, jupyter_client/core, ipykernel, ipython and their pure
# dependencies, pyzmq, tornado, rpds-py, debugpy), data/ (the four FashionMNIST .gz files) and
# `apt-get download bubblewrap` for a machine without bwrap. Prints, step by step:
#   1. the machine: GPU, driver, torch, cgroups, what a sandboxed process sees of the GPU;
#   2. a bare run of tests/fixtures/HW3_cuda.py (python3, no grader) on the GPU, then (bare2) the same
#      pinned to 2 cores with 2 threads, as a graded job runs (cpu_threads: 2): the like-for-like baseline;
#      (probe) the same in one process without and with the probe, its hooks timed (benchmarks/probe_cost.py);
#   3. sandboxed batches of that notebook on the GPU: --per-gpu 1 (2 copies), 8 (8 copies), 4 (4 copies);
#   4. the same 8 copies on the CPU (--gpus none, cores / cpu_threads jobs);
# each batch's wall time (EXTRA: more grader arguments; STEPS to run fewer; SKIP_INSTALL, CPU_COPIES for a dry run)
#, every result's status, accuracy, duration and the device the notebook saw.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
ROOT=$(pwd)
WORK=$(mktemp -d /var/tmp/gpu-check.XXXX)
NOTEBOOK=$ROOT/tests/fixtures/HW3_cuda.py
step() { echo; echo "== $(date +%T) $*"; }
elapsed() { python3 -c "import sys, time; print(round(time.time() - int(sys.argv[1]) / 1e9, 1))" "$1"; }

STEPS=" ${STEPS:-machine sandbox bare bare2 probe gpu1 gpu8 gpu4 cpu8} "  # a rerun may name fewer
want() { [[ "$STEPS" == *" $1 "* ]]; }

want machine && {
step machine
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv
python3 -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count())"
nproc
ls /proc/driver/nvidia/gpus/ && cat /proc/driver/nvidia/gpus/*/information | head -4
ls -la /dev/nvidia*
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
ldconfig -p | grep -E "libcuda\.so|libnvidia-ml" | head -4
echo "cgroup fs: $(stat -fc %T /sys/fs/cgroup) controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
}

step install
if [ -z "${SKIP_INSTALL:-}" ]; then
python3 -m pip install -q --no-index --no-deps --no-compile .gpu/whl/*.whl || exit 1
echo "$ROOT" > "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/grader-checkout.pth"  # the kernel imports grader.probe too
command -v bwrap >/dev/null || dpkg -x .gpu/bubblewrap_*.deb / || exit 1
bwrap --version || exit 1
python3 -m grader data --from .gpu/data || exit 1
fi

want sandbox && step "what a sandboxed process sees (GPU 0 given, then none)" &&
python3 - "$WORK" <<'EOF'
import subprocess, sys
from pathlib import Path
from grader.gpus import find
from grader.sandbox import Sandbox, SandboxLimits, command, prepare_kernel_dir, python_paths, unavailable_reason
print("sandbox:", unavailable_reason() or "available")
probe = ("import os, torch; print('  cuda', torch.cuda.is_available(), torch.cuda.device_count(), "
         "torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', "
         "'CUDA_VISIBLE_DEVICES=%r' % os.environ.get('CUDA_VISIBLE_DEVICES'), 'uid', os.getuid()); "
         "print('  /dev:', sorted(n for n in os.listdir('/dev') if n.startswith('nvidia'))); "
         "print('  gpus:', os.listdir('/proc/driver/nvidia/gpus') if os.path.isdir('/proc/driver/nvidia/gpus') else '-')")
for gpu in (find("0"), None):
    box = Sandbox(Path(sys.argv[1]) / "box", python_paths(), SandboxLimits(8000, 256, 1000, 500), gpu=gpu)
    prepare_kernel_dir(box, ())
    done = subprocess.run([*command(box, {}), sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    print("gpu", gpu.index if gpu else None, "exit", done.returncode, done.stdout.rstrip(), done.stderr.strip()[-800:])
EOF

want bare && step "bare run on the GPU: python3 HW3_cuda.py, no grader"
want bare && mkdir -p "$WORK/bare" && ln -sfn ~/.cache/grader/fashion-mnist "$WORK/bare/data"
want bare && ( cd "$WORK/bare" && start=$(date +%s%N) && python3 "$NOTEBOOK" | grep -E "device:|Overall" \
  && echo "bare wall: $(elapsed "$start") s" )

want bare2 && step "bare run on the GPU, like a graded job: 2 cores (taskset -c 0,1), 2 threads"
want bare2 && mkdir -p "$WORK/bare" && ln -sfn ~/.cache/grader/fashion-mnist "$WORK/bare/data"
want bare2 && ( cd "$WORK/bare" && start=$(date +%s%N) && taskset -c 0,1 env OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 \
  python3 "$NOTEBOOK" | grep -E "device:|Overall" && echo "bare2 wall: $(elapsed "$start") s" )

want probe && step "the probe's own cost, like a graded job's cores: benchmarks/probe_cost.py bare, then --probe --timed"
want probe && for mode in "" "--probe --timed"; do taskset -c 0,1 env OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 \
  python3 benchmarks/probe_cost.py "$NOTEBOOK" $mode | grep -vE "^(Epoch|Test Accuracy of)"; done

batch() {  # name copies grader-arguments...
  local name=$1 copies=$2; shift 2
  local class=$WORK/class-$name out=$WORK/out-$name
  mkdir -p "$class"
  for i in $(seq -w 1 "$copies"); do cp "$NOTEBOOK" "$class/HW3_s$i.py"; done
  step "batch $name: $copies copies, grader grade $*"
  local start=$(date +%s%N)
  python3 -m grader grade "$class" --out "$out" "$@" ${EXTRA:-} | tail -3
  echo "exit ${PIPESTATUS[0]} wall: $(elapsed "$start") s"
  python3 - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for path in sorted((out / "results").glob("*.json")):
    r = json.loads(path.read_text())
    executed = out / "executed" / f"{r['student']}.ipynb"
    cells = json.loads(executed.read_text()).get("cells", []) if executed.exists() else []
    text = "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))
    seen = [line for line in text.splitlines() if line.startswith("device:")][:1]
    print(f"  {r['student']}: {r['status']} acc {r['accuracy']} printed {r['reported_accuracy']} by {r['measured_by']} "
          f"{r['duration_s']} s peak {r['peak_memory_mb']} MB flags {r['flags']} {r['reason'] or ''} {seen}")
    curve = r.get("curve") or {}
    print(f"    curve: {len(curve.get('loss', []))} points every {curve.get('every')} steps, loss "
          f"{[round(x, 3) for x in curve.get('loss', [])[:1] + curve.get('loss', [])[-1:]]}, "
          f"epochs at {curve.get('epochs', [])[:3]}...; confusion {'yes' if r.get('confusion') else 'no'}")
EOF
}

want gpu1 && batch gpu1 "${GPU1_COPIES:-2}" --per-gpu 1
want gpu8 && batch gpu8 8 --per-gpu 8
want gpu4 && batch gpu4 4 --per-gpu 4
want cpu8 && batch cpu8 "${CPU_COPIES:-8}" --gpus none
nvidia-smi --query-gpu=memory.used --format=csv
step done
