#!/bin/bash
# The four reference IPU-M2000 inference benchmarks (Graphcore's ipu-inference-benchmarks.md), each
# run as ONE poprun job that sweeps the whole batch-size range into ONE HDF5 file, instead of one job
# per batch size. The poprun arguments and the runner flags are the reference ones, with
# `python -m mpirunner` in place of `python run_benchmark.py`.
#
#   jobs/poprun-reference.sh                             # all four, one after the other
#   jobs/poprun-reference.sh resnet50 resnext101         # just these
#   OUTPUT_DIR=/data/runs PYTHON=$PWD/.venv/bin/python jobs/poprun-reference.sh efficientnet-b4
#   DRY_RUN=1 jobs/poprun-reference.sh                   # print the poprun commands, run nothing
#
# For minimum latency at some cost in throughput, as the reference says:
#   POPLAR_ENGINE_OPTIONS='{"exchange.enablePrefetch": "false"}' jobs/poprun-reference.sh resnet50
# (or mpirunner's --min-latency, passed through EXTRA_ARGS).
#
# Batch sizes are the reference's. --iterations 20 is the reference's number, NOT its measurement: the
# reference's --iterations counts steps per JOB (its data loader splits them over the instances: with 4
# instances each runs 5 steps, the first 2 untimed), mpirunner's counts timed steps per INSTANCE (20 on
# each, after the compile call and --warmup-iterations). The file keeps both figures: `throughput` and
# `latency_mean` (mpirunner's) beside `throughput_reference` and `latency_reference_ms` (the reference's
# formulas over mpirunner's steps), and the run block prints the reference's own lines (docs/ipu.md).
#
# What this script adds to the reference flags:
#   - --model-cache-path "$MODEL_CACHE_PATH": compiled executables are kept, so a rerun does not
#     compile again;
#   - --timeout "$TIMEOUT_SECONDS" per batch size (compilation included): a stuck instance ends the
#     job instead of holding the IPUs;
#   - --no-progress: no progress-bar frames in the job log;
#   - --output "$OUTPUT_DIR/<sweep>-sweep.h5", named without a time stamp, and --resume: a rerun
#     (after a time limit, a signal or an out-of-memory size) continues the sweep in that file.
#
# Site options: where IPUs are allocated through SLURM, run this script inside an allocation and add
# the site's options there, e.g. `salloc --partition=NAME --account=NAME jobs/poprun-reference.sh`;
# poprun's own site options (--vipu-server-host, --vipu-partition, --host) go in POPRUN_ARGS.

set -euo pipefail

PYTHON="${PYTHON:-python3}"
OUTPUT_DIR="${OUTPUT_DIR:-results}"
EXTRA_ARGS="${EXTRA_ARGS:-}"              # more mpirunner flags, e.g. "--min-latency"
POPRUN_ARGS="${POPRUN_ARGS:-}"            # more poprun flags, e.g. "--vipu-partition=NAME"
MODEL_CACHE_PATH="${MODEL_CACHE_PATH:-$OUTPUT_DIR/model-cache}"
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-3600}"  # per batch size, IPU compilation included
DRY_RUN="${DRY_RUN:-}"                    # 1: print the commands instead of running them
SWEEPS=(resnet50 efficientnet-b0 efficientnet-b4 resnext101)

read -r -a extra_args <<< "$EXTRA_ARGS"
read -r -a poprun_args <<< "$POPRUN_ARGS"

# Run a command, or with DRY_RUN=1 print it shell-quoted, one command per line.
run() {
    if [[ "$DRY_RUN" == 1 ]]; then
        local quoted
        quoted=$(printf '%q ' "$@")
        echo "${quoted% }"
    else
        "$@"
    fi
}

# The reference poprun line: 4 instances, each pinned to its NUMA node, 4 replicas of 1 IPU.
# $1 is the variable the reference forwards to every instance; the rest are mpirunner flags.
poprun_reference() {
    local forwarded="$1"
    shift
    run poprun ${poprun_args[@]+"${poprun_args[@]}"} \
        --mpi-global-args="--allow-run-as-root --tag-output" \
        --mpi-local-args="-x $forwarded" \
        --num-instances=4 \
        --numa-aware=yes \
        --num-replicas=4 \
        --ipus-per-replica=1 \
        "$PYTHON" -m mpirunner "$@" \
        --model-cache-path "$MODEL_CACHE_PATH" --timeout "$TIMEOUT_SECONDS" --no-progress --resume \
        ${extra_args[@]+"${extra_args[@]}"}
}

run_sweep() {
    local output="$OUTPUT_DIR/$1-sweep.h5"
    case "$1" in
        resnet50)
            poprun_reference POPLAR_ENGINE_OPTIONS \
                --config resnet50-mk2 --data generated --batch-size 1..80 --iterations 20 \
                --num-io-tiles 64 --output "$output" ;;
        efficientnet-b0)
            poprun_reference POPLAR_RUNTIME_OPTIONS \
                --config efficientnet-b0-mk2 --data generated --batch-size 1..48 --iterations 20 \
                --num-io-tiles 64 --output "$output" ;;
        efficientnet-b4)
            poprun_reference POPLAR_RUNTIME_OPTIONS \
                --config efficientnet-b4-mk2 --data generated --batch-size 1..10 --iterations 20 \
                --num-io-tiles 0 --output "$output" ;;
        resnext101)
            poprun_reference POPLAR_RUNTIME_OPTIONS \
                --data generated --batch-size 1..16 --model resnext101 --device-iterations 128 \
                --norm-type batch --precision 16.16 --half-partial --eight-bit-io \
                --normalization-location ipu --iterations 20 --num-io-tiles 32 --output "$output" ;;
    esac
}

if (($# == 0)); then
    set -- "${SWEEPS[@]}"
fi
for name in "$@"; do  # check every name before running anything
    if [[ " ${SWEEPS[*]} " != *" $name "* ]]; then
        echo "poprun-reference.sh: unknown sweep '$name'; choose from: ${SWEEPS[*]}" >&2
        exit 2
    fi
done
run mkdir -p "$OUTPUT_DIR"
for name in "$@"; do
    run_sweep "$name"
done
