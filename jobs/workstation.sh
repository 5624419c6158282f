#!/bin/bash
# One workstation, plain mpiexec: one mpirunner rank per NUMA node (each pins itself in-process),
# a batch-size sweep into one HDF5 file. Flags after the script name go to mpirunner.
#
#   jobs/workstation.sh                                         # resnet50-cpu as its config says
#   CONFIG=efficientnet-b0-cpu BATCH_SIZES=1..16 RANKS=2 jobs/workstation.sh --strict
#   MPIEXEC_ARGS="--allow-run-as-root" jobs/workstation.sh      # Open MPI as root
#   DRY_RUN=1 jobs/workstation.sh                               # print the mpiexec command, run nothing
#
# What this script sets, and what it leaves to the config:
#   - batch sizes and timed steps come from the config; --batch-size and --iterations are passed only
#     when BATCH_SIZES or ITERATIONS is set;
#   - always passed: --timeout "$TIMEOUT_SECONDS" (a stuck rank ends the job instead of hanging it),
#     --no-progress (no progress-bar frames in a log), --output and --resume (a rerun with the same
#     OUTPUT continues the sweep; other settings are refused with exit 2: choose another OUTPUT).
# No site options (--partition, --account) apply here: there is no scheduler; for a cluster see
# jobs/slurm.sbatch.
#
# The launcher is told not to bind (--bind-to none, understood by MPICH's Hydra and Open MPI):
# Open MPI binds to cores by default, which would hide the rest of the machine from the ranks' plan.

set -euo pipefail

CONFIG="${CONFIG:-resnet50-cpu}"          # a named config (python -m mpirunner --list-configs) or a YAML path
BATCH_SIZES="${BATCH_SIZES:-}"            # default: the config's
ITERATIONS="${ITERATIONS:-}"              # default: the config's
OUTPUT_DIR="${OUTPUT_DIR:-results}"
OUTPUT="${OUTPUT:-}"                      # default: $OUTPUT_DIR/<config>.h5 (no time stamp: a rerun continues it)
PYTHON="${PYTHON:-python3}"
MPIEXEC="${MPIEXEC:-mpiexec}"
MPIEXEC_ARGS="${MPIEXEC_ARGS:-}"
RANKS="${RANKS:-}"                        # default: the NUMA nodes (with CPUs) of this machine
TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-1800}"  # mpirunner --timeout per batch size
DRY_RUN="${DRY_RUN:-}"                    # 1: print the commands instead of running them
# Open MPI's launcher gives up on a host it lost within seconds, not minutes (MPICH ignores these; the runner's
# own heartbeat ends the ranks either way: docs/failure-behaviour.md).
export PRTE_MCA_oob_tcp_keepalive_time="${PRTE_MCA_oob_tcp_keepalive_time:-5}"
export PRTE_MCA_oob_tcp_keepalive_intvl="${PRTE_MCA_oob_tcp_keepalive_intvl:-2}"
export PRTE_MCA_oob_tcp_keepalive_probes="${PRTE_MCA_oob_tcp_keepalive_probes:-3}"

numa_nodes_with_cpus() {
    local count=0 node
    for node in /sys/devices/system/node/node[0-9]*; do
        if [[ -r "$node/cpulist" && -n "$(tr -d '[:space:]' < "$node/cpulist")" ]]; then
            count=$((count + 1))
        fi
    done
    echo $((count > 0 ? count : 1))
}

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

if [[ -z "$RANKS" ]]; then
    RANKS=$(numa_nodes_with_cpus)
fi
read -r -a mpiexec_args <<< "$MPIEXEC_ARGS"
NAME="${CONFIG##*/}"
NAME="${NAME%.yaml}"
OUTPUT="${OUTPUT:-$OUTPUT_DIR/$NAME.h5}"

runner_args=(--config "$CONFIG")
if [[ -n "$BATCH_SIZES" ]]; then
    runner_args+=(--batch-size "$BATCH_SIZES")
fi
if [[ -n "$ITERATIONS" ]]; then
    runner_args+=(--iterations "$ITERATIONS")
fi
runner_args+=(--timeout "$TIMEOUT_SECONDS" --no-progress --output "$OUTPUT" --resume)

run mkdir -p "$(dirname "$OUTPUT")"
run "$MPIEXEC" -n "$RANKS" --bind-to none ${mpiexec_args[@]+"${mpiexec_args[@]}"} \
    "$PYTHON" -m mpirunner "${runner_args[@]}" "$@"
