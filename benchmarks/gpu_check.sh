#!/usr/bin/env bash
# GPU check of the CUDA backend, in one go, under 8 minutes; installs nothing and needs no network.
#
#   1. the test suite's CUDA-marked tests:        python -m pytest -m cuda tests
#   2. ResNet-50 float16, batch 1, 32, 128, 256: eager vs CUDA graphs vs torch.compile, each checked
#      against float32 on the same input; the table goes into benchmarks/RESULTS.md with the GPU name
#   3. the acceptance command: mpiexec -n <GPUs> python -m mpirunner --config resnet50-gpu
#   4. the input path (issue 13): --config resnet50-gpu with generated, real and synthetic data at batch 1, 32
#      and 256, with CUDA graphs and with --compile inductor, plus a bare eager loop that copies a pinned
#      uint8 batch every step; the table goes into benchmarks/RESULTS.md (input_path_gpu markers)
#
# Usage (from any folder):  bash benchmarks/gpu_check.sh
# Environment: PYTHON (interpreter; default python3, else python), OUT (a folder that receives the log and
# RESULTS.md; default: none), GPU_CHECK_PYLIB (a folder of pure-Python packages, e.g. pytest, put on
# PYTHONPATH when the machine lacks them; default .gpu_check_pylib in the checkout), and the time limits
# of the four parts in seconds, TESTS_LIMIT (100), MODES_LIMIT (130), RUN_LIMIT (45), INPUT_LIMIT (190):
# under 8 minutes in all.
# The checkout is used as it is (PYTHONPATH=checkout), so `pip install` is not needed.
# Exit status: 0 when every part passed, else the number of parts that failed.

set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1

python_bin=${PYTHON:-$(command -v python3 || command -v python)}
pylib=${GPU_CHECK_PYLIB:-$repo/.gpu_check_pylib}
export PYTHONPATH="$repo${pylib:+:$pylib}${PYTHONPATH:+:$PYTHONPATH}"
out=${OUT:-}
log=${out:-/tmp}/gpu_check.log
: > "$log"

say() { printf '%s\n' "$*" | tee -a "$log"; }

# run LIMIT_SECONDS COMMAND...: run with a time limit, log everything, return the status
run() {
    local limit=$1
    shift
    say "+ $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
    local status=${PIPESTATUS[0]}
    [ "$status" -eq 124 ] && say "!! timed out after ${limit}s"
    return "$status"
}

failed=0
start=$SECONDS

say "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), python $python_bin"
if ! "$python_bin" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    say "no CUDA GPU visible to torch (torch.cuda.is_available() is False): nothing to check"
    exit 1
fi
"$python_bin" - <<'EOF' 2>&1 | tee -a "$log"
import torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), "
      f"{torch.cuda.device_count()} GPU(s):")
for index in range(torch.cuda.device_count()):
    props = torch.cuda.get_device_properties(index)
    print(f"  cuda:{index} {props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}")
EOF
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,pci.bus_id --format=csv,noheader 2>&1 | tee -a "$log"

say "== 1. CUDA-marked tests"
if "$python_bin" -c 'import pytest' 2> /dev/null; then
    run "${TESTS_LIMIT:-100}" "$python_bin" -m pytest -q -p no:cacheprovider -m cuda --continue-on-collection-errors tests || failed=$((failed + 1))
else
    say "!! pytest is not installed here and not in $pylib: CUDA tests not run"
    failed=$((failed + 1))
fi

say "== 2. ResNet-50 float16: eager vs CUDA graphs vs torch.compile, batch 1, 32, 128, 256 (after $((SECONDS - start))s)"
run "${MODES_LIMIT:-130}" "$python_bin" benchmarks/gpu_modes.py --batch-sizes 1,32,128,256 --iterations 30 --warmup 5 \
    --results benchmarks/RESULTS.md || failed=$((failed + 1))

say "== 3. acceptance: one rank per GPU with --config resnet50-gpu (after $((SECONDS - start))s)"
gpus=$("$python_bin" -c 'import torch; print(torch.cuda.device_count())')
launcher=()
mpiexec_bin=$(dirname "$python_bin")/mpiexec
[ -x "$mpiexec_bin" ] || mpiexec_bin=$(command -v mpiexec || true)
if [ -n "$mpiexec_bin" ]; then
    launcher=("$mpiexec_bin" -n "$gpus")
    if "$mpiexec_bin" --version 2>&1 | grep -q "Open MPI" && [ "$(id -u)" -eq 0 ]; then
        launcher+=(--allow-run-as-root)
    fi
else
    say "no mpiexec here: one process (one GPU) instead"
fi
result_file=$(mktemp -u /tmp/gpu_check_resnet50_XXXXXX.h5)
run "${RUN_LIMIT:-45}" ${launcher[@]+"${launcher[@]}"} "$python_bin" -m mpirunner --config resnet50-gpu --iterations 20 --no-progress \
    --output "$result_file" || failed=$((failed + 1))

say "== 4. input path: generated / real / synthetic, graphs and inductor, batch 1, 32, 256 (after $((SECONDS - start))s)"
run "${INPUT_LIMIT:-190}" "$python_bin" benchmarks/input_path.py --config resnet50-gpu --batch-size 1,32,256 \
    --iterations 20 --variants graphs,inductor --bare-copy-loop --results benchmarks/RESULTS.md || failed=$((failed + 1))

if [ -n "$out" ]; then
    cp benchmarks/RESULTS.md "$out"/ 2> /dev/null
    [ -f "$result_file" ] && cp "$result_file" "$out"/resnet50-gpu.h5
fi
say "== gpu_check done in $((SECONDS - start))s, $failed part(s) failed; log: $log"
exit "$failed"
