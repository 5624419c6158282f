#!/bin/bash
# Run one command alone on the last CPU: every other task is moved to the other CPUs (cgroup v1 cpuset)
# until the command ends, then all tasks go back and both groups are removed (also on Ctrl-C or a kill).
# Root only. The reservation lasts at most RESERVE_SECONDS (default 1140 s, 19 min).
#
#     sudo benchmarks/on_reserved_core.sh python benchmarks/loadgen_side_by_side.py
set -u
root=/sys/fs/cgroup/cpuset
last=$(( $(nproc --all) - 1 ))

move_all() {  # move_all FROM_TASKS_FILE TO_TASKS_FILE (kernel threads that cannot move are left)
    local task
    while read -r task; do echo "$task" > "$2" 2>/dev/null; done < "$1"
}

restore() {
    local group
    for group in bench others; do
        [ -d "$root/$group" ] || continue
        move_all "$root/$group/tasks" "$root/tasks"
        move_all "$root/$group/tasks" "$root/tasks"
        rmdir "$root/$group" || echo "on_reserved_core: $root/$group could not be removed" >&2
    done
}

[ -d "$root" ] || { echo "on_reserved_core: no cgroup v1 cpuset at $root" >&2; exit 2; }
[ "$last" -ge 1 ] || { echo "on_reserved_core: needs at least 2 CPUs" >&2; exit 2; }
trap restore EXIT
trap 'exit 130' INT TERM
mkdir -p "$root/others" "$root/bench"
for group in others bench; do cat "$root/cpuset.mems" > "$root/$group/cpuset.mems"; done
echo "0-$(( last - 1 ))" > "$root/others/cpuset.cpus"
echo "$last" > "$root/bench/cpuset.cpus"
move_all "$root/tasks" "$root/others/tasks"
move_all "$root/tasks" "$root/others/tasks"
echo $BASHPID > "$root/bench/tasks"
echo "on_reserved_core: CPU $last reserved ($(wc -l < "$root/bench/tasks") task(s) on it, $(wc -l < "$root/others/tasks") on CPUs 0-$(( last - 1 )), $(wc -l < "$root/tasks") left unmoved)" >&2
timeout "${RESERVE_SECONDS:-1140}" "$@"
