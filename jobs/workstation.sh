#!/bin/bash
# One workstation, plain mpiexec: one mpirunner rank per NUMA node (each pins itself in-process),
# a batch-size sweep into one HDF5 file. Flags after the script name go to mpirunner.
#
#   jobs/workstation.sh                                         # resnet50-cpu, batch 1,2,4,8
#   CONFIG=efficientnet-b0-cpu BATCH_SIZES=1..16 RANKS=2 jobs/workstation.sh --strict
#   MPIEXEC_ARGS="--allow-run-as-root" jobs/workstation.sh      # Open MPI as root
#
# The launcher is told not to bind (--bind-to none, understood by MPICH's Hydra and Open MPI):
# Open MPI binds to cores by default, which would hide the rest of the machine from the ranks' plan.

set -euo pipefail

CONFIG="${CONFIG:-resnet50-cpu}"
BATCH_SIZES="${BATCH_SIZES:-1,2,4,8}"
ITERATIONS="${ITERATIONS:-20}"
OUTPUT_DIR="${OUTPUT_DIR:-results}"
PYTHON="${PYTHON:-python3}"
MPIEXEC="${MPIEXEC:-mpiexec}"
MPIEXEC_ARGS="${MPIEXEC_ARGS:-}"
RANKS="${RANKS:-}"  # default: the NUMA nodes (with CPUs) of this machine

numa_nodes_with_cpus() {
    local count=0 node
    for node in /sys/devices/system/node/node[0-9]*; do
        if [[ -r "$node/cpulist" && -n "$(tr -d '[:space:]' < "$node/cpulist")" ]]; then
            count=$((count + 1))
        fi
    done
    echo $((count > 0 ? count : 1))
}

if [[ -z "$RANKS" ]]; then
    RANKS=$(numa_nodes_with_cpus)
fi
read -r -a mpiexec_args <<< "$MPIEXEC_ARGS"
NAME="${CONFIG##*/}"
NAME="${NAME%.yaml}"
mkdir -p "$OUTPUT_DIR"

"$MPIEXEC" -n "$RANKS" --bind-to none ${mpiexec_args[@]+"${mpiexec_args[@]}"} \
    "$PYTHON" -m mpirunner \
    --config "$CONFIG" \
    --batch-size "$BATCH_SIZES" \
    --iterations "$ITERATIONS" \
    --output "$OUTPUT_DIR/$NAME-$(date -u +%Y%m%dT%H%M%SZ).h5" \
    "$@"
